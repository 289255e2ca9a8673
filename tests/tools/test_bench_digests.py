# tests/tools/test_bench_digests.py - tools/bench-digests runs end to end: the
# in-process section logs in with CRC32C header and data digests and without,
# checks every answer's digests, refuses to report if any command left the
# fast path, and writes both figures; the wire section drives a real daemon
# with qemu-img (libiscsi, header-digest=crc32c). The figures themselves are
# the benchmark's to judge (docs/benchmarks.md). About 5 s.
"""tools/bench-digests, short runs of both sections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO
from tests.peers import need

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "digests.json"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "bench-digests"), "--rounds", "1",
                        *args, "--json", str(out)],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())


def test_core_section_keeps_the_fast_path_with_digests(tmp_path: Path) -> None:
    result = _run(tmp_path, "--only", "core", "--core-batches", "20")
    ratios = result["core"]["ratios"]
    for kind in ("read", "write"):
        assert ratios[kind]["none"] > 0 and ratios[kind]["crc32c"] > 0
        assert ratios[kind]["ratio"] == pytest.approx(
            ratios[kind]["crc32c"] / ratios[kind]["none"])


def test_wire_section_measures_header_digests_through_libiscsi(tmp_path: Path) -> None:
    need("qemu-img")
    result = _run(tmp_path, "--only", "wire", "--count", "20000")  # >= a few clock ticks of CPU
    med = result["wire"]["medians"]
    for key in ("read none", "read crc32c", "write none", "write crc32c"):
        assert med[key] > 0
        assert med[f"{key} cpu"] > 0
