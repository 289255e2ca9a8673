# The iSCSI portals of the supervisor: it accepts each connection, reads its
# first PDU (a Login Request naming the target, RFC 7143 11.12) and passes
# the socket, with those bytes, to the worker owning the target (SCM_RIGHTS).
# Discovery sessions go to the workers in turn; anything it cannot read goes
# to the first worker, whose protocol core gives the proper refusal.
"""Portals that hand each new iSCSI connection to the worker owning its target."""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable, Sequence

import trio

from netstore.addresses import format_portal
from netstore.exports.targets import TargetPlan
from netstore.iscsi import pdu as P
from netstore.iscsi.connection import LOGIN_TIMEOUT_S
from netstore.iscsi.routing import first_login, first_pdu_length
from netstore.iscsi.server import accept_loop, listen

from .channel import ChannelClosed
from .child import Child

# A worker being replaced gets this long to come back before a connection
# for it is closed (the initiator logs in again).
HANDOFF_WAIT_S = 3.0


def owners(plans: Sequence[TargetPlan], workers: int,
           previous: dict[str, int] | None = None) -> dict[str, int]:
    """Target name -> the index of the worker that serves it.

    A target keeps the worker it had (`previous`: its sessions are there); a
    new one goes to the worker with the fewest targets (the lowest index on a
    tie), so N targets spread over N workers.  Targets sharing a claim (a disk
    one machine at a time) share a worker, because that rule is checked where
    the sessions are.
    """
    previous = previous or {}
    owner: dict[str, int] = {}
    load = [0] * workers
    for plan in plans:
        index = previous.get(plan.entry.name)
        if index is not None and index < workers:
            owner[plan.entry.name] = index
            load[index] += 1
    holder: dict[str, int] = {}  # claim key -> the worker of a target holding it
    for plan in plans:
        if plan.entry.name in owner:
            for claim in plan.claims:
                holder.setdefault(claim.key, owner[plan.entry.name])
    for plan in plans:
        name = plan.entry.name
        if name in owner:
            continue
        index = next((holder[c.key] for c in plan.claims if c.key in holder), None)
        if index is None:
            index = min(range(workers), key=lambda i: (load[i], i))
        owner[name] = index
        load[index] += 1
        for claim in plan.claims:
            holder.setdefault(claim.key, index)
    return owner


class ListenError(Exception):
    """A portal cannot be listened on (the message names it and why)."""


class Acceptor:
    """Listens on the portals; ``route`` names a target's worker.

    Args:
        portals: (host, port) pairs to listen on.
        workers: the worker children, by index.
        route: target name -> worker index (None: not a target we serve).
    """

    def __init__(self, portals: Sequence[tuple[str, int]], workers: list[Child],
                 route: Callable[[str], int | None], log: logging.Logger) -> None:
        self.portals = list(portals)
        self.workers = workers
        self.route = route
        self.log = log
        self.bound: list[tuple[str, int]] = []
        self._turn = itertools.count()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Bind every portal, report the bound addresses, serve until cancelled.

        Raises:
            ListenError: a portal cannot be bound (nothing is left listening).
        """
        socks = []
        try:
            for host, port in self.portals:
                socks.append(await listen(host, port))
        except OSError as e:
            for s in socks:
                s.close()
            raise ListenError(f"cannot listen on {format_portal(host, port)}: "
                              f"{e.strerror or e}") from None
        self.bound = [(h, s.getsockname()[1]) for (h, _), s in zip(self.portals, socks,
                                                                    strict=True)]
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for s in socks:
                    nursery.start_soon(accept_loop, s, self._accepted, self.log)
                task_status.started(list(self.bound))
        finally:
            for s in socks:
                s.close()

    def _accepted(self, sock: socket.socket, addr) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._hand_off, sock, addr)

    async def _hand_off(self, sock: socket.socket, addr) -> None:
        try:
            prefix = await self._first_pdu(sock)
            if prefix is None:
                return  # closed or timed out before a whole header came
            worker = self._choose(prefix)
            await self._pass(worker, sock, addr, prefix)
        except OSError as e:
            self.log.info("connection %s: %s", addr, e)
        finally:
            sock.close()

    async def _first_pdu(self, sock: socket.socket) -> bytes | None:
        buf = bytearray()
        want = P.BHS_LEN
        with trio.move_on_after(LOGIN_TIMEOUT_S):
            while len(buf) < want:
                try:
                    chunk = sock.recv(want - len(buf))
                except (BlockingIOError, InterruptedError):
                    await trio.lowlevel.wait_readable(sock)
                    continue
                if not chunk:
                    return None
                buf += chunk
                if want == P.BHS_LEN and len(buf) == want:
                    want = first_pdu_length(buf) or want  # not a login: hand on the header
            return bytes(buf)
        self.log.info("connection from %s sent no login within %g s", sock.getpeername(),
                      LOGIN_TIMEOUT_S)
        return None

    def _choose(self, prefix: bytes) -> int:
        login = first_login(prefix)
        if login.readable and login.discovery:
            return next(self._turn) % len(self.workers)
        if login.readable and login.target is not None:
            index = self.route(login.target)
            if index is not None:
                return index
        return 0

    async def _pass(self, index: int, sock: socket.socket, addr, prefix: bytes) -> None:
        worker = self.workers[index]
        with trio.move_on_after(HANDOFF_WAIT_S):
            while True:
                await worker.ready.wait()
                try:
                    await worker.cast("connection", addr, prefix, fds=(sock.fileno(),))
                    return
                except ChannelClosed:
                    await trio.sleep(0.05)  # it is being replaced
        self.log.warning("connection %s closed: %s is not running", addr, worker.label)
