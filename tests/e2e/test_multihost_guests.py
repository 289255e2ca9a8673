# tests/e2e/test_multihost_guests.py - a VM on host1 and a VM on host2 ping
# each other: two `netstore serve` daemons, each in a network namespace of its
# own with a veth between them (198.51.100.1, .2), on one PostgreSQL registry
# with one media directory; switch sw0 on each is joined to the other by a
# vxlan port listing no remotes (the registry's hosts fill them in).  The VMs
# are made and started with host1's CLI only (`vm start b --host host2` asks
# host2's daemon); each test guest boots from its disk over iSCSI from its own
# host, and each host's `switch show --macs` has the other VM's MAC against
# the other host's VTEP.
"""VMs on two hosts, one switch across them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.guest import HeadlessGuest, build_guest, have_qemu
from tests.e2e.test_multihost_netns import host_config
from tests.e2e.test_vm_guests import make_vm
from tests.harness import Cli
from tests.switch.test_vxlan_helpers import daemon_in, netns_usable, network

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(netns_usable() is not None, reason=netns_usable() or ""),
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

UNDERLAY = {"host1": "198.51.100.1", "host2": "198.51.100.2"}


def test_vms_on_two_hosts_ping_through_one_switch(tmp_path: Path, postgres_server,
                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "29000-29999")
    kernel = build_guest()
    url = postgres_server.fresh_url()
    media = tmp_path / "shared-media"
    with network("G") as net:
        ns = {h: net.ns(h[-2:]) for h in UNDERLAY}
        net.veth(ns["host1"], UNDERLAY["host1"], ns["host2"], UNDERLAY["host2"])
        cfg = {h: host_config(url, h, UNDERLAY[h], media=media) for h in UNDERLAY}
        with daemon_in(ns["host1"], tmp_path, "host1", cfg["host1"]) as d1, \
                daemon_in(ns["host2"], tmp_path, "host2", cfg["host2"]) as d2:
            (tmp_path / "cli").mkdir()
            cli = Cli(tmp_path / "cli")  # host1's CLI: its configuration
            cli.config.write_text(d1.config_path.read_text())
            guests = {}
            for vm, ip, host, d in (("a", "192.0.2.1/24", "host1", d1),
                                    ("b", "192.0.2.2/24", "host2", d2)):
                make_vm(cli, vm, ip, kernel)
                started = cli.json("vm", "start", vm, "--host", host)
                assert started["state"] == "running" and started["host"] == host, started
                guests[vm] = HeadlessGuest(d.state_dir, vm)
            try:
                for vm, g in guests.items():
                    g.wait_for(f"netstore-guest: {vm}: ready")
                out = guests["a"].run("ping -c 3 -W 5 192.0.2.2")
                assert out[-1] == "rc=0" and any("3 packets received" in ln for ln in out), out
                out = guests["b"].run("ping -c 3 -W 5 192.0.2.1")
                assert out[-1] == "rc=0", out
                macs = {vm: cli.json("vm", "info", vm)["nics"][0]["mac"] for vm in guests}
                for d, other, there in ((d1, "b", "host2"), (d2, "a", "host1")):
                    row = next(m for m in d.show()["macs"] if m["mac"] == macs[other])
                    assert row["port"] == "vx" and row["vtep"] == f"{UNDERLAY[there]}:4789", row
            finally:
                for g in guests.values():
                    g.close()
                for vm in guests:
                    cli.run("vm", "stop", vm, "--timeout", "1", "--force")
