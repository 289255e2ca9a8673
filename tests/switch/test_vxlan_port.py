# tests/switch/test_vxlan_port.py - a switch service with a vxlan trunk port
# (VLAN 10 <-> VNI 5010, 20 <-> 5020) and a udp trunk port, on loopback: a
# test socket plays the remote VTEP and another the VM. Malformed packets are
# refused and counted, never crash the port; VNIs become VLANs and back; the
# outer source port is in 49152-65535.
"""The vxlan port in a running switch service, against sockets of the test."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.service import SwitchService
from netstore.switch.vxlan import encode_header
from tests.harness import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the vxlan sender is a raw socket")

VM_MAC, FAR_MAC = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000f")


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3)
    return s


async def recv(s: socket.socket) -> tuple[bytes, tuple[str, int]]:
    return await trio.to_thread.run_sync(s.recvfrom, 65536)


async def test_vxlan_trunk_port_maps_vnis_and_counts_malformed(nursery) -> None:
    vtep, vm = udp_socket(), udp_socket()
    vx_port, vm_port = free_port(udp=True), free_port(udp=True)
    svc = SwitchService(SwitchConfig(name="sw0", ports=[
        SwitchPortConfig(name="vx", kind="vxlan", local=f"127.0.0.1:{vx_port}", vlan=None,
                         trunk=[10, 20], vnis=((10, 5010), (20, 5020)),
                         remotes=(f"127.0.0.1:{vtep.getsockname()[1]}",), path_mtu=1500),
        SwitchPortConfig(name="vm", kind="udp", local=f"127.0.0.1:{vm_port}",
                         remote=f"127.0.0.1:{vm.getsockname()[1]}", vlan=None, trunk=[10, 20]),
    ]))
    try:
        await nursery.start(svc.run)
        to_vx = ("127.0.0.1", vx_port)
        inner = b"\xff" * 6 + FAR_MAC + b"\x08\x06" + bytes(46)
        # malformed: runt, I flag clear, unknown VNI, a tagged inner frame
        for bad in (b"\x08", b"\x00" * 8 + inner, encode_header(7) + inner,
                    encode_header(5010) + inner[:12] + b"\x81\x00\x00\x0a" + inner[12:]):
            vtep.sendto(bad, to_vx)
        # a good broadcast from the far side in VNI 5020 reaches the VM on VLAN 20
        vtep.sendto(encode_header(5020) + inner, to_vx)
        data, _ = await recv(vm)
        assert data == inner[:12] + b"\x81\x00\x00\x14" + inner[12:]
        vx = next(p for p in svc.status()["ports"] if p["name"] == "vx")
        assert vx["drops"] == {"vxlan_runt": 1, "vxlan_flags": 1, "vxlan_vni": 1,
                               "vxlan_tagged": 1}, vx["drops"]
        assert vx["vnis"] == {"10": 5010, "20": 5020} and vx["mtu"] == 1450
        # the VM answers on VLAN 20: known unicast, to the learnt VTEP, VNI 5020, untagged
        reply = FAR_MAC + VM_MAC + b"\x81\x00\x00\x14" + b"\x08\x06" + bytes(46)
        vm.sendto(reply, ("127.0.0.1", vm_port))
        data, (host, sport) = await recv(vtep)
        assert data == encode_header(5020) + FAR_MAC + VM_MAC + b"\x08\x06" + bytes(46)
        assert host == "127.0.0.1" and 49152 <= sport <= 65535
        macs = {m["mac"]: m for m in svc.status()["macs"]}
        assert macs[FAR_MAC.hex(":")]["vtep"] == f"127.0.0.1:{vtep.getsockname()[1]}"
        assert macs[FAR_MAC.hex(":")]["vlan"] == 20
        # a VLAN the port maps to no VNI never reaches it (the switch's trunk check)
        vm.sendto(b"\xff" * 6 + VM_MAC + b"\x81\x00\x00\x1e\x08\x06" + bytes(46),
                  ("127.0.0.1", vm_port))
        # a frame too big for the path: dropped, counted, not sent
        big = b"\xff" * 6 + VM_MAC + struct.pack("!HH", 0x8100, 10) + b"\x08\x00" + bytes(1470)
        vm.sendto(big, ("127.0.0.1", vm_port))
        with trio.fail_after(5):
            while True:
                st = {p["name"]: p for p in svc.status()["ports"]}
                if st["vx"]["drops"].get("tx_oversize") or st["vx"]["drops"].get("path_mtu"):
                    break
                await trio.sleep(0.05)
        vtep.settimeout(0.3)
        with pytest.raises(TimeoutError):
            vtep.recvfrom(65536)
    finally:
        await svc.aclose()
        vtep.close()
        vm.close()
