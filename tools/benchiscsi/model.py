# tools/benchiscsi/model.py - what tools/bench-iscsi measures: its tests
# (Test, TESTS: the load tool, request size, depth, floor of each), what one
# run of a test gives (Sample; FIGURES, the figures that have a median), the
# sizes and targets, and log() (stderr).
"""The tests of tools/bench-iscsi and the figures of one run (Sample)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20
TARGETS = ("tgt", "netstore")


@dataclass
class Test:
    key: str
    label: str
    kind: str  # "perf" or "qemu"
    size: int  # bytes per request
    args: list[str]
    floor: float | None = None
    depth: int = 32  # requests in flight (qemu-img bench -d; iscsi-perf's -m is in args)


TESTS = [
    Test("rr4k_qd32", "4K rand read QD32", "perf", 4096, ["-m", "32", "-b", "8", "-r"], 1.5, 32),
    Test("sr128k_qd16", "128K seq read QD16", "perf", 131072, ["-m", "16", "-b", "256"], 0.8, 16),
    Test("rr4k_qd1", "4K rand read QD1 (latency)", "perf", 4096, ["-m", "1", "-b", "8", "-r"],
         None, 1),
    Test("w4k_qd32", "4K write QD32 (qemu-img bench)", "qemu", 4096, ["-s", "4k"], None, 32),
    Test("w4k_qd1", "4K write QD1 (qemu-img bench, latency)", "qemu", 4096, ["-s", "4k"], None, 1),
    Test("w128k_qd32", "128K write QD32 (qemu-img bench)", "qemu", 131072, ["-s", "128k"],
         None, 32),
]

# The figures of a sample that have a median (the order of the JSON's keys).
FIGURES = ("iops", "mbps", "ops", "seconds", "wall_us_per_op", "latency_us", "wall_s",
           "target_cpu_s", "target_cpu_pct", "cpu_us_per_op", "worker_cpu_us_per_op",
           "initiator_cpu_s", "initiator_cpu_us_per_op", "rest_cpu_pct",
           "others_cpu_pct")


@dataclass
class Sample:
    iops: float | None = None
    mbps: float | None = None
    error: str | None = None
    ops: float | None = None  # operations done
    seconds: float | None = None  # the run's length as the load tool reports it
    wall_us_per_op: float | None = None  # seconds * 1e6 / ops
    latency_us: float | None = None  # depth * wall_us_per_op (Little's law; QD1: the latency)
    wall_s: float | None = None  # the load process's lifetime: the CPU window
    target_cpu_s: float | None = None
    target_cpu_pct: float | None = None  # of one core, over the window
    cpu_us_per_op: float | None = None  # the target's processes
    worker_cpu_us_per_op: float | None = None  # netstore's iSCSI worker processes
    roles_us_per_op: dict[str, float] = field(default_factory=dict)  # netstore: serve, worker...
    initiator_cpu_s: float | None = None
    initiator_cpu_us_per_op: float | None = None
    rest_cpu_pct: float | None = None  # the machine's busy CPU but target and initiator, % of a core
    others_cpu_pct: float | None = None  # of that, other user-space processes (not kernel threads)
    others_top: list[str] = field(default_factory=list)  # the busiest of them
    processes: list[dict[str, Any]] = field(default_factory=list)  # pid, role, cpu_s
    gone: list[int] = field(default_factory=list)  # target processes that ended in the window


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)

