# tests/tools/test_bench_iscsi.py - tools/bench-iscsi runs end to end on one
# short test against netstore alone (a 64 MiB image, 1 s of 4 KiB random
# reads at QD1 with iscsi-perf) and writes its JSON: the target's CPU per
# operation is measured (positive), the workers' share is part of it, and
# every netstore process is accounted for. The figures themselves are the
# benchmark's to judge (docs/benchmarks.md). It takes about 3 s.
"""tools/bench-iscsi --target netstore --only rr4k_qd1 --seconds 1, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO
from tests.peers import need

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_bench_iscsi_measures_cpu_per_operation(tmp_path: Path) -> None:
    need("iscsi-perf")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "bench-iscsi"), "--target",
                        "netstore", "--seconds", "1", "--only", "rr4k_qd1", "--image-mib", "64",
                        "--port", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["targets"] == ["netstore"] and results["tests"] == ["rr4k_qd1"]
    [row] = results["results"]
    ns = row["netstore"]
    assert ns["error"] is None and ns["iops"] > 0
    assert ns["cpu_us_per_op"] > 0
    assert 0 <= ns["worker_cpu_us_per_op"] <= ns["cpu_us_per_op"] + 1e-9
    assert ns["wall_us_per_op"] == pytest.approx(1e6 / ns["iops"])
    [sample] = ns["samples"]
    roles = {p["role"] for p in sample["processes"]}
    assert {"serve", "worker"} <= roles
    assert sum(p["cpu_s"] for p in sample["processes"]) == pytest.approx(sample["target_cpu_s"],
                                                                         abs=0.01)
