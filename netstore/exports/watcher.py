# The one registry watcher of the daemon: it polls the registry's generation
# counter and, when it moved, reads what the services serve from it (running
# VMs with the files their attachments use, every VM's NICs) into plain values,
# in a worker thread so that SQLite never blocks the event loop.
"""Follow the registry: :class:`RegistryView` snapshots on every change."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from netstore.registry import Registry

from .multipath import HostGroup

# The registry is polled this often: a VM change shows within a second.
REGISTRY_POLL_S = 0.5
REGISTRY_FILE = "registry.db"


@dataclass(frozen=True, slots=True)
class VmDisk:
    """One attachment of a running VM, as the target serves it."""

    image: str         # the file the VM reads and writes (its layer, the top, or the base)
    location: str      # the medium's own file (names the unit)
    slot_kind: str     # "hdd", "dvd", ...
    type: str          # the medium type
    medium_uuid: str


@dataclass(frozen=True, slots=True)
class RunningVm:
    """A running VM: its name, when it was started, its disks in controller/port order."""

    name: str
    started: object
    attachments: tuple[VmDisk, ...]
    host: str | None = None  # the host running it (a shared registry)
    run_type: str | None = None  # "headless": a daemon runs its QEMU


@dataclass(frozen=True, slots=True)
class RegistryView:
    """What the services take from the registry at one generation."""

    generation: int
    running: tuple[RunningVm, ...]
    nics: tuple[tuple[str, Any], ...]  # (VM name, NIC record) of every VM
    hosts: tuple[HostGroup, ...] = ()  # the hosts of a shared registry


def _image(reg: Registry, vm: str, a: Any) -> str:
    """The file a VM's attachment reads and writes, by the medium's type."""
    if a.type in ("immutable", "multiattach"):
        return str(reg.layer_for(a.medium, vm))
    if a.type == "normal":
        return str(reg.current_top(a.medium))
    return a.location


def read_view(state_dir: Path, since: int | None = None,
              url: str | None = None) -> RegistryView | None:
    """The registry's view now; None when there is no registry yet or its
    generation is still `since`.  Looking does not create a SQLite registry
    (`url`: a shared registry's)."""
    if url is None and not (Path(state_dir) / REGISTRY_FILE).exists():
        return None
    with Registry.open(state_dir, url) as reg:
        generation = reg.generation()
        if generation == since:
            return None
        running = []
        nics = []
        for vm in reg.machines.list():
            nics += [(vm.name, nic) for nic in reg.machines.nics(vm.name)]
            if not vm.running:
                continue
            disks = tuple(VmDisk(image=_image(reg, vm.name, a), location=a.location,
                                 slot_kind=a.slot_kind, type=a.type,
                                 medium_uuid=a.medium_uuid)
                          for a in reg.machines.attachments(vm.name))
            running.append(RunningVm(name=vm.name, started=vm.started, attachments=disks,
                                     host=vm.host, run_type=vm.run_type))
        hosts = tuple(HostGroup(h.name, h.group, h.up, h.vteps) for h in reg.hosts.list())
    return RegistryView(generation=generation, running=tuple(running), nics=tuple(nics),
                        hosts=hosts)


class RegistryWatcher:
    """Calls every subscriber with a new :class:`RegistryView` when the registry changes."""

    def __init__(self, state_dir: Path, log: logging.Logger | None = None,
                 url: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.url = url
        self.log = log or logging.getLogger("netstore.exports")
        self.generation: int | None = None
        self.subscribers: list[Callable[[RegistryView], None]] = []

    async def poll(self) -> bool:
        """Read the registry (in a worker thread) and tell the subscribers if it changed."""
        view = await trio.to_thread.run_sync(read_view, self.state_dir, self.generation,
                                           self.url)
        return self._deliver(view)

    def _deliver(self, view: RegistryView | None) -> bool:
        if view is None:
            return False
        self.generation = view.generation
        for subscriber in self.subscribers:
            try:
                subscriber(view)
            except Exception:
                self.log.exception("applying the registry's generation %d failed",
                                   view.generation)
        return True

    async def run(self, interval: float = REGISTRY_POLL_S) -> None:
        """Poll until cancelled: a change reaches the subscribers within `interval`."""
        while True:
            try:
                await self.poll()
            except Exception:
                self.log.exception("reading the registry failed; retrying")
            await trio.sleep(interval)
