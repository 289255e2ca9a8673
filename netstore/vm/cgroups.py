# netstore/vm/cgroups.py - a running VM's execution cap, as cgroup v2's
# cpu.max: VirtualBox's cap is a percentage of each vCPU, so the quota is
# PCT % of the period times the VM's online vCPUs. The VM's QEMU moves into
# netstore/<vm> under the cgroup v2 hierarchy (the unified mount), where the
# cpu controller must be available and delegable to that child; a host whose
# cpu controller is bound to cgroup v1 (a hybrid layout) has none, and the
# refusal says so.
"""cgroup v2 CPU caps for the QEMU of a running VM."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CPU_PERIOD_US", "cap_cpu", "cgroup2_root", "remove_group"]

CPU_PERIOD_US = 100_000
_MOUNTS = "/proc/self/mounts"


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, or None."""
    try:
        with open(_MOUNTS) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        pass
    return None


def cap_cpu(vm: str, pid: int, pct: int, vcpus: int) -> Path:
    """Put ``pid`` in the VM's cgroup with a cap of ``pct`` % per vCPU;
    the cgroup's directory.  Raises OSError naming what is missing."""
    root = cgroup2_root()
    if root is None:
        raise OSError("this host has no cgroup v2 hierarchy mounted (cpu.max needs one)")
    try:
        available = (root / "cgroup.controllers").read_text().split()
    except OSError as e:
        raise OSError(f"{root}/cgroup.controllers: {e.strerror}") from None
    if "cpu" not in available:
        raise OSError(f"the cgroup v2 hierarchy at {root} offers no cpu controller "
                      f"(it has: {' '.join(available) or 'none'}; on this host cpu belongs "
                      "to cgroup v1), so an execution cap cannot be enforced here")
    group = root / "netstore"
    vm_group = group / vm
    try:
        vm_group.mkdir(parents=True, exist_ok=True)
        for parent in (root, group):
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            if "cpu" not in enabled:
                (parent / "cgroup.subtree_control").write_text("+cpu")
        quota = "max" if pct >= 100 else str(max(1000, CPU_PERIOD_US * pct * vcpus // 100))
        (vm_group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        (vm_group / "cgroup.procs").write_text(str(pid))
    except OSError as e:
        raise OSError(f"cgroup {vm_group}: {e.strerror or e}") from None
    return vm_group


def remove_group(vm: str) -> None:
    """Remove the VM's cgroup once its QEMU has ended (ignored if absent or busy)."""
    root = cgroup2_root()
    if root is not None:
        try:
            os.rmdir(root / "netstore" / vm)
        except OSError:
            pass
