# netstore/vm/accel.py - which accelerator a headless VM's QEMU uses:
# `[vms] accel = "kvm"` or "tcg" as told, and "auto" finds out whether KVM
# works here. A /dev/kvm that opens and answers KVM_GET_API_VERSION is not
# enough: on some nested hosts a guest under KVM hangs as the Linux kernel
# leaves real mode (right after "Probing EDD"), and `-cpu host` aborts QEMU.
# So "auto" boots a Linux kernel under KVM with no root file system: it must
# print its banner and panic (panic=-1 with -no-reboot ends QEMU) within the
# probe's time. The kernel is [vms] probe_kernel, else the suite's test guest
# (tools/make-test-guest), else the host's own; with none of them, a boot
# sector that goes to long mode and writes to QEMU's isa-debug-exit port is
# all that is tried (weaker: it passes on the hosts described above).
# The answer is kept per machine boot and QEMU binary in the state directory.
"""The accelerator for headless VMs: KVM where it works, TCG otherwise."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import trio

__all__ = ["ACCEL_PROBE_S", "choose_accel", "kvm_problem", "probe_kernel"]

# How long the probe guest may take to boot to its panic under KVM.
ACCEL_PROBE_S = 20.0
KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TEST_GUEST_KERNEL = _PACKAGE_ROOT / "build" / "test-guest" / "vmlinuz"
# The boot sector of the last resort (GNU as, .code16 at 0x7c00): cli; load a
# GDT (null, 32-bit code 0x08, data 0x10, 64-bit code 0x18); set CR0.PE; far
# jump to 32-bit code; identity-map the first 2 MiB (PML4 at 0x1000, PDPT at
# 0x2000, PD at 0x3000 with one 2 MiB page); CR4.PAE; CR3; EFER.LME; CR0.PG;
# far jump to 64-bit code; `mov $0x2a, %al; out %al, $0xf4; hlt`. QEMU then
# exits with status 0x2a * 2 + 1.
_LONG_MODE_SECTOR = bytes.fromhex(
    "fa31c08ed8660f0116b07c0f20c06683c8010f22c066ea1d7c0000080066b810008ed88ec0"
    "8ed0bf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c7"
    "0500300000830000000f20e083c8200f22e0b8001000000f22d8b9800000c00f320d000100"
    "000f300f20c00d000000800f22c0ea847c00001800b02ae6f4f48db4260000000000000000"
    "00000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00907c0000"
)
_SECTOR_EXIT = 0x2A * 2 + 1


def kvm_problem() -> str | None:
    """None when /dev/kvm opens and speaks KVM's API, else why not."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{KVM_DEVICE}: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as e:
        return f"{KVM_DEVICE}: KVM_GET_API_VERSION failed: {e.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{KVM_DEVICE}: KVM API version {version}, not {KVM_API_VERSION}"
    return None


def probe_kernel(configured: Path | None) -> Path | None:
    """The Linux kernel the probe boots (see the module doc), or None."""
    candidates = [configured] if configured is not None else [
        TEST_GUEST_KERNEL, Path(f"/boot/vmlinuz-{platform.release()}")]
    for path in candidates:
        if path is not None and os.access(path, os.R_OK):
            return path
    return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


async def choose_accel(setting: str, qemu: str, state_dir: Path,
                       configured: Path | None, log: logging.Logger) -> tuple[str, str]:
    """The accelerator to use ("kvm" or "tcg") and why, for ``[vms] accel``;
    ``configured`` is ``[vms] probe_kernel``.  Files and devices are looked
    at in a thread, never on the loop."""
    if setting in ("kvm", "tcg"):
        return setting, "[vms] accel says so"
    answer, kernel, key = await trio.to_thread.run_sync(_known, qemu, state_dir, configured)
    if answer is not None:
        return answer
    accel, why = await _probe(qemu, kernel)
    log.info("vms: accel auto: %s (%s)", accel, why)
    await trio.to_thread.run_sync(_keep, state_dir, key, accel, why)
    return accel, why


def _cache(state_dir: Path) -> Path:
    return Path(state_dir) / "accel-probe.json"


def _known(qemu: str, state_dir: Path, configured: Path | None
           ) -> tuple[tuple[str, str] | None, Path | None, dict[str, str]]:
    """What is known without a probe: TCG when /dev/kvm is no use, or the
    answer kept for this boot; else None.  And the kernel to probe with and
    the key the answer is kept under."""
    kernel = probe_kernel(configured)
    key = {"boot_id": _boot_id(), "qemu": qemu, "kernel": str(kernel or "")}
    problem = kvm_problem()
    if problem is not None:
        return ("tcg", problem), kernel, key
    try:
        kept = json.loads(_cache(state_dir).read_text())
        if kept.get("key") == key:
            return (kept["accel"], kept["why"] + " (probed earlier on this boot)"), kernel, key
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None, kernel, key


def _keep(state_dir: Path, key: dict[str, str], accel: str, why: str) -> None:
    try:
        _cache(state_dir).write_text(json.dumps({"key": key, "accel": accel, "why": why}))
    except OSError:
        pass


def _probe_dir(kernel: Path | None) -> Path:
    """A temporary directory for the probe: its console file, and the boot
    sector when there is no kernel."""
    tmp = Path(tempfile.mkdtemp(prefix="netstore-accel."))
    if kernel is None:
        (tmp / "probe.img").write_bytes(_LONG_MODE_SECTOR.ljust(510, b"\0") + b"\x55\xaa")
    return tmp


def _serial(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def _probe(qemu: str, kernel: Path | None) -> tuple[str, str]:
    tmp = await trio.to_thread.run_sync(_probe_dir, kernel)
    try:
        out = tmp / "serial"
        argv = [qemu, "-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none",
                "-m", "128", "-no-reboot", "-serial", f"file:{out}"]
        if kernel is not None:
            argv += ["-kernel", str(kernel),
                     "-append", "console=ttyS0 panic=-1 root=/dev/netstore-probe"]
            what = f"a Linux kernel ({kernel})"
        else:
            argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=1",
                     "-drive", f"file={tmp / 'probe.img'},format=raw,if=floppy", "-boot", "a"]
            what = "a long-mode boot sector (no Linux kernel to probe with)"
        status = None
        with trio.move_on_after(ACCEL_PROBE_S):
            done = await trio.run_process(argv, check=False, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            status = done.returncode
        serial = await trio.to_thread.run_sync(_serial, out)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, tmp, True)
    if status is None:
        last = serial.strip().splitlines()[-1:] or ["nothing"]
        return "tcg", (f"KVM did not boot {what} within {ACCEL_PROBE_S:g} s "
                       f"(its console's last line: {last[0][:120]!r})")
    if kernel is not None:
        if "Kernel panic" in serial or "Linux version" in serial:
            return "kvm", f"KVM booted {what}"
        return "tcg", f"QEMU under KVM ended with status {status} before {what} ran"
    if status == _SECTOR_EXIT:
        return "kvm", f"KVM ran {what}"
    return "tcg", f"QEMU under KVM ended with status {status} running {what}"
