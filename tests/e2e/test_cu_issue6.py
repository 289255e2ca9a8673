"""Issue 6: libiscsi's whole conformance suite (iscsi-test-cu -d
--allow-sanitize, two paths for the multipath tests) on a thin, removable
raw LUN: no failure, and at least
CLEAN_PASS_FLOOR clean passes, so the count cannot fall unnoticed (tgt: 442
passed, 17 failed, 156 skipped; ../shared/design/anchors.md).
"""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import SHARED_TOOLS, need, run

pytestmark = [pytest.mark.peers, pytest.mark.slow]

CU_SCORE = SHARED_TOOLS / "cu-score"
IQN = "iqn.2026-11.org.netstore:cu-thin"
# Measured: 571 passed, 0 failed, 44 skipped on a 256 MiB sparse raw image
# (thin = true, removable = true), two paths.
CLEAN_PASS_FLOOR = 570


def test_whole_suite_on_a_thin_removable_lun(netstore_daemon, record_property, capsys):
    if not CU_SCORE.exists():
        pytest.skip(f"{CU_SCORE} not found")
    need("iscsi-test-cu")
    daemon = netstore_daemon(
        f"""
[iscsi]
[[iscsi.targets]]
iqn = "{IQN}"
luns = [{{ path = "{{media}}/thin.img", thin = true, removable = true }}]
""",
        images={"thin.img": 256 << 20},
    )
    url = daemon.url(IQN)
    out = run([sys.executable, str(CU_SCORE), "--run", url, url, "--json", "--",
               "--allow-sanitize"], timeout=1800)
    assert out.returncode in (0, 1), (
        f"cu-score exit {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    counts = result["counts"]
    failed = [f"{t['suite']}.{t['test']}: {t['reason']}"
              for t in result["tests"] if t["status"] == "failed"]
    record_property("cu_counts", counts)
    with capsys.disabled():
        print(f"\niscsi-test-cu on a thin LUN: {counts['passed']} passed, "
              f"{counts['failed']} failed, {counts['skipped']} skipped")
    assert daemon.running, "the daemon died during the suite"
    assert not failed, "\n".join(failed)
    assert counts["passed"] >= CLEAN_PASS_FLOOR, counts
