# tests/vm/test_accel.py - the accelerator of headless VMs: `[vms] accel`
# "kvm"/"tcg" are taken as told; "auto" without a usable /dev/kvm is TCG with
# the device's problem; with one, the real QEMU boots the test guest's kernel
# under KVM and the answer (either way, with why) is kept per boot, so the
# next daemon on the same state does not probe again.
"""netstore.vm.accel with the real QEMU and the test guest's kernel."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import trio

from netstore.vm import accel
from tests.e2e.guest import build_guest

LOG = logging.getLogger("test")
QEMU = "qemu-system-x86_64"


async def test_told_accel_is_taken_without_a_probe(tmp_path):
    for setting in ("kvm", "tcg"):
        assert await accel.choose_accel(setting, "/nonexistent/qemu", tmp_path, None, LOG) == \
            (setting, "[vms] accel says so")
    assert not (tmp_path / "accel-probe.json").exists()


async def test_auto_without_kvm_device_is_tcg_naming_why(tmp_path, monkeypatch):
    monkeypatch.setattr(accel, "KVM_DEVICE", str(tmp_path / "no-kvm"))
    chosen, why = await accel.choose_accel("auto", QEMU, tmp_path, None, LOG)
    assert chosen == "tcg" and "no-kvm" in why and "No such file" in why


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(QEMU) is None, reason="qemu-system-x86_64 missing")
@pytest.mark.skipif(accel.kvm_problem() is not None, reason="no usable /dev/kvm here")
async def test_auto_probes_kvm_once_per_boot(tmp_path, monkeypatch):
    kernel = await trio.to_thread.run_sync(build_guest)
    monkeypatch.setattr(accel, "ACCEL_PROBE_S", 12.0)
    began = trio.current_time()
    chosen, why = await accel.choose_accel("auto", QEMU, tmp_path, kernel / "vmlinuz", LOG)
    assert chosen in ("kvm", "tcg")
    if chosen == "kvm":
        assert "booted a Linux kernel" in why
    else:  # the hosts this was written on: a guest under KVM hangs early
        assert "KVM did not boot" in why or "ended with status" in why, why
    kept = json.loads((tmp_path / "accel-probe.json").read_text())
    assert kept["accel"] == chosen and kept["key"]["kernel"] == str(kernel / "vmlinuz")
    took = trio.current_time() - began
    # the second daemon on this state and boot takes the kept answer at once
    began = trio.current_time()
    again = await accel.choose_accel("auto", QEMU, tmp_path, kernel / "vmlinuz", LOG)
    assert again == (chosen, why + " (probed earlier on this boot)")
    assert trio.current_time() - began < min(1.0, took)


def test_probe_kernel_prefers_the_configured_one(tmp_path):
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"x")
    assert accel.probe_kernel(k) == k
    assert accel.probe_kernel(tmp_path / "missing") is None
