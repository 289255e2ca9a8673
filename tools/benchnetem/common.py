# tools/benchnetem/common.py - what the parts of tools/bench-netem share: the
# test frames (magic, sequence number, send stamps, a filler that is a
# function of the sequence number), the MACs and limits of the sections, the
# statistics (exact binomial intervals, latency percentiles) and the results
# (Check: one figure against its target; Section: a section's checks).
"""Frames, statistics and results shared by the sections of tools/bench-netem."""

from __future__ import annotations

import math
import socket
import statistics
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchkit as bk

ETHERTYPE = b"\x88\xb5"  # IEEE local experimental
MAGIC = b"nsnetem1"
# magic, sequence number, sender's monotonic_ns, sender's time_ns; the same
# sequence number again in the frame's last 8 bytes; a filler between that
# is a function of the sequence number (so a corrupted frame can be compared
# with what was sent, byte by byte).
HEAD = struct.Struct("!8sQQQ")
TAIL = struct.Struct("!Q")
SEQ_AT = 14 + 8
MIN_FRAME = 14 + HEAD.size + TAIL.size
PATTERN = bytes(range(256)) * 80
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)

TX_MAC = bytes.fromhex("020000e00001")
RX_MAC = bytes.fromhex("020000e00002")
LOAD_TX_MAC = bytes.fromhex("020000e00011")
LOAD_RX_MAC = bytes.fromhex("020000e00012")
MAC_A, MAC_B, MAC_C = (bytes.fromhex(f"020000e000a{i}") for i in (1, 2, 3))

Z99 = 2.5758293035489  # two-sided 99 %
EFFECT_MS = 100.0  # a link change takes effect within this of the command returning
TAP_NET = ("nsnA", "nsnB")
TAP_ADDR = {"nsnA": "192.0.2.1", "nsnB": "192.0.2.2"}


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- frames ----------------------------------------------------------------------


def filler(seq: int, n: int) -> bytes:
    off = seq % 256
    return PATTERN[off : off + n]


def make_frame(dst: bytes, src: bytes, seq: int, mono: int, real: int, size: int) -> bytes:
    """The frame number ``seq`` of ``size`` bytes (at least MIN_FRAME)."""
    return (dst + src + ETHERTYPE + HEAD.pack(MAGIC, seq, mono, real)
            + filler(seq, size - MIN_FRAME) + TAIL.pack(seq))


def frame_seq(data: bytes) -> int | None:
    if len(data) < MIN_FRAME or data[14:22] != MAGIC:
        return None
    return struct.unpack_from("!Q", data, SEQ_AT)[0]


def frame_stamps(data: bytes) -> tuple[int, int]:
    _, _, mono, real = HEAD.unpack_from(data, 14)
    return mono, real



# -- statistics --------------------------------------------------------------------


def binom_interval(n: int, p: float, conf: float = 0.99) -> tuple[int, int]:
    """The central ``conf`` interval [lo, hi] of a Binomial(n, p) count (exact)."""
    if p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    lo_k, hi_k = max(0, int(mean - 12 * sd) - 1), min(n, int(mean + 12 * sd) + 2)
    base = math.lgamma(n + 1)
    pmf = [math.exp(base - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * math.log(p) + (n - k) * math.log1p(-p)) for k in range(lo_k, hi_k + 1)]
    tail = (1 - conf) / 2
    acc, lo = 0.0, lo_k
    for i, q in enumerate(pmf):
        acc += q
        if acc > tail:
            lo = lo_k + i
            break
    acc, hi = 0.0, hi_k
    for i, q in enumerate(reversed(pmf)):
        acc += q
        if acc > tail:
            hi = hi_k - i
            break
    return lo, hi


def pct(sorted_values: list[float], q: float) -> float:
    return bk.percentile(sorted_values, q) or 0.0


def lat_stats(lat: list[float]) -> dict[str, float]:
    s = sorted(lat)
    if not s:
        return {"n": 0}
    return {"n": len(s), "mean": statistics.fmean(s), "sd": statistics.pstdev(s),
            "p50": pct(s, 0.5), "p99": pct(s, 0.99), "max": s[-1], "min": s[0]}


# -- results -------------------------------------------------------------------------


@dataclass
class Check:
    """One figure: what was measured, the target, PASS (True), FAIL (False) or info (None)."""

    name: str
    measured: str
    target: str
    ok: bool | None
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "target": self.target,
                "result": verdict(self.ok), "value": self.value}


def verdict(ok: bool | None) -> str:
    return "PASS" if ok is True else "FAIL" if ok is False else "info"


@dataclass
class Section:
    name: str
    title: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    def check(self, name: str, measured: str, target: str, ok: bool | None,
              value: Any = None) -> None:
        self.checks.append(Check(name, measured, target, ok, value))

    def info(self, name: str, measured: str, value: Any = None) -> None:
        self.check(name, measured, "-", None, value)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(c.ok is False for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "seconds": round(self.seconds, 1), "error": self.error,
                "skipped": self.skipped, "failed": self.failed,
                "checks": [c.as_dict() for c in self.checks], "details": self.details}
