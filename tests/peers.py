# tests/peers.py - the real peers the tests run against netstore, in one place:
# libiscsi's command-line initiators and conformance suite (through the shared
# cu-score tool), qemu-img and qemu-io; skipping where a tool is missing, every
# run bounded in time; and deterministic test data.
"""Peer tools (libiscsi, qemu-img, qemu-io) for the tests."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO


def _shared_tools() -> Path:
    """../shared/tools next to the checkout (cu-score, anchor-tgt).

    NETSTORE_SHARED_TOOLS names another place. In a git worktree (``.git`` is a
    file naming ``<main>/.git/worktrees/<name>``) it is the one next to the main
    checkout, so that the tests needing it do not skip there.
    """
    if os.environ.get("NETSTORE_SHARED_TOOLS"):
        return Path(os.environ["NETSTORE_SHARED_TOOLS"])
    tools = REPO.parent / "shared" / "tools"
    git = REPO / ".git"
    if not tools.exists() and git.is_file():
        gitdir = Path(git.read_text().partition("gitdir:")[2].strip())
        if gitdir.parent.name == "worktrees" and gitdir.parents[1].name == ".git":
            return gitdir.parents[2].parent / "shared" / "tools"
    return tools


SHARED_TOOLS = _shared_tools()
CU_SCORE = SHARED_TOOLS / "cu-score"

HAVE_QEMU = shutil.which("qemu-img") is not None and shutil.which("qemu-io") is not None
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-img/qemu-io not installed")


def need(*tools: str) -> None:
    """Skip the test when a peer binary is not installed."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (Debian packages libiscsi-bin, qemu-utils, "
                "qemu-block-extra)"
            )


def _text(b: bytes | str | None) -> str:
    return (b or b"").decode(errors="replace") if isinstance(b, bytes | None) else b


def run(argv: list[str], timeout: float = 60.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a peer tool, bounded in time; a hang fails the test with what it printed."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{' '.join(argv)} did not finish within {timeout} s\n"
            f"stdout: {_text(e.stdout)}\nstderr: {_text(e.stderr)}",
            pytrace=False,
        )


def write_pattern(path: Path, size: int, seed: int) -> bytes:
    """Fill ``path`` with ``size`` deterministic pseudo-random bytes; return them."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


# -- qemu-img / qemu-io on image files -------------------------------------------


def qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run qemu-img; fail the test with its output when it fails and ``check``."""
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        pytest.fail(f"qemu-img {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def qemu_io(path: str, *cmds: str, fmt: str | None = None, read_only: bool = False) -> str:
    """Run qemu-io commands on ``path``; fail the test when one fails."""
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
    """``qemu-img check --output=json``; fails the test on corruptions or check errors."""
    p = qemu_img("check", "--output=json", path, check=False)
    # exit 0 clean, 3 leaks only; 1/2 = check failed / corruptions
    if p.returncode not in (0, 3):
        pytest.fail(f"qemu-img check {path} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    info = json.loads(p.stdout)
    assert info.get("corruptions", 0) == 0, info
    assert info.get("check-errors", 0) == 0, info
    return info


def qemu_info_chain(path: str) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain --output=json``, top first."""
    p = qemu_img("info", "--backing-chain", "--output=json", path)
    return json.loads(p.stdout)


def qemu_read_raw(path: str, tmp_dir: str, name: str = "out.raw") -> bytes:
    """The whole virtual disk of ``path`` as qemu-img sees it."""
    out = f"{tmp_dir}/{name}"
    qemu_img("convert", "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()
