# tests/disk/conftest.py - helpers for the disk format tests: running the real
# qemu-img / qemu-io as peers (skipped where they are not installed).
"""Fixtures and qemu helpers for tests/disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

HAVE_QEMU = shutil.which("qemu-img") is not None and shutil.which("qemu-io") is not None
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-img/qemu-io not installed")


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run qemu-img; fail the test with its output when it fails and `check`."""
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        pytest.fail(f"qemu-img {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def qemu_io(path: str, *cmds: str, fmt: str | None = None, read_only: bool = False) -> str:
    """Run qemu-io commands on `path`; fail the test when one fails."""
    argv = ["qemu-io"]
    if fmt:
        argv += ["-f", fmt]
    if read_only:
        argv.append("-r")
    for c in cmds:
        argv += ["-c", c]
    argv.append(path)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    if p.returncode != 0 or "failed" in out.lower() or "error" in out.lower():
        pytest.fail(f"qemu-io {cmds} on {path} failed:\n{out}")
    return out


def qemu_check(path: str) -> dict[str, Any]:
    """`qemu-img check --output=json`; fails the test on corruptions or check errors."""
    p = qemu_img("check", "--output=json", path, check=False)
    # exit 0 clean, 3 leaks only; 1/2 = check failed / corruptions
    if p.returncode not in (0, 3):
        pytest.fail(f"qemu-img check {path} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    info = json.loads(p.stdout)
    assert info.get("corruptions", 0) == 0, info
    assert info.get("check-errors", 0) == 0, info
    return info


def qemu_info_chain(path: str) -> list[dict[str, Any]]:
    """`qemu-img info --backing-chain --output=json`, top first."""
    p = qemu_img("info", "--backing-chain", "--output=json", path)
    return json.loads(p.stdout)


def qemu_read_raw(path: str, tmp_dir: str, name: str = "out.raw") -> bytes:
    """The whole virtual disk of `path` as qemu-img sees it."""
    out = f"{tmp_dir}/{name}"
    qemu_img("convert", "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()
