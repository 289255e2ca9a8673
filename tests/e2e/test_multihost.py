# tests/e2e/test_multihost.py - two daemons ("host1", "host2") on one
# PostgreSQL registry (a private server, tests/pg.py), each with a state
# directory of its own, the media in a directory both see ([registry] media):
# - both join and show in `host list`; `vm start --host host2` from host1's CLI
#   is run by host2's daemon (its QEMU, TCG); starting it on host1 too is
#   refused naming host2; host1's CLI pauses, resumes, inspects and stops it
#   (the requests reach host2's daemon through the registry);
# - kill -9 of host2's daemon: its QEMU dies with it; after the lease host1
#   fences host2 (`host list` down, the VM aborted naming why) and may start
#   the VM itself; host2 restarted does not run or abort it.
"""Several netstore hosts on one shared registry."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netstore.control import ControlError
from tests.e2e.guest import have_qemu
from tests.harness import Daemon, Daemons, run_netstore

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

LEASE_S = 2


def config(url: str, host: str) -> str:
    return (f'[daemon]\nstate_dir = "{{state_dir}}"\n'
            f'[registry]\nurl = "{url}"\nhost = "{host}"\nlease = {LEASE_S}\n'
            'media = "{tmp}/shared-media"\n'
            '[vms]\naccel = "tcg"\n')


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def runs(d: Daemon, vm: str) -> int | None:
    """The pid of `vm`'s QEMU if daemon `d` runs it."""
    try:
        return int(d.request("vm_runtime", name=vm)["pid"])
    except ControlError:
        return None


def cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_netstore(*args, "--config", str(d.config_path), cwd=d.workdir, timeout=120)


def ok(d: Daemon, *args: str) -> str:
    p = cli(d, *args)
    assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stdout}{p.stderr}"
    return p.stdout


@pytest.fixture
def hosts(tmp_path: Path, postgres_server) -> Iterator[tuple[Daemons, Daemon, Daemon, str]]:  # type: ignore[no-untyped-def]
    url = postgres_server.fresh_url()
    daemons = Daemons(tmp_path, shared_state=False)
    try:
        d1 = daemons(config(url, "host1"), name="host1")
        d2 = daemons(config(url, "host2"), name="host2")
        yield daemons, d1, d2, url
    finally:
        for d in daemons.started:
            if d.running:
                cli(d, "vm", "stop", "web", "--timeout", "1", "--force")
        daemons.shutdown_all()


def test_two_hosts_place_refuse_fence_and_take_over(hosts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemons, d1, d2, _ = hosts
    import json
    listed = json.loads(ok(d1, "host", "list", "--json"))
    assert [(h["name"], h["up"]) for h in listed] == [("host1", True), ("host2", True)]
    table = ok(d1, "host", "list").splitlines()
    assert table[0].split()[:4] == ["HOST", "STATE", "PORTAL", "VCPUS/CORES"]
    assert [ln.split()[:2] for ln in table[1:]] == [["host1", "up"], ["host2", "up"]]

    shared = tmp_path / "shared"
    shared.mkdir()
    ok(d1, "disk", "create", "webdisk", "--size", "16M", "--format", "raw")
    disk = json.loads(ok(d2, "disk", "info", "webdisk", "--json"))
    assert disk["location"] == str(tmp_path / "shared-media" / "webdisk.img")  # [registry] media
    ok(d1, "vm", "create", "web", "--memory", "64")
    ok(d1, "vm", "controller", "web", "--add", "scsi0", "--bus", "virtio-scsi")
    ok(d1, "vm", "attach", "web", "--controller", "scsi0", "--port", "0", "--disk", "webdisk")

    ok(d1, "vm", "start", "web", "--host", "host2")
    wait_until(lambda: runs(d2, "web") is not None, 60, "host2's daemon runs web")
    assert runs(d1, "web") is None
    p = cli(d1, "vm", "start", "web", "--host", "host1")
    assert p.returncode == 1 and "web is running already on host2" in p.stderr, p.stderr
    p = cli(d2, "vm", "start", "web")
    assert p.returncode == 1 and "running already on host2" in p.stderr, p.stderr

    # host1's CLI drives the VM host2 runs: the requests go through the registry
    info = json.loads(ok(d1, "vm", "info", "web", "--json"))
    assert info["host"] == "host2" and info["runtime"]["pid"] == runs(d2, "web")
    ok(d1, "vm", "pause", "web")
    assert d2.request("vm_runtime", name="web")["status"] == "paused"
    ok(d1, "vm", "resume", "web")
    assert d2.request("vm_runtime", name="web")["status"] == "running"
    ok(d1, "vm", "stop", "web", "--timeout", "1", "--force")
    assert runs(d2, "web") is None
    assert json.loads(ok(d1, "vm", "info", "web", "--json"))["state"] == "poweroff"
    ok(d1, "vm", "start", "web")  # placed: host2 has more free memory than host1? either
    placed = json.loads(ok(d1, "vm", "info", "web", "--json"))["host"]
    assert placed in ("host1", "host2")
    ok(d1, "vm", "stop", "web", "--timeout", "1", "--force")
    ok(d2, "vm", "start", "web", "--host", "host2")
    wait_until(lambda: runs(d2, "web") is not None, 60, "host2's daemon runs web again")

    qemu = runs(d2, "web")
    d2.kill()  # kill -9: no clean leave; its QEMU dies with it (PDEATHSIG)
    wait_until(lambda: not Path(f"/proc/{qemu}").exists(), 10, "host2's QEMU ended")

    def fenced() -> bool:
        info = json.loads(ok(d1, "vm", "info", "web", "--json"))
        return info["state"] == "aborted"
    wait_until(fenced, LEASE_S * 6, "host1 fences host2 and aborts web")
    info = json.loads(ok(d1, "vm", "info", "web", "--json"))
    assert "host host2 stopped renewing its lease" in info["aborted"]
    down = {h["name"]: h["up"] for h in json.loads(ok(d1, "host", "list", "--json"))}
    assert down == {"host1": True, "host2": False}

    ok(d1, "vm", "start", "web", "--host", "host1")
    wait_until(lambda: runs(d1, "web") is not None, 60, "host1 runs web")

    d2.start()  # host2 comes back: a new epoch; web is host1's, left alone
    time.sleep(LEASE_S)
    assert runs(d2, "web") is None
    info = json.loads(ok(d2, "vm", "info", "web", "--json"))
    assert info["state"] == "running" and info["host"] == "host1"
    listed = json.loads(ok(d2, "host", "list", "--json"))
    assert [(h["name"], h["up"], h["vms"]) for h in listed] == [
        ("host1", True, ["web"]), ("host2", True, [])]
    assert listed[1]["epoch"] >= 3  # joined, fenced, joined again
