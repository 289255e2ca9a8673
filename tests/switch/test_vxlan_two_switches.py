# tests/switch/test_vxlan_two_switches.py - two `netstore serve` daemons, each
# in a namespace of its own with a veth pair between them (198.51.100.1, .2),
# joined by vxlan ports: the TAP endpoints behind each (192.0.2.1, .2) ping
# each other; each daemon's `switch show --macs` shows the other side's MAC
# against the remote VTEP; a frame too big for the underlay is dropped and
# counted, never fragmented.
"""Two netstore switches joined by VXLAN."""

from __future__ import annotations

import pytest

from tests.switch.test_vxlan_helpers import daemon_in, netns_usable, network, port_row, until

pytestmark = pytest.mark.skipif(netns_usable() is not None, reason=netns_usable() or "")


def _config(local: str, remote: str, tap: str) -> str:
    return f"""
[[switches]]
name = "sw0"
[[switches.ports]]
name = "vx"
kind = "vxlan"
local = "{local}"
vni = 42
remotes = ["{remote}"]
[[switches.ports]]
name = "host"
kind = "tap"
device = "{tap}"
"""


def test_two_daemons_over_vxlan(tmp_path) -> None:
    with network("T") as net:
        ns = [net.ns("a"), net.ns("b")]
        under = ["198.51.100.1", "198.51.100.2"]
        addr = ["192.0.2.1", "192.0.2.2"]
        net.veth(ns[0], under[0], ns[1], under[1])
        taps = [f"nvx{c}{net.tag}"[:15] for c in "ab"]
        with daemon_in(ns[0], tmp_path, "a", _config(under[0], under[1], taps[0])) as da, \
                daemon_in(ns[1], tmp_path, "b", _config(under[1], under[0], taps[1])) as db:
            macs = []
            for n, tap, a in zip(ns, taps, addr, strict=True):
                net.exec(n, "ip", "addr", "add", f"{a}/24", "dev", tap)
                net.exec(n, "ip", "link", "set", tap, "up")
                macs.append(net.exec(n, "cat", f"/sys/class/net/{tap}/address").stdout.strip())

            assert "3 received" in net.ping(ns[0], addr[1], count=3).stdout
            assert "3 received" in net.ping(ns[1], addr[0], count=3).stdout

            for d, other_mac, other_vtep in ((da, macs[1], under[1]), (db, macs[0], under[0])):
                st = d.show()
                row = next(m for m in st["macs"] if m["mac"] == other_mac)
                assert row["port"] == "vx" and row["vtep"] == f"{other_vtep}:4789"
                text = d.cli("switch", "show", "sw0", "--macs").stdout
                assert f"vtep {other_vtep}:4789" in text

            # The largest inner packet a 1500-byte underlay carries: 1450 bytes
            # of IPv4 (a 1422-byte ICMP payload), sent with DF along the whole way.
            assert "1 received" in net.ping(ns[0], addr[1], count=1, size=1422).stdout

            def counts():
                a, b = port_row(da.show(), "vx"), port_row(db.show(), "vx")
                return a["drops"], b["rx_bytes"]
            drops0, b_rx0 = counts()
            veth_rx0 = int(net.exec(ns[1], "sh", "-c",
                                    "cat /sys/class/net/vb*/statistics/rx_bytes").stdout)
            # 1452 bytes of IPv4: fits the TAP and the switch's frame MTU check
            # (1450 + 18), but not the underlay once encapsulated: 'path_mtu'
            r = net.ping(ns[0], addr[1], count=1, size=1424, check=False)
            assert r.returncode != 0, r.stdout
            # 1500 bytes of IPv4: above the vxlan port's frame MTU: 'tx_oversize'
            r = net.ping(ns[0], addr[1], count=1, size=1472, check=False)
            assert r.returncode != 0, r.stdout
            drops1, b_rx1 = counts()
            assert drops1.get("path_mtu", 0) == drops0.get("path_mtu", 0) + 1, drops1
            assert drops1.get("tx_oversize", 0) == drops0.get("tx_oversize", 0) + 1, drops1
            # nothing big, not even a fragment, reached the other switch (ARP may have)
            assert b_rx1 - b_rx0 < 1000, (b_rx0, b_rx1)
            veth_rx1 = int(net.exec(ns[1], "sh", "-c",
                                    "cat /sys/class/net/vb*/statistics/rx_bytes").stdout)
            assert veth_rx1 - veth_rx0 < 1000, (veth_rx0, veth_rx1)
            text = da.cli("switch", "show", "sw0", "--ports").stdout
            assert "path_mtu 1" in text and "tx_oversize 1" in text

            # Both still talk afterwards
            assert until(lambda: net.ping(ns[1], addr[0], count=1, check=False).returncode == 0,
                         timeout=10)
