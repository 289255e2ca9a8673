# tests/processes/test_supervision.py - `netstore serve` as a supervisor of
# processes, as a user meets it: each target owned by one iSCSI worker, a
# worker killed with SIGKILL costs only its own sessions (replaced at once,
# acknowledged data kept), a killed supervisor leaves no process behind and
# its state directory serves again at once.
"""The supervisor, its iSCSI workers and its switch process under kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from netstore.exports.targets import TargetPlan
from netstore.iscsi.login import TargetEntry
from netstore.processes.acceptor import owners

MiB = 1 << 20
# What "at once" means on a loaded 2-core machine: the issue asks for a new
# worker within a second and a login within 2 s; the test allows slack.
RECOVERY_S = 10.0


def two_targets_on_two_workers() -> tuple[str, str]:
    """Two target names the supervisor gives to different workers (of 2)."""
    names = [f"iqn.2026-12.org.netstore:t{i}" for i in range(16)]
    plans = [TargetPlan(entry=TargetEntry(name=n), luns={}) for n in names]
    owner = owners(plans, 2)
    a = names[0]
    b = next(n for n in names if owner[n] != owner[a])
    return a, b


A, B = two_targets_on_two_workers()
CONFIG = f"""
[iscsi]
workers = 2
[[iscsi.targets]]
iqn = "{A}"
luns = ["a.img"]
[[iscsi.targets]]
iqn = "{B}"
luns = ["b.img"]
[[switches]]
name = "sw0"
[[switches.ports]]
name = "p"
kind = "udp"
local = "127.0.0.1:0"
"""
IMAGES = {"a.img": 16 * MiB, "b.img": 16 * MiB}


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_of(d, target: str) -> dict:
    (w,) = [w for w in d.status()["iscsi"]["workers"] if target in w["targets"]]
    return w


def qemu_io(url: str, *commands: str, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    return subprocess.run([*argv, url], capture_output=True, text=True, timeout=timeout)


def test_each_target_is_served_by_one_worker_and_discovery_names_all(netstore_daemon):
    d = netstore_daemon(CONFIG, images=IMAGES)
    st = d.status()["iscsi"]
    assert len(st["workers"]) == 2
    assert {t for w in st["workers"] for t in w["targets"]} == {A, B}
    assert worker_of(d, A)["pid"] != worker_of(d, B)["pid"]
    for pid in (w["pid"] for w in st["workers"]):
        assert pid in children(d.proc.pid)
    out = subprocess.run(["iscsi-ls", f"iscsi://127.0.0.1:{d.port}"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert A in out.stdout and B in out.stdout


def test_a_killed_worker_costs_only_its_own_sessions(netstore_daemon):
    d = netstore_daemon(CONFIG, images=IMAGES)
    url_a, url_b = d.url(A), d.url(B)
    w = qemu_io(url_a, "write -P 0x5a 0 4M")  # acknowledged, never flushed
    assert w.returncode == 0 and "wrote" in w.stdout, w.stdout + w.stderr
    victim = worker_of(d, A)
    assert victim["pid"] != worker_of(d, B)["pid"]
    # B is read in a loop by one qemu-io process across the kill.
    reads = [f"read -P 0x00 {i % 16}M 1M" for i in range(400)]
    reader = subprocess.Popen(["qemu-io", "-f", "raw", *sum((["-c", c] for c in reads), []),
                               url_b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    time.sleep(0.3)
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + RECOVERY_S
    while True:
        probe = subprocess.run(["iscsi-inq", url_a], capture_output=True, text=True,
                               timeout=30)
        if probe.returncode == 0:
            break
        assert time.monotonic() < deadline, f"no login to {A} after the kill: {probe.stderr}"
        time.sleep(0.1)
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, out
    assert "fail" not in out.lower() and out.count("read ") == len(reads), out[-2000:]
    back = qemu_io(url_a, "read -P 0x5a 0 4M")
    assert back.returncode == 0 and "Pattern verification failed" not in back.stdout, back.stdout
    now = worker_of(d, A)
    assert now["pid"] != victim["pid"] and now["starts"] == 2
    assert "worker" in d.stderr() and "killed by SIGKILL" in d.stderr()


def test_a_killed_switch_process_is_replaced_and_iscsi_goes_on(netstore_daemon):
    d = netstore_daemon(CONFIG, images=IMAGES)
    mark = d.log_mark()
    pid = next(p for p in children(d.proc.pid)
               if "switches" in open(f"/proc/{p}/cmdline").read())
    os.kill(pid, signal.SIGKILL)
    d.wait_log(mark, r"switches: a new process \(pid \d+\) took over", timeout=RECOVERY_S)
    assert [s["name"] for s in d.status()["switches"]] == ["sw0"]
    assert subprocess.run(["iscsi-inq", d.url(B)], capture_output=True,
                          timeout=30).returncode == 0


def test_a_killed_supervisor_leaves_no_process_and_its_state_serves_again(netstore_daemon):
    d = netstore_daemon(CONFIG, images=IMAGES)
    kids = children(d.proc.pid)
    assert len(kids) == 3  # two workers, the switch process
    d.proc.kill()
    d.proc.wait(10)
    deadline = time.monotonic() + 2.0
    while any(alive(k) for k in kids):
        assert time.monotonic() < deadline, "children outlived their supervisor by 2 s"
        time.sleep(0.02)
    again = netstore_daemon(CONFIG, images={}, name="again")
    assert subprocess.run(["iscsi-inq", again.url(A)], capture_output=True,
                          timeout=30).returncode == 0
    with socket.create_connection(("127.0.0.1", again.port), timeout=5):
        pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_stops_every_process(netstore_daemon, signum):
    d = netstore_daemon(CONFIG, images=IMAGES)
    kids = children(d.proc.pid)
    assert d.stop(signum) == 0
    assert not any(alive(k) for k in kids)


def test_a_new_log_level_reaches_the_workers_at_sighup(netstore_daemon):
    quiet = "[daemon]\nlog_level = \"warning\"\n" + CONFIG
    d = netstore_daemon(quiet, images=IMAGES)
    mark = d.log_mark()
    assert subprocess.run(["iscsi-inq", d.url(A)], capture_output=True,
                          timeout=30).returncode == 0
    assert "logged in to" not in d.log_since(mark), "a worker logs at info while at warning"
    d.reload(CONFIG.replace("[iscsi]", "[daemon]\nlog_level = \"info\"\n[iscsi]", 1))
    d.wait_log(mark, r"SIGHUP: configuration reloaded", timeout=RECOVERY_S)
    mark = d.log_mark()
    assert subprocess.run(["iscsi-inq", d.url(A)], capture_output=True,
                          timeout=30).returncode == 0
    d.wait_log(mark, r"netstore\.iscsi\[worker\d\]: session .* logged in to " + A)
