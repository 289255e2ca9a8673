# tools/benchkit.py - what tools/bench-isolation, tools/bench-workers,
# tools/bench-iscsi, bench-netem, bench-digests and tests/e2e/test_isolation.py
# share, in one place (`import benchkit as bk`; every name below is bk.NAME).
# This file holds the --json writer, the images (made, cached, dropped from
# the page cache), the loads (qemu-io writes with a flush after each chunk, a
# cold read back, iscsi-perf) and the probe processes' entry point
# (`python3 tools/benchkit.py probe-send|probe-recv ...`); it re-exports the
# rest, which lives in sibling modules: benchkit_children.py (children, each
# in its own session, killed by kill_children()), benchkit_daemon.py (the
# daemon's config, a `netstore serve` subprocess, its ready line),
# benchkit_cpu.py (CPU seconds from /proc, CpuWindow and MachineWindow, each
# netstore process's role) and benchkit_probe.py (the latency probe).
"""Shared pieces of the isolation and worker benchmarks (tools/bench-isolation, bench-workers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # loaded by its path (tests/e2e/test_isolation.py): its parts too
    sys.path.append(_HERE)

# The parts in sibling modules, re-exported: the tools and tests use them as bk.NAME.
from benchkit_children import _children, end, kill_children, sigterm_as_interrupt, spawn  # noqa: E402, F401
from benchkit_cpu import (  # noqa: E402, F401
    CLK_TCK,
    PF_KTHREAD,
    CpuWindow,
    MachineWindow,
    _stat,
    alive,
    all_cpu_seconds,
    busy_seconds,
    cmdline,
    cpu_seconds,
    descendants,
    label,
    netstore_role,
    pgrep_exact,
)
from benchkit_daemon import (  # noqa: E402, F401
    BASE_IQN,
    REPO,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DaemonRefused,
    Netstore,
    Ready,
    config_text,
    initiator_iqn,
    target_iqn,
)
from benchkit_probe import (  # noqa: E402, F401
    ETHERTYPE,
    FLOW_TIMEOUT_S,
    FRAME_BYTES,
    MAGIC,
    PAYLOAD,
    RECEIVER_MAC,
    SENDER_MAC,
    SO_TIMESTAMPNS,
    Probe,
    _stdin_says_stop,
    latency_summary,
    percentile,
    probe_recv,
    probe_send,
)

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 32 * MIB  # write size, and a SYNCHRONIZE CACHE after each

# iscsi-perf's last line: "iops average 21554 (84 MB/s)" (periodic ones alike, \r-separated).
PERF_AVG = re.compile(r"iops average (\d+) \((\d+) MB/s\)")


def write_json(dest: str | None, obj: Any) -> bool:
    """--json FILE of the tools: write obj there; True when it went to stdout ("-")."""
    if dest is None:
        return False
    text = json.dumps(obj, indent=1)
    if dest == "-":
        print(text)
        return True
    Path(dest).write_text(text + "\n")
    return False


# -- images -----------------------------------------------------------------


def make_image(path: Path, size: int, *, fill: bool) -> None:
    """A raw image of `size` bytes: sparse, or (fill) every MiB written with non-zero data."""
    with open(path, "wb") as f:
        f.truncate(size)
        if fill:
            block = os.urandom(MIB)
            for off in range(0, size, MIB):
                f.write(block[: min(MIB, size - off)])
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: Path) -> None:
    """fsync the file and drop its pages from the page cache (only this file's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> None:
    """Read the whole file once, so it is in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


def cached_bytes(path: Path) -> int | None:
    """How much of the file is in the page cache (util-linux fincore), None if unknown."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


# -- the loads --------------------------------------------------------------------------


@dataclass
class LoadResult:
    what: str
    bytes: int = 0
    ios: int = 0
    seconds: float = 0.0
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float | None:
        return self.bytes / self.seconds / 1e6 if self.seconds and self.bytes else None

    @property
    def iops(self) -> float | None:
        return self.ios / self.seconds if self.seconds and self.ios else None

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": self.bytes, "ios": self.ios,
                "seconds": self.seconds, "mb_s": self.mb_s, "iops": self.iops,
                "error": self.error, **self.detail}


def _wait(p: subprocess.Popen[str], timeout: float) -> tuple[str, bool]:
    """Its output, and whether it finished within `timeout` (else it is killed)."""
    try:
        out, _ = p.communicate(timeout=timeout)
        return out or "", True
    except subprocess.TimeoutExpired:
        end(p)
        out, _ = p.communicate()
        return out or "", False


def qemu_io(url: str, commands: list[str], what: str, nbytes: int, timeout: float) -> LoadResult:
    """One qemu-io process running `commands` in order against the iSCSI URL."""
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    t0 = time.monotonic()
    p = spawn([*argv, url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT, text=True)
    out, finished = _wait(p, timeout)
    res = LoadResult(what, nbytes, len(commands), time.monotonic() - t0)
    failed = [ln for ln in out.splitlines() if "failed" in ln.lower() or "error" in ln.lower()
              or "pattern verification" in ln.lower()]
    if not finished:
        res.error = f"qemu-io did not finish within {timeout:.0f} s (killed)"
    elif p.returncode != 0 or failed:
        res.error = f"qemu-io exit {p.returncode}: {' | '.join(failed or out.splitlines())[-300:]}"
    return res


def write_with_sync(url: str, size: int, timeout: float, chunk: int = CHUNK) -> LoadResult:
    """Write `size` bytes of 0xab in `chunk` commands, a flush (SYNCHRONIZE CACHE) after each."""
    cmds: list[str] = []
    for off in range(0, size, chunk):
        cmds += [f"write -P 0xab {off} {min(chunk, size - off)}", "flush"]
    res = qemu_io(url, cmds, f"write {size / GIB:g} GiB, {chunk // MIB} MiB + "
                  "SYNCHRONIZE CACHE each", size, timeout)
    res.ios = len(cmds) // 2
    return res


def read_back(url: str, size: int, timeout: float, chunk: int = CHUNK) -> LoadResult:
    """Read `size` bytes back in `chunk` commands, checking they are all 0xab."""
    cmds = [f"read -P 0xab {off} {min(chunk, size - off)}" for off in range(0, size, chunk)]
    return qemu_io(url, cmds, f"read {size / GIB:g} GiB back cold, {chunk // MIB} MiB",
                   size, timeout)


def iscsi_perf(urls: list[str], seconds: int, *, depth: int = 32, blocks: int = 8,
               random_: bool = True) -> LoadResult:
    """One iscsi-perf per URL at once (initiator names bench-initiator<i>); IOPS summed."""
    args = ["-m", str(depth), "-b", str(blocks), *(["-r"] if random_ else [])]
    procs = [spawn(["iscsi-perf", "-i", initiator_iqn(i), *args, "-t", str(seconds), u],
                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   text=True) for i, u in enumerate(urls)]
    t0 = time.monotonic()
    each: list[float | None] = []
    errors = []
    for p in procs:
        out, finished = _wait(p, max(1.0, seconds + 30 - (time.monotonic() - t0)))
        text = out.replace("\r", "\n")
        m = PERF_AVG.findall(text)
        if not finished or p.returncode != 0 or not m or "finished." not in text:
            each.append(None)
            tail = " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[-200:]
            errors.append(f"iscsi-perf exit {p.returncode}: {tail}")
        else:
            each.append(float(m[-1][0]))
    iops = sum(x for x in each if x)
    size = blocks * 512
    what = (f"{len(urls)} x iscsi-perf QD{depth} {size // 1024} KiB "
            f"{'random' if random_ else 'sequential'} reads")
    return LoadResult(what, int(iops * seconds * size), int(iops * seconds), float(seconds),
                      "; ".join(errors) or None, {"iops_each": each})


# -- the probe processes' entry point -----------------------------------------------------

if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "probe-send":
        probe_send(rest[0], int(rest[1]), int(rest[2]), float(rest[3]))
    elif cmd == "probe-recv":
        probe_recv(rest[0], int(rest[1]), float(rest[2]))
    else:
        sys.exit(f"benchkit: unknown command {cmd!r}")
