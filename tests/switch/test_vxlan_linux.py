# tests/switch/test_vxlan_linux.py - a netstore vxlan port against the Linux
# kernel's vxlan device: netstore serve runs in one namespace (a vxlan port on
# a veth, a TAP port addressed 192.0.2.1), the Linux VTEP in another (vx0,
# 192.0.2.2); they ping each other through the tunnel, netstore learns the
# Linux device's MAC against its VTEP address and floods to the remote.
"""Interop of the vxlan port kind with a Linux vxlan device."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.switch.test_vxlan_helpers import daemon_in, netns_usable, network, port_row, until

pytestmark = pytest.mark.skipif(netns_usable() is not None, reason=netns_usable() or "")

VNI = 5010
# Records what netstore sends on the underlay (AF_PACKET on the veth, at most
# 40 packets or 15 s): outer source port, DF, UDP checksum, VXLAN flags and VNI.
SNIFF = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((sys.argv[1], 0)); s.settimeout(0.5)
out, end = [], time.monotonic() + 15
while len(out) < 40 and time.monotonic() < end:
    try:
        p, addr = s.recvfrom(65535)
    except OSError:
        continue
    if addr[2] == socket.PACKET_OUTGOING or p[14 + 9] != 17 or p[26:30] != bytes([198, 51, 100, 1]):
        continue
    u = 14 + (p[14] & 15) * 4
    out.append([int.from_bytes(p[u:u+2], "big"), int.from_bytes(p[u+2:u+4], "big"),
                bool(p[20] & 0x40), int.from_bytes(p[u+6:u+8], "big"), p[u+8],
                int.from_bytes(p[u+12:u+15], "big")])
    print(json.dumps(out[-1]), flush=True)
"""


def _config(tap: str) -> str:
    return f"""
[[switches]]
name = "sw0"
[[switches.ports]]
name = "vx"
kind = "vxlan"
local = "198.51.100.1"
vni = {VNI}
remotes = ["198.51.100.2"]
[[switches.ports]]
name = "host"
kind = "tap"
device = "{tap}"
"""


def test_linux_vxlan_device_pings_through_netstore(tmp_path) -> None:
    with network("L") as net:
        ns_n, ns_l = net.ns("n"), net.ns("l")
        net.veth(ns_n, "198.51.100.1", ns_l, "198.51.100.2")
        net.exec(ns_l, "ip", "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "dstport",
                 "4789", "remote", "198.51.100.1", "local", "198.51.100.2")
        net.exec(ns_l, "ip", "addr", "add", "192.0.2.2/24", "dev", "vx0")
        net.exec(ns_l, "ip", "link", "set", "vx0", "up")
        linux_mac = net.exec(ns_l, "cat", "/sys/class/net/vx0/address").stdout.strip()
        veth_l = net.exec(ns_l, "sh", "-c", "ls /sys/class/net | grep ^vb").stdout.strip()
        sniffer = subprocess.Popen(["ip", "netns", "exec", ns_l, sys.executable, "-c", SNIFF,
                                    veth_l], stdout=subprocess.PIPE, text=True)
        try:
            _run(net, ns_n, ns_l, tmp_path, linux_mac)
        finally:
            if sniffer.poll() is None:
                sniffer.terminate()
            out = sniffer.communicate(timeout=10)[0]
        sent = [json.loads(line) for line in out.splitlines()]
        assert sent, "nothing sniffed from netstore"
        for sport, dport, df, csum, flags, vni in sent:
            assert 49152 <= sport <= 65535 and dport == 4789
            assert df and csum == 0 and flags == 0x08 and vni == VNI


def _run(net, ns_n: str, ns_l: str, tmp_path, linux_mac: str) -> None:
    """Pings both ways, then checks learning, the kernel's FDB and flooding."""
    tap = f"nvxt{net.tag}"[:15]
    with daemon_in(ns_n, tmp_path, "n", _config(tap)) as d:
        net.exec(ns_n, "ip", "addr", "add", "192.0.2.1/24", "dev", tap)
        net.exec(ns_n, "ip", "link", "set", tap, "up")
        tap_mac = net.exec(ns_n, "cat", f"/sys/class/net/{tap}/address").stdout.strip()

        # netstore's side asks first: its ARP broadcast is flooded to the remote
        r = net.ping(ns_n, "192.0.2.2", count=3)
        assert "3 received" in r.stdout
        # and the Linux side reaches the TAP endpoint through the tunnel
        r = net.ping(ns_l, "192.0.2.1", count=3)
        assert "3 received" in r.stdout

        st = d.show()
        macs = {m["mac"]: m for m in st["macs"]}
        assert macs[linux_mac]["port"] == "vx"
        assert macs[linux_mac]["vtep"] == "198.51.100.2:4789"
        assert macs[tap_mac]["port"] == "host" and "vtep" not in macs[tap_mac]
        vx = port_row(st, "vx")
        assert vx["kind"] == "vxlan" and vx["link"] == "up"
        assert vx["mtu"] == 1450 and vx["path_mtu"] == 1500
        assert vx["tx_frames"] >= 4 and vx["rx_frames"] >= 4
        assert vx["sender"] == "raw"

        # The kernel learnt netstore's TAP MAC behind netstore's VTEP address
        fdb = net.exec(ns_l, "bridge", "fdb", "show", "dev", "vx0").stdout
        assert re.search(rf"{tap_mac} dst 198\.51\.100\.1", fdb), fdb

        # The human form names the VTEP against the MAC
        text = d.cli("switch", "show", "sw0", "--macs")
        assert text.returncode == 0, text.stderr
        assert "vtep 198.51.100.2:4789" in text.stdout

        # Unknown unicast is flooded to the remote: a frame to a MAC nobody
        # has learnt still reaches the Linux side (its rx counter moves).
        def rx() -> int:
            out = net.exec(ns_l, "cat", "/sys/class/net/vx0/statistics/rx_packets").stdout
            return int(out)
        before = rx()
        net.exec(ns_n, "ip", "neigh", "replace", "192.0.2.9", "lladdr",
                 "02:00:00:00:09:09", "dev", tap)
        net.ping(ns_n, "192.0.2.9", count=1, check=False)
        assert until(lambda: rx() > before, timeout=5)
