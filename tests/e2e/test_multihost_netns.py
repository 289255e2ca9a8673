# tests/e2e/test_multihost_netns.py - two hosts as the issue draws them: two
# `netstore serve` daemons ("host1", "host2"), each in a network namespace of
# its own with a veth pair between them (198.51.100.1, .2), on one PostgreSQL
# registry (its unix socket: namespaces share the file system).
# - their vxlan ports list no remotes: each host's VTEP comes from the shared
#   registry, and the TAP endpoints behind each switch (192.0.2.1, .2) ping;
# - 50 rounds of both daemons asked at once to start the same VM (and, every
#   other round, two VMs sharing one normal disk) give exactly one winner
#   each; the loser's refusal names the winner.
"""Two hosts in namespaces on one shared registry."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from netstore.control import ControlError
from tests.e2e.guest import have_qemu
from tests.harness import run_netstore
from tests.switch.test_vxlan_helpers import daemon_in, netns_usable, network, port_row

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(netns_usable() is not None, reason=netns_usable() or ""),
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

ROUNDS = 50


def host_config(url: str, host: str, local: str, *, tap: str | None = None,
                media: Path | None = None) -> str:
    """A host of the shared registry at `url` whose switch sw0 has a vxlan port
    on `local` listing no remotes (and a TAP port `tap`)."""
    text = f"""
[registry]
url = "{url}"
host = "{host}"
lease = 5
""" + (f'media = "{media}"\n' if media else "") + f"""
[vms]
accel = "tcg"
[[switches]]
name = "sw0"
[[switches.ports]]
name = "vx"
kind = "vxlan"
local = "{local}"
vni = 42
"""
    if tap:
        text += f'[[switches.ports]]\nname = "host"\nkind = "tap"\ndevice = "{tap}"\n'
    return text


def _race(daemons, names: tuple[str, str]) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """Ask both daemons at once to start names[i]; what each said."""
    out: list[tuple[str, object]] = [("", None), ("", None)]
    go = threading.Barrier(2)

    def ask(i: int) -> None:
        go.wait(10)
        try:
            out[i] = ("won", daemons[i].request("vm_start", name=names[i]))
        except ControlError as e:
            out[i] = ("lost", str(e))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_two_namespaced_hosts_share_a_switch_and_one_start_wins(
        tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    url = postgres_server.fresh_url()
    with network("M") as net:
        ns = [net.ns("h1"), net.ns("h2")]
        under = ["198.51.100.1", "198.51.100.2"]
        addr = ["192.0.2.1", "192.0.2.2"]
        net.veth(ns[0], under[0], ns[1], under[1])
        taps = [f"nmh{c}{net.tag}"[:15] for c in "12"]
        with daemon_in(ns[0], tmp_path, "h1", host_config(url, "host1", under[0], tap=taps[0])) as d1, \
                daemon_in(ns[1], tmp_path, "h2", host_config(url, "host2", under[1], tap=taps[1])) as d2:
            # the switches: each vxlan port got the other host's VTEP from the registry
            for n, tap, a in zip(ns, taps, addr, strict=True):
                net.exec(n, "ip", "addr", "add", f"{a}/24", "dev", tap)
                net.exec(n, "ip", "link", "set", tap, "up")
            assert "3 received" in net.ping(ns[0], addr[1], count=3).stdout
            for d, other in ((d1, under[1]), (d2, under[0])):
                assert f"{other}:4789" in port_row(d.show(), "vx")["remotes"]

            def cli(d, *args: str) -> str:  # type: ignore[no-untyped-def]
                p = run_netstore(*args, "--config", str(d.config_path), cwd=d.workdir,
                                 timeout=60)
                assert p.returncode == 0, p.stdout + p.stderr
                return p.stdout

            hosts = json.loads(cli(d1, "host", "list", "--json"))
            assert [(h["name"], h["up"]) for h in hosts] == [("host1", True), ("host2", True)]
            cli(d1, "disk", "create", "shared-disk", "--size", "16M", "--format", "raw")
            for vm in ("web", "web2"):  # one normal disk in two VMs
                cli(d1, "vm", "create", vm, "--memory", "64")
                cli(d1, "vm", "controller", vm, "--add", "scsi0", "--bus", "virtio-scsi")
                cli(d1, "vm", "attach", vm, "--controller", "scsi0", "--port", "0",
                    "--disk", "shared-disk")

            for i in range(ROUNDS):
                names = ("web", "web") if i % 2 == 0 else ("web", "web2")
                said = _race((d1, d2), names)
                winners = [j for j, (what, _) in enumerate(said) if what == "won"]
                assert len(winners) == 1, (i, said)
                w = winners[0]
                loser = said[1 - w][1]
                assert ("running already on host" in loser or "disk shared-disk" in loser), loser
                (d1, d2)[w].request("vm_stop", name=names[w], seconds=0.1, force=True)
