# The host the VMs run on: its CPU cores and memory, and the report of what
# the running VMs commit against them (semantics.md section 2, "Host
# report").  The vCPU rules of machines.py are relative to host_cores().
"""The host: cores, memory, and the report of running VMs against them."""

from __future__ import annotations

import os
from typing import Any, Protocol

from netstore.registry.vm import Machine


class _MachineList(Protocol):
    def list(self) -> list[Machine]: ...


class _HasMachines(Protocol):
    @property
    def machines(self) -> _MachineList: ...


def host_cores() -> int:
    """The host's CPU count (os.cpu_count())."""
    return os.cpu_count() or 1


def host_memory_mb() -> int | None:
    """MemTotal of /proc/meminfo in MiB, None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_report(reg: _HasMachines) -> dict[str, Any]:
    """vCPUs of running VMs against host cores, memory committed (running
    VMs' memory, the maximum of a range) against host memory, balloons;
    ``warnings`` lists each oversubscription."""
    cores, mem = host_cores(), host_memory_mb()
    running = [m for m in reg.machines.list() if m.running]
    vcpus = sum(m.online_cpus for m in running)
    committed = sum(m.memory_mb for m in running)
    balloons = sum(m.balloon_mb for m in running)
    out: dict[str, Any] = {
        "host_cores": cores,
        "host_memory_mb": mem,
        "running_vms": len(running),
        "vcpus": vcpus,
        "cpu_ratio": round(vcpus / cores, 3),
        "memory_committed_mb": committed,
        "memory_ratio": round(committed / mem, 3) if mem else None,
        "balloons_mb": balloons,
        "memory_after_balloons_mb": committed - balloons,
        "vms": [{"name": m.name, "vcpus": m.online_cpus, "cpu_cap": m.cpu_cap,
                 "weight": m.weight, "memory_mb": m.memory_mb,
                 "memory_min_mb": m.memory_min_mb, "balloon_mb": m.balloon_mb}
                for m in running],
        "warnings": [],
    }
    if vcpus > cores:
        out["warnings"].append(
            f"vCPUs oversubscribed: {vcpus} vCPUs of running VMs on {cores} host cores "
            f"(ratio {vcpus / cores:.2f} > 1)"
        )
    if mem and committed > mem:
        out["warnings"].append(
            f"memory overcommitted: {committed} MB committed to running VMs, host has {mem} MB "
            f"(ratio {committed / mem:.2f} > 1)"
        )
    return out


__all__ = ["host_cores", "host_memory_mb", "host_report"]
