# tests/switch/test_vxlan_ovs.py - a netstore vxlan port against Open vSwitch's
# userspace datapath (datapath_type=netdev): a private ovsdb-server and
# ovs-vswitchd (their db, sockets, pids and logs in the test's temporary
# directory) run inside a namespace of their own, as OVS's userspace-tunneling
# guide sets it up: br-phy holds the veth to netstore's namespace and the
# underlay address 198.51.100.2, br-int a vxlan port (remote_ip, key) and the
# endpoint address 192.0.2.2 on its internal port. The endpoint pings
# netstore's TAP endpoint 192.0.2.1 through the tunnel, both ways.
"""Interop of the vxlan port kind with Open vSwitch's userspace datapath."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.switch.test_vxlan_helpers import (
    Net,
    daemon_in,
    netns_usable,
    network,
    port_row,
    until,
)

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_missing = [t for t in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
            if shutil.which(t) is None]
pytestmark = [
    pytest.mark.skipif(netns_usable() is not None, reason=netns_usable() or ""),
    pytest.mark.skipif(bool(_missing) or not OVS_SCHEMA.exists(),
                       reason=f"Open vSwitch is not installed ({', '.join(_missing)}); "
                       "tools/test-all installs openvswitch-switch"),
]

VNI = 5010


class Ovs:
    """ovsdb-server + ovs-vswitchd of one test, inside namespace ``ns``."""

    def __init__(self, net: Net, ns: str, rundir: Path) -> None:
        self.net, self.ns, self.dir = net, ns, rundir
        self.db = f"unix:{rundir}/db.sock"
        rundir.mkdir(parents=True, exist_ok=True)
        # every OVS path in the temporary directory, none of the host's
        env = {k: str(rundir) for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR",
                                        "OVS_SYSCONFDIR")}
        self.saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)

    def start(self) -> None:
        d = self.dir
        self.net.exec(self.ns, "ovsdb-tool", "create", f"{d}/conf.db", str(OVS_SCHEMA))
        self.net.exec(self.ns, "ovsdb-server", f"{d}/conf.db", f"--remote=p{self.db}",
                      f"--pidfile={d}/ovsdb-server.pid", "--detach",
                      f"--log-file={d}/ovsdb-server.log")
        self.vsctl("--no-wait", "init")
        self.net.exec(self.ns, "ovs-vswitchd", self.db, f"--pidfile={d}/ovs-vswitchd.pid",
                      "--detach", f"--log-file={d}/ovs-vswitchd.log")

    def vsctl(self, *args: str) -> str:
        return self.net.exec(self.ns, "ovs-vsctl", f"--db={self.db}", "--timeout=20",
                             *args).stdout

    def stop(self) -> None:
        for name in ("ovs-vswitchd", "ovsdb-server"):
            try:
                pid = int((self.dir / f"{name}.pid").read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def log(self) -> str:
        try:
            return (self.dir / "ovs-vswitchd.log").read_text()[-4000:]
        except OSError:
            return ""


def test_ovs_userspace_vxlan_pings_through_netstore(tmp_path: Path) -> None:
    with network("O") as net:
        ns_n, ns_o = net.ns("n"), net.ns("o")
        _, phy = net.veth(ns_n, "198.51.100.1", ns_o, None)
        net.exec(ns_o, "ip", "link", "set", phy, "up")
        tap = f"nvxt{net.tag}"[:15]
        config = f"""
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
        ovs = Ovs(net, ns_o, tmp_path / "ovs")
        try:
            ovs.start()
            ovs.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy",
                      "datapath_type=netdev")
            ovs.vsctl("add-port", "br-phy", phy)
            ovs.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int",
                      "datapath_type=netdev")
            ovs.vsctl("add-port", "br-int", "vx0", "--", "set", "interface", "vx0",
                      "type=vxlan", "options:remote_ip=198.51.100.1", f"options:key={VNI}")
            # the userspace datapath's internal ports are TAP devices in this namespace
            assert until(lambda: net.exec(ns_o, "ip", "link", "show", "br-int",
                                          check=False).returncode == 0, timeout=10), ovs.log()
            net.exec(ns_o, "ip", "addr", "add", "198.51.100.2/24", "dev", "br-phy")
            net.exec(ns_o, "ip", "link", "set", "br-phy", "up")
            net.exec(ns_o, "ip", "addr", "add", "192.0.2.2/24", "dev", "br-int")
            net.exec(ns_o, "ip", "link", "set", "br-int", "up")
            ovs_mac = net.exec(ns_o, "cat", "/sys/class/net/br-int/address").stdout.strip()
            with daemon_in(ns_n, tmp_path, "n", config) as d:
                net.exec(ns_n, "ip", "addr", "add", "192.0.2.1/24", "dev", tap)
                net.exec(ns_n, "ip", "link", "set", tap, "up")
                # OVS resolves the underlay next hop (its tnl/arp) on the first
                # packets: allow a few tries, bounded.
                ok = until(lambda: net.ping(ns_o, "192.0.2.1", count=1,
                                            check=False).returncode == 0, timeout=20, step=0.5)
                assert ok, f"no echo from netstore through OVS; ovs-vswitchd log:\n{ovs.log()}"
                assert "3 received" in net.ping(ns_o, "192.0.2.1", count=3).stdout
                assert "3 received" in net.ping(ns_n, "192.0.2.2", count=3).stdout
                st = d.show()
                row = next(m for m in st["macs"] if m["mac"] == ovs_mac)
                assert row["port"] == "vx" and row["vtep"] == "198.51.100.2:4789"
                vx = port_row(st, "vx")
                assert not any(vx["drops"].get(k) for k in ("vxlan_flags", "vxlan_vni",
                                                           "vxlan_runt")), vx["drops"]
        finally:
            ovs.stop()
