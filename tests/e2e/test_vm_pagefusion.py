# tests/e2e/test_vm_pagefusion.py - page fusion made real: two identical test
# guests with `--pagefusion on` run with mem-merge=on, the daemon turns the
# host's KSM on while they run, and KSM shares their pages: `host report`
# shows pages_sharing above zero and `vm metrics` a share of each VM; when
# both are off, KSM is back as it was.
"""Two identical guests with page fusion share pages through KSM."""

from __future__ import annotations

import time

import pytest

from netstore.vm.ksm import KSM_DIR, ksm_figures
from tests.e2e.guest import HeadlessGuest, build_guest, have_qemu
from tests.e2e.test_vm_guests import TCG, cli_for, make_vm

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
    pytest.mark.skipif(not (KSM_DIR / "run").exists(), reason="this kernel has no KSM"),
]
SHARE_TIMEOUT_S = 120.0


def test_identical_guests_with_page_fusion_share_pages(netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    kernel = build_guest()
    before = ksm_figures()["run"]
    daemon = netstore_daemon(TCG)
    cli = cli_for(tmp_path, daemon)
    names = ("twin1", "twin2")
    for i, vm in enumerate(names):
        make_vm(cli, vm, f"192.0.2.{i + 1}/24", kernel)
        cli.ok("vm", "modify", vm, "--pagefusion", "on")
        cli.ok("vm", "start", vm)
    for vm in names:
        HeadlessGuest(daemon.state_dir, vm).wait_for(f"netstore-guest: {vm}: ready")
    assert ksm_figures()["run"] == 1
    deadline = time.monotonic() + SHARE_TIMEOUT_S
    while True:
        report = cli.json("host", "report")
        shared = {v["name"]: v["shared_mb"] for v in report["vms"]}
        if report["ksm"]["pages_sharing"] > 0 and all(shared[vm] for vm in names):
            break
        assert time.monotonic() < deadline, report
        time.sleep(1)
    metrics = {r["name"]: r for r in cli.json("vm", "metrics")}
    assert all(metrics[vm]["page_fusion"] and metrics[vm]["shared_mb"] > 0 for vm in names), \
        metrics
    for vm in names:
        cli.ok("vm", "stop", vm, "--timeout", "0", "--force")
    assert ksm_figures()["run"] == before
