# tools/benchiscsi/runs.py - the runs of tools/bench-iscsi: a load process
# (iscsi-perf or qemu-img bench, its own session, killed when it overruns)
# with the target's CPU window and the machine's over its lifetime and its own
# CPU from wait4; its output parsed into a Sample; waiting for a quiet machine
# (--quiet) before a run.
"""Run one test against one target: iscsi-perf or qemu-img bench, with CPU windows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import Any

import benchkit as bk

from benchiscsi.figures import _account
from benchiscsi.model import Sample, Test, log
from benchiscsi.targets import Meter

# iscsi-perf ends with a line such as "iops average 21554 (84 MB/s)"; its
# periodic lines contain "iops average N (M MB/s)" too, separated by \r.
PERF_AVG = re.compile(r"iops average (\d+) \((\d+) MB/s\)")
QEMU_BENCH = re.compile(r"Run completed in ([0-9.]+) seconds")


def _run_load(argv: list[str], timeout: float, meter: Meter | None
              ) -> tuple[str, int | None, bool, float, dict[str, Any] | None, float]:
    """Run a load process (its own session) for at most `timeout` seconds.

    Returns its output, exit status (None if it had to be killed), whether it
    finished in time, its wall-clock lifetime, the target's CPU window over
    that lifetime (meter) and the process's own CPU seconds (from wait4)."""
    if meter is not None:
        meter.window.start()
    machine = bk.MachineWindow()
    machine.start()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    waited: list[tuple[int, int, Any]] = []
    waiter = threading.Thread(target=lambda: waited.append(os.wait4(p.pid, 0)), daemon=True)
    waiter.start()
    finished = True
    try:
        waiter.join(timeout)
        if waiter.is_alive():
            finished = False
            os.killpg(p.pid, signal.SIGKILL)
            waiter.join(5.0)
    except BaseException:  # Ctrl-C: the load goes first
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        waiter.join(5.0)
        raise
    wall = time.monotonic() - t0
    window = meter.window.stop() if meter is not None else None
    if window is not None:
        ours = {os.getpid(), p.pid, *window["per_pid"], *window["gone"]}
        window["machine"] = machine.stop(ours)
    reader.join(5.0)
    rc: int | None = None
    own_cpu = 0.0
    if waited:
        _, status, ru = waited[0]
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc  # reaped here; Popen must not wait for it again
        own_cpu = ru.ru_utime + ru.ru_stime
    if p.stdout is not None:
        p.stdout.close()
    text = (out[0] if out else b"").decode(errors="replace")
    return text, (rc if finished else None), finished, wall, window, own_cpu



def wait_quiet(pct: float, max_wait: float, meters: dict[str, Meter]) -> None:
    """Wait (at most max_wait s) until, over 1 s, the machine's busy CPU less our own
    processes' (the idle targets, this tool) is below pct % of one core."""
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        ours = {os.getpid(), *(p for m in meters.values() for p in m.pids())}
        w = bk.MachineWindow()
        w.start()
        time.sleep(1.0)
        got = w.stop(ours)
        rest = 100.0 * max(0.0, got["busy_s"] - got["excluded_s"]) / got["seconds"]
        if rest < pct:
            if said:
                log(f"    quiet now ({rest:.0f} %)")
            return
        if time.monotonic() > deadline:
            log(f"    still busy after {max_wait:.0f} s ({rest:.0f} %): running anyway")
            return
        if not said:
            top = "; ".join(f"{lbl} ({100 * c / got['seconds']:.0f} %)"
                            for _p, lbl, c in got["others"][:2])
            log(f"    waiting for a quiet machine: {rest:.0f} % of a core busy ({top})")
            said = True
        time.sleep(2.0)


def _tail(text: str) -> str:
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[-300:]


def run_perf(test: Test, url: str, seconds: int, meter: Meter | None = None) -> Sample:
    argv = ["iscsi-perf", *test.args, "-t", str(seconds), url]
    text, rc, finished, wall, window, own = _run_load(argv, seconds + 30, meter)
    if not finished:
        return Sample(error=f"iscsi-perf hung (> {seconds + 30} s)")
    text = text.replace("\r", "\n")
    matches = PERF_AVG.findall(text)
    if rc != 0 or not matches or "finished." not in text:
        return Sample(error=f"iscsi-perf exit {rc}: {_tail(text)}")
    iops = float(matches[-1][0])  # the summary line is the last one
    if iops <= 0:
        return Sample(error=f"iscsi-perf did no I/O: {_tail(text)}")
    smp = Sample(iops=iops, mbps=iops * test.size / 1e6, ops=iops * seconds, seconds=seconds)
    return _account(smp, test, window, own, wall, meter)


def run_qemu_bench(test: Test, url: str, count: int, timeout: float,
                   meter: Meter | None = None) -> Sample:
    argv = [
        "qemu-img",
        "bench",
        "-w",
        "-d",
        str(test.depth),
        "-c",
        str(count),
        *test.args,
        "-t",
        "none",
        "--pattern=0xa5",
        "-f",
        "raw",
        url,
    ]
    text, rc, finished, wall, window, own = _run_load(argv, timeout, meter)
    if not finished:
        return Sample(error=f"qemu-img bench hung (> {timeout:.0f} s)")
    m = QEMU_BENCH.search(text)
    if rc != 0 or not m:
        return Sample(error=f"qemu-img bench exit {rc}: {_tail(text)}")
    secs = float(m.group(1)) or wall
    iops = count / secs
    smp = Sample(iops=iops, mbps=iops * test.size / 1e6, ops=float(count), seconds=secs)
    return _account(smp, test, window, own, wall, meter)

