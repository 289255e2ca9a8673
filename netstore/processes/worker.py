# An iSCSI worker process: it serves the targets the supervisor says it owns
# (every session, reservation and unit attention of a target lives in one
# worker) on connections the acceptor hands over with the bytes it already
# read, and names every target of the portal group in discovery.
"""The child side of an iSCSI worker process."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path
from typing import Any

import trio

from netstore.exports.served import TargetUnits
from netstore.exports.targets import TargetPlan
from netstore.iscsi.login import TargetEntry
from netstore.iscsi.routing import first_login
from netstore.iscsi.server import IscsiService
from netstore.iscsi.settings import ServiceSettings


class IscsiWorker:
    """Requests the supervisor sends an iSCSI worker (see :meth:`handlers`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.log = logging.getLogger("netstore.iscsi")
        self.nursery: trio.Nursery | None = None
        self.service: IscsiService | None = None
        self.units: TargetUnits | None = None
        self._lock = trio.Lock()  # one change of targets at a time

    def handlers(self) -> dict[str, Any]:
        return {"start": self.start, "set_targets": self.set_targets,
                "settings": self.settings, "connection": self.connection,
                "status": self.status, "stop": self.aclose}

    async def start(self, settings: ServiceSettings, portals: list[tuple[str, int]],
                    state_dir: str, restarted: bool, registry_url: str | None = None) -> None:
        """Serve with `settings` (no listening: connections come from the
        acceptor); discovery names `portals`."""
        assert self.nursery is not None
        self.units = TargetUnits(Path(state_dir), self.log, restarted=restarted,
                                 registry_url=registry_url)
        self.service = IscsiService(dataclasses.replace(settings, portals=()), log=self.log)
        await self.nursery.start(self.service.run)
        self.service.advertise(portals)

    async def set_targets(self, plans: list[TargetPlan], directory: list[TargetEntry]) -> list:
        """Serve exactly `plans`; discovery names `directory` (every target).
        Returns the names of the targets served (a target whose units cannot
        be opened is left out and logged)."""
        assert self.service is not None and self.units is not None
        async with self._lock:
            exports = await trio.to_thread.run_sync(self.units.exports, plans)
            self.service.group.directory = list(directory)
            self.service.set_targets(exports)
        return [e.entry.name for e in exports]

    def settings(self, settings: ServiceSettings) -> None:
        """New settings after a reload (the portals stay as they were)."""
        assert self.service is not None
        self.service.reconfigure(dataclasses.replace(settings, portals=()))

    async def connection(self, peer: tuple, prefix: bytes, *, fds: list[int]) -> None:
        """A connection the acceptor accepted, its first `prefix` bytes read.

        A login to a target with units of each machine's own gets them opened
        first, in a thread (the registry, a new layer at power-on), so the
        login itself does not wait on the disk.
        """
        sock = socket.socket(fileno=fds[0])
        for extra in fds[1:]:
            socket.socket(fileno=extra).close()
        if self.service is None or self.units is None:
            sock.close()
            return
        login = first_login(prefix)
        if (login.readable and not login.discovery and login.target and login.initiator
                and self.units.preparable(login.target, login.initiator)):
            group = self.service.group
            exported = group.exported.get(login.target)
            # The core's rule: a login while the machine has no other session
            # to the target is its power-on.
            power_on = not any(s.initiator == login.initiator and s.target is exported
                               for s in group.sessions.values())
            try:
                await trio.to_thread.run_sync(self.units.prepare, login.target,
                                              login.initiator, power_on)
            except Exception as e:
                self.log.error("opening %s's units of %s failed: %s", login.initiator,
                               login.target, e)
        if self.service is None:
            sock.close()
            return
        self.service.adopt(sock, peer, prefix)

    def status(self) -> dict:
        return self.service.status() if self.service is not None else {}

    async def aclose(self) -> None:
        """A clean stop: sessions asked to log out, every unit served flushed
        (by the service, in a thread)."""
        service, self.service = self.service, None
        if service is not None:
            await service.aclose()
