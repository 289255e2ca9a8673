# tests/tools/test_bench_netem.py - tools/bench-netem runs end to end: its
# loss section, reduced (--quick), against a real daemon of this tree, exits 0
# and writes its figures as JSON. The switch is seeded, so the link's
# decisions are the same every run; the frames are paced gently, so a loaded
# machine does not lose any before the link. The figures themselves are the
# benchmark's to judge (docs/benchmarks.md); the bounds here are loose.
"""tools/bench-netem --only loss --quick, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.slow


def test_bench_netem_loss_quick_passes_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "netem.json"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "bench-netem"), "--only", "loss",
                        "--quick", "--seed", "7", "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results["sections"]) == ["loss"] and results["failed"] == []
    checks = {c["name"]: c for c in results["sections"]["loss"]["checks"]}
    loss = checks["random loss 10%"]
    assert loss["result"] == "PASS"
    assert loss["value"]["n"] == 5000 and 0.05 < loss["value"]["fraction"] < 0.15
    burst = checks["gemodel p 2% r 25%: mean burst of lost frames"]
    assert 2 < burst["value"]["mean"] < 8
