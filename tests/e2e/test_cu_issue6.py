"""Issue 6: libiscsi's whole conformance suite (iscsi-test-cu -d
--allow-sanitize, two paths for the multipath tests) on four LUNs of one
daemon, run side by side: a thin removable raw LUN, a fixed (fully
provisioned) raw LUN, a dynamic qcow2 LUN served thin (two paths each), and
a dvd LUN on an ISO image (one path). No failure on the disks, and at least a floor of clean passes on
each, so the counts cannot fall unnoticed (tgt: 442 passed, 17 failed, 156
skipped; ../shared/design/anchors.md). On the dvd LUN failures are allowed
only in the suites that do not apply to a read-only CD/DVD device
(DVD_NOT_APPLICABLE).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.peers import CU_SCORE, need, run

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PREFIX = "iqn.2026-11.org.netstore:cu-"

# Measured, 256 MiB images, the four side by side (3 min 52 s): thin raw
# 587 passed, 0 failed, 28 skipped; fixed raw 550/0/65; qcow2 587/0/28 (two
# paths each); dvd 236 passed, 79 failed, 300 skipped, every failure in
# DVD_NOT_APPLICABLE (one path).
FLOORS = {"thin": 585, "fixed": 545, "qcow2": 585, "dvd": 230}

# Suites that do not apply to a read-only CD/DVD (MMC) logical unit: they
# write test data (WRITE 10/12, WRITE AND VERIFY, the persistent reservation
# access tests that write through each reservation type) or exercise
# SBC-only commands a CD-ROM drive does not have (EXTENDED COPY, RECEIVE COPY
# RESULTS, SANITIZE). libiscsi 1.19 runs them even on a non-SBC device.
DVD_NOT_APPLICABLE = {
    "ExtendedCopy", "ReceiveCopyResults", "Sanitize", "ProutReserve", "Write10", "Write12",
    "WriteVerify10", "WriteVerify12", "WriteVerify16",
}


def _make_iso(path) -> None:
    src = path.parent / "iso-src"
    src.mkdir()
    (src / "data.bin").write_bytes(bytes(range(256)) * 8192)
    (src / "README").write_text("netstore dvd LUN\n")
    subprocess.run(["genisoimage", "-quiet", "-V", "NETSTORE", "-J", "-R", "-o", str(path),
                    str(src)], check=True, timeout=60)


def _score(url: str, paths: int) -> dict:
    out = run([sys.executable, str(CU_SCORE), "--run", *[url] * paths, "--json", "--",
               "--allow-sanitize"], timeout=1800)
    assert out.returncode in (0, 1), (
        f"cu-score exit {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def test_whole_suite_on_four_luns(netstore_daemon, tmp_path, record_property, capsys):
    if not CU_SCORE.exists():
        pytest.skip(f"{CU_SCORE} not found")
    need("iscsi-test-cu")
    need("qemu-img")
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage not installed (tools/test-all installs it)")
    media = tmp_path / "netstore-state" / "media"
    media.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(media / "thin.qcow2"),
                    str(256 << 20)], check=True, timeout=60)
    with open(media / "fixed.img", "wb") as f:  # fully allocated
        chunk = bytes(1 << 20)
        for _ in range(256):
            f.write(chunk)
    _make_iso(media / "disc.iso")
    daemon = netstore_daemon(
        f"""
[iscsi]
[[iscsi.targets]]
iqn = "{PREFIX}thin"
luns = [{{ path = "{{media}}/thin.img", thin = true, removable = true }}]
[[iscsi.targets]]
iqn = "{PREFIX}fixed"
luns = [{{ path = "{{media}}/fixed.img", thin = false, removable = true }}]
[[iscsi.targets]]
iqn = "{PREFIX}qcow2"
luns = [{{ path = "{{media}}/thin.qcow2", thin = true, removable = true }}]
[[iscsi.targets]]
iqn = "{PREFIX}dvd"
luns = [{{ path = "{{media}}/disc.iso", kind = "dvd" }}]
""",
        images={"thin.img": 256 << 20},
    )
    names = list(FLOORS)
    with ThreadPoolExecutor(len(names)) as pool:
        # The dvd LUN runs on one path: the multipath tests want SBC devices.
        scores = pool.map(lambda n: _score(daemon.url(PREFIX + n), 1 if n == "dvd" else 2), names)
        results = dict(zip(names, scores, strict=True))
    problems = []
    for name, result in results.items():
        counts = result["counts"]
        record_property(f"cu_counts_{name}", counts)
        with capsys.disabled():
            print(f"\niscsi-test-cu on the {name} LUN: {counts['passed']} passed, "
                  f"{counts['failed']} failed, {counts['skipped']} skipped")
        failed = [t for t in result["tests"] if t["status"] == "failed"]
        if name == "dvd":
            failed = [t for t in failed if t["suite"] not in DVD_NOT_APPLICABLE]
        problems += [f"{name}: {t['suite']}.{t['test']}: {t['reason']}" for t in failed]
        if counts["passed"] < FLOORS[name]:
            problems.append(f"{name}: {counts} below the floor of {FLOORS[name]} passes")
    assert daemon.running, "the daemon died during the suite"
    assert not problems, "\n".join(problems)
