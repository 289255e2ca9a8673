# tools/benchkit_cpu.py - CPU seconds of processes from /proc (part of
# benchkit, which re-exports all of it): a process's descendants, command line
# and role in a `netstore serve` tree (from its command line), the machine's
# busy time, and the windows over a run: CpuWindow (a changing set of
# processes) and MachineWindow (everything else the machine did).
"""CPU time of processes and of the machine over a benchmark's run, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def descendants(pid: int) -> list[int]:
    """Every live process whose parent chain leads to pid."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            parent[int(d)] = int(st[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found.extend(sorted(kids))
        frontier = kids
    return found


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (its threads included), None once it is gone."""
    st = _stat(pid)
    return None if st is None else (int(st[11]) + int(st[12])) / CLK_TCK


def label(pid: int, width: int = 70) -> str:
    """The process's command line, shortened to `width`."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if args and args[0] == sys.executable:
        args[0] = "python3"
    text = " ".join(Path(a).name if a.startswith("/") else a for a in args)  # paths: names
    return text if len(text) <= width else text[: width - 1] + "…"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def netstore_role(pid: int, serve_pid: int | None = None) -> str:
    """What a process of a `netstore serve` tree is: "serve" (the supervisor, which
    also accepts the iSCSI connections), "worker" (`python -m netstore.processes
    iscsi ... workerN`), "switch" (`... netstore.processes switches ...`) or "other"."""
    if pid == serve_pid:
        return "serve"
    args = cmdline(pid) or []
    if "netstore.processes" in args:
        kind = args[args.index("netstore.processes") + 1:][:1]
        if kind == ["iscsi"]:
            return "worker"
        if kind == ["switches"]:
            return "switch"
    if serve_pid is None and "serve" in args and any("netstore" in a for a in args):
        return "serve"
    return "other"


def pgrep_exact(name: str) -> list[int]:
    """Live processes whose name (comm) is exactly `name`, as `pgrep -x name` finds them."""
    try:
        out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, timeout=10)
        pids = [int(w) for w in out.stdout.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pids = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and Path(f"/proc/{d}/comm").read_text().strip() == name[:15]:
                    pids.append(int(d))
            except OSError:
                pass
    return sorted(p for p in pids if alive(p))


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores (/proc/stat: user,
    nice, system, irq, softirq, steal; not idle or iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


PF_KTHREAD = 0x00200000  # /proc/PID/stat flags: a kernel thread


def all_cpu_seconds() -> dict[int, tuple[float, bool]]:
    """Every process now: pid -> (utime + stime in seconds, whether it is a kernel thread)."""
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            found[int(d)] = ((int(st[11]) + int(st[12])) / CLK_TCK, bool(int(st[6]) & PF_KTHREAD))
    return found


class MachineWindow:
    """What the rest of the machine did between start() and stop(exclude): the busy CPU
    of all cores (/proc/stat) and the user-space processes outside `exclude` (by
    pid, with their command lines), to tell a quiet run from a disturbed one.
    Processes that start and end inside the window show in `busy_s` only."""

    def start(self) -> None:
        self.before = all_cpu_seconds()
        self.busy0 = busy_seconds()
        self.t0 = time.monotonic()

    def stop(self, exclude: set[int]) -> dict[str, Any]:
        """{"seconds", "busy_s", "excluded_s", "others_s", "others": [(pid, label, cpu_s)]}"""
        seconds = time.monotonic() - self.t0
        busy = busy_seconds() - self.busy0
        now = all_cpu_seconds()
        excluded = 0.0
        others = []
        for pid, (cpu, kthread) in now.items():
            delta = cpu - self.before.get(pid, (0.0, kthread))[0]
            if pid in exclude:
                excluded += delta
            elif not kthread and delta > 0:
                others.append((pid, label(pid, 60), delta))
        others.sort(key=lambda o: -o[2])
        return {"seconds": seconds, "busy_s": busy, "excluded_s": excluded,
                "others_s": sum(o[2] for o in others), "others": others}


class CpuWindow:
    """CPU seconds (utime + stime from /proc/PID/stat, threads included) that a set of
    processes used between start() and stop().

    `pids` is asked for the set at start() and again at stop(): a process that
    appeared in between is counted from zero (all its time is in the window); one
    that ended in between is listed in `gone` and its time since start() is lost
    (/proc has nothing left of it). Resolution is one clock tick (1/CLK_TCK s)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.before: dict[int, float] = {}
        self.t0 = 0.0

    def start(self) -> None:
        pids = self._pids()
        self.before = {p: c for p in pids if (c := cpu_seconds(p)) is not None}
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """{"seconds": window, "cpu_s": total, "per_pid": {pid: cpu_s}, "gone": [pid...]}"""
        seconds = time.monotonic() - self.t0
        per_pid: dict[int, float] = {}
        gone = []
        for p, c0 in self.before.items():
            c1 = cpu_seconds(p)  # a zombie still tells its times
            if c1 is not None:
                per_pid[p] = c1 - c0
            if c1 is None or not alive(p):
                gone.append(p)
        for p in self._pids():
            if p not in self.before and (c := cpu_seconds(p)) is not None:
                per_pid[p] = c
        return {"seconds": seconds, "cpu_s": sum(per_pid.values()), "per_pid": per_pid,
                "gone": gone}
