# A daemon's membership in a shared registry ([registry] url): it registers
# its host (portal, cores, memory) with a new epoch, renews its lease every
# third of [registry] lease, and fences every other host whose lease ran out
# (registry/hosts.py: their VMs aborted, their disks freed for a new start).
# A renewal that finds its epoch moved means this host was fenced while it
# could not reach the database: its VMs belong to nobody now, or to another
# host, so it drops them (on_fenced) and registers again as a new member.
# A host that cannot reach the database does not wait to be told: once it
# has not renewed its lease for two thirds of it (before any other host may
# fence it), it fences itself: its VMs' QEMU end and its paths to their disks
# become unavailable (on_isolated), until the database answers again.
# Every database call runs in a worker thread; a database that does not
# answer only delays the next renewal.  It also runs the requests other
# hosts' CLIs address to this host (registry/requests.py: `vm stop` of a VM
# this host runs), with the control socket's own handlers.
"""This host's lease in a shared registry, and the fencing of hosts that lost theirs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from netstore.control import dispatch
from netstore.registry import Registry
from netstore.registry import requests as host_requests
from netstore.registry.errors import RegistryError
from netstore.registry.host import host_cores, host_memory_mb
from netstore.registry.hosts import Fenced

# Operations another host's CLI may ask this host's daemon for: a VM's.
REMOTE_OPS = ("vm_start", "vm_stop", "vm_control", "vm_screenshot", "vm_runtime", "vm_metrics",
              "vm_snapshot")


class HostMembership:
    """Registers this host and keeps its lease (run it in the daemon's nursery)."""

    def __init__(self, state_dir: Path, url: str, host: str, lease_s: float,
                 portal: Callable[[], str], on_fenced: Callable[[], Awaitable[None]],
                 log: logging.Logger, vteps: tuple[tuple[str, str], ...] = (),
                 on_isolated: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self.vteps = vteps  # (switch, "ip:port") of this host's vxlan ports
        self.on_isolated = on_isolated
        self.isolated = False
        self.renewed_at = 0.0  # trio.current_time() of the last renewal
        self.state_dir, self.url, self.host, self.lease_s = state_dir, url, host, lease_s
        self.portal = portal
        self.on_fenced = on_fenced
        self.log = log
        self.epoch = 0
        self._poked = trio.Event()

    async def _call(self, fn: Callable[[Registry], Any]) -> Any:
        def call() -> Any:
            with Registry.open(self.state_dir, self.url) as reg:
                return fn(reg)
        return await trio.to_thread.run_sync(call)

    async def register(self) -> int:
        """Join the registry with a new epoch (the daemon's start)."""
        portal = self.portal()
        self.epoch = await self._call(lambda reg: reg.hosts.register(  # the sizes read in the thread
            self.host, portal=portal, cores=host_cores(), memory_mb=host_memory_mb() or 0,
            vteps=self.vteps))
        self.log.info("host %s joined the shared registry (epoch %d, lease %g s)",
                      self.host, self.epoch, self.lease_s)
        self.renewed_at = trio.current_time()
        return self.epoch

    async def _isolate(self, isolated: bool) -> None:
        if isolated == self.isolated:
            return
        self.isolated = isolated
        if isolated:
            self.log.error("host %s could not renew its lease for %.0f s: it fences itself (its "
                           "VMs end, its paths become unavailable)", self.host,
                           trio.current_time() - self.renewed_at)
            await self.on_fenced()
        else:
            self.log.info("host %s reaches the shared registry again", self.host)
        if self.on_isolated is not None:
            await self.on_isolated(isolated)

    async def run(self) -> None:
        """Renew the lease and fence late hosts until cancelled; fence this
        host itself when its renewals stop getting through."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            while True:
                await trio.sleep(self.lease_s / 3)
                await self._renew()

    async def _renew(self) -> None:
        def renew_and_sweep(reg: Registry) -> list[Fenced] | None:
            """One opening: renew (None: this host was fenced), then fence the late."""
            if not reg.hosts.renew(self.host, self.epoch):
                return None
            return reg.hosts.fence_expired(self.lease_s, self.host)

        asked = trio.current_time()  # the renewal lands after this: a safe date for it
        try:
            fenced = await self._call(renew_and_sweep)
            if fenced is None:
                self.log.error("host %s was fenced (its lease ran out): its VMs are "
                               "dropped and it joins again", self.host)
                await self.on_fenced()
                await self.register()
                fenced = await self._call(lambda reg: reg.hosts.fence_expired(self.lease_s,
                                                                              self.host))
            self.renewed_at = max(self.renewed_at, asked)
            await self._isolate(False)
            for f in fenced:
                self.log.warning("host %s stopped renewing its lease: fenced; VMs aborted: %s",
                                 f.host, ", ".join(f.vms) or "none")
        except RegistryError as e:
            self.log.error("the shared registry: %s", e)

    async def _watchdog(self) -> None:
        """Fence this host once two thirds of its lease passed without a
        renewal, however long a database call hangs."""
        while True:
            await trio.sleep(self.lease_s / 6)
            if trio.current_time() - self.renewed_at > self.lease_s * 2 / 3:
                await self._isolate(True)

    def poke(self, view: Any = None) -> None:
        """The registry changed (the watcher's subscriber): look for requests."""
        self._poked.set()

    async def serve_requests(self, handlers: dict[str, Callable[..., Any]]) -> None:
        """Run the requests addressed to this host, until cancelled."""
        allowed = {op: h for op, h in handlers.items() if op in REMOTE_OPS}
        async with trio.open_nursery() as nursery:
            while True:
                await self._poked.wait()
                self._poked = trio.Event()
                try:
                    taken = await self._call(lambda reg: host_requests.take(reg, self.host))
                except RegistryError as e:
                    self.log.error("the shared registry: %s", e)
                    continue
                for rid, op, args in taken:
                    nursery.start_soon(self._run_request, allowed, rid, op, args)

    async def _run_request(self, handlers: dict[str, Callable[..., Any]], rid: int, op: str,
                           args: dict[str, Any]) -> None:
        self.log.info("request %d from another host: %s %s", rid, op, args.get("name", ""))
        answer = await dispatch(op, args, handlers, self.log)
        result, error = answer.get("result"), answer.get("error")
        try:
            await self._call(lambda reg: host_requests.answer(reg, rid, result, error))
        except RegistryError as e:
            self.log.error("answering request %d: %s", rid, e)

    async def leave(self) -> None:
        """The daemon stops cleanly: the others need not wait for the lease."""
        try:
            await self._call(lambda reg: reg.hosts.leave(self.host, self.epoch))
        except RegistryError as e:
            self.log.error("the shared registry: %s", e)
