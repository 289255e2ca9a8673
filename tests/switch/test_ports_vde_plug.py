# tests/switch/test_ports_vde_plug.py - the real VDE client: vde_plug (vdeplug4)
# joins netstore's VDE directory and bridges it to a UDP socket of the test
# (`vde_plug vde://DIR udp://"LPORT->127.0.0.1:TPORT"`), so frames cross a real
# libvdeplug request_v3 and data socket both ways.
"""vde_plug against a switch service's vde port."""

from __future__ import annotations

import shutil
import socket

import pytest
import trio
from scapy.layers.inet import ICMP, IP, Ether
from scapy.layers.l2 import ARP

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.service import SwitchService

pytestmark = pytest.mark.skipif(shutil.which("vde_plug") is None, reason="vde_plug missing")
MAC_U, MAC_V = "02:00:00:00:01:01", "02:00:00:00:01:02"


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_vde_plug_joins_and_frames_cross(nursery, tmp_path) -> None:
    vde = str(tmp_path / "vde")
    svc = SwitchService(SwitchConfig(name="sw0", ports=[
        SwitchPortConfig(name="u", kind="udp", local="127.0.0.1:0"),
        SwitchPortConfig(name="v", kind="vde", path=vde)]))
    listening = {n: a for n, _k, a in await nursery.start(svc.run)}
    uh, up = listening["u"].rsplit(":", 1)
    u = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await u.bind(("127.0.0.1", 0))
    far = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # vde_plug's other end
    await far.bind(("127.0.0.1", 0))
    plug_port = free_udp()
    proc = await nursery.start(lambda task_status: trio.run_process(
        ["vde_plug", f"vde://{vde}", f"udp://{plug_port}->127.0.0.1:{far.getsockname()[1]}"],
        check=False, task_status=task_status))
    try:
        with trio.fail_after(10):
            while "v.1" not in svc.ports or not svc.ports["v.1"].link_up:
                await trio.sleep(0.02)
        hello_v = bytes(Ether(src=MAC_V, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=MAC_V))
        await far.sendto(hello_v, ("127.0.0.1", plug_port))
        await u.sendto(bytes(Ether(src=MAC_U, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=MAC_U)),
                       (uh, int(up)))
        with trio.fail_after(10):
            while not svc.ports["u"].link_up:
                await trio.sleep(0.02)
        echo = bytes(Ether(src=MAC_V, dst=MAC_U) / IP(dst="10.0.0.1") / ICMP(seq=5))
        await far.sendto(echo, ("127.0.0.1", plug_port))
        with trio.fail_after(10):
            got = await u.recv(70000)
            while got != echo:
                got = await u.recv(70000)
        reply = bytes(Ether(src=MAC_U, dst=MAC_V) / IP(dst="10.0.0.2") / ICMP(type=0, seq=5))
        await u.sendto(reply, (uh, int(up)))
        with trio.fail_after(10):
            got = await far.recv(70000)
            while got != reply:
                got = await far.recv(70000)
        macs = {m["mac"]: m["port"] for m in svc.status()["macs"]}
        assert macs[MAC_V] == "v.1" and macs[MAC_U] == "u"
    finally:
        proc.terminate()
    with trio.fail_after(10):
        while "v.1" in svc.ports:
            await trio.sleep(0.02)
