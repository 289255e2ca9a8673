# The Trio shell of the iSCSI target: listening sockets, connections received
# and answered in the run's shared poller (netstore/poller.py: no task switch
# per receive) with a task per connection for what must wait and a keeper,
# batching every answer of a receive into one sendmsg, and the drainers that
# run each logical unit's queued commands in a worker thread, a batch per
# trip, so no disk wait stalls the loop.  All
# protocol decisions live in the pure core (connection.py and its modules);
# this file moves bytes and owns the threads.
"""The iSCSI service: portals, connections, reconfiguration and clean stop."""

from __future__ import annotations

import errno
import logging
import socket as _socket
import time
from functools import partial

import trio

from netstore.iscsi.connection import Connection, Timeouts
from netstore.iscsi.params import TargetLimits
from netstore.iscsi.portal import PortalGroup, TargetExport
from netstore.iscsi.settings import ServiceSettings
from netstore.iscsi.workers import UnitWorkers
from netstore.poller import Poller

# One receive takes what the kernel has, up to this: big enough for a whole
# 256 KiB Data-Out PDU plus headers, so large writes need few wake-ups.
RECV_SIZE = 512 * 1024
# sendmsg takes at most IOV_MAX (1024 on Linux) buffers; stay well below.
MAX_IOV = 512
# The keeper gives each connection the time at least this often (the
# resolution of the NOP and login timeouts, which the core decides).
KEEPER_PERIOD_S = 1.0
# How long a clean stop waits for initiators to answer the logout request.
LOGOUT_GRACE_S = 2.0
LISTEN_BACKLOG = 128
# accept() errors that mean "out of a resource, try again later" (as trio's
# serve_listeners): anything else ends the portal's accept loop.
ACCEPT_CAPACITY_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY_S = 0.1
# Why the poller handed a connection back to its task (or an OSError).
_ENDED = "ended"  # the initiator closed it
_BUSY = "busy"  # closing, a full window, or answers still to send


class ServiceError(Exception):
    """The service cannot start as configured (a portal in use)."""


def send_now(sock: _socket.socket, bufs: list) -> list:
    """Send as much of ``bufs`` as the socket takes without blocking.

    Returns what is left (empty when all was sent), with a partly sent
    buffer cut to its unsent tail.
    """
    while bufs:
        chunk = bufs[:MAX_IOV]
        try:
            sent = sock.sendmsg(chunk)
        except (BlockingIOError, InterruptedError):
            return bufs
        k = 0
        n = len(chunk)
        while k < n:
            size = len(chunk[k])
            if sent < size:
                break
            sent -= size
            k += 1
        bufs = bufs[k:]
        if sent:
            bufs[0] = memoryview(bufs[0])[sent:]
            return bufs
    return bufs


class _Wire:
    """A connection's socket side: the socket, its wake-up event, its send state.

    The socket is a plain non-blocking stdlib socket: the loops call
    ``recv_into``/``sendmsg`` directly and only ask Trio to wait when the
    kernel says EAGAIN.  Going through Trio's socket wrappers costs two trips
    through the scheduler per call, which at one command in flight is most
    of the time a command takes.
    """

    __slots__ = ("sock", "conn", "wake", "room", "sending", "handed_back", "_send_done",
                 "_answered")

    def __init__(self, sock: _socket.socket, answered: _Answered) -> None:
        self.sock = sock
        self.conn: Connection | None = None
        self.wake = trio.Event()
        self.room: trio.Event | None = None  # the receive loop waits for completions
        self.sending = False  # a task is waiting for the socket to drain
        self.handed_back: object = None  # why the poller stopped receiving
        self._send_done = trio.lowlevel.ParkingLot()
        self._answered = answered

    def wakeup(self) -> None:
        if self._answered.active:  # a completion: sent right after, no task switch
            self._answered.wires.add(self)
            return
        self.wake.set()
        if self.room is not None:
            self.room.set()

    def send_soon(self) -> None:
        """Send what completions put in the outbox now, if the socket takes it;
        anything else (a send under way, a full socket, a close) is the keeper's."""
        conn = self.conn
        assert conn is not None
        if self.room is not None:
            self.room.set()
        if self.sending or conn.closing or not conn.outbox:
            if conn.outbox or conn.closing:
                self.wake.set()
            return
        bufs = conn.outbox
        conn.outbox = []
        try:
            rest = send_now(self.sock, bufs)
        except OSError:
            conn.outbox = bufs
            self.wake.set()
            return
        if rest:
            conn.outbox = rest
            self.wake.set()

    async def flush(self) -> None:
        """Send everything in the connection's outbox, in order."""
        conn = self.conn
        assert conn is not None
        while self.sending:  # the other task is mid-send: our bytes go after its
            await self._send_done.park()
        if not conn.outbox:
            return
        self.sending = True
        try:
            while conn.outbox:
                bufs = conn.outbox
                conn.outbox = []
                rest = send_now(self.sock, bufs)
                while rest:
                    await trio.lowlevel.wait_writable(self.sock)
                    rest = send_now(self.sock, rest)
        finally:
            self.sending = False
            self._send_done.unpark_all()


async def listen(host: str, port: int) -> trio.socket.SocketType:
    """A listening TCP socket on host:port (IPv6 only for an IPv6 host)."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = trio.socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    if family == _socket.AF_INET6:
        sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
    try:
        await sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


async def accept_loop(listener: trio.socket.SocketType, handle, log: logging.Logger) -> None:
    """Accept connections on one portal until cancelled; ``handle(sock, addr)``
    gets each as a plain non-blocking socket with TCP_NODELAY.

    Running out of descriptors or memory is retried after a pause (the
    connections that hold them will end); any other accept error ends
    this portal's loop with a log line, the other portals keep serving.
    """
    while True:
        try:
            sock, addr = await listener.accept()
        except OSError as e:
            if e.errno not in ACCEPT_CAPACITY_ERRORS:
                log.error("accept failed: %s; this portal accepts no more connections", e)
                return
            log.error("accept failed: %s; retrying in %g s", e, ACCEPT_RETRY_S)
            await trio.sleep(ACCEPT_RETRY_S)
            continue
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        raw = _socket.socket(sock.family, sock.type, fileno=sock.detach())
        raw.setblocking(False)
        handle(raw, addr)


class _Answered:
    """The wires answered by the completions being delivered now."""

    __slots__ = ("active", "wires")

    def __init__(self) -> None:
        self.active = False
        self.wires: set[_Wire] = set()


class IscsiService:
    """The iSCSI target service of the daemon.

    It serves the targets the wiring layer hands it (:meth:`set_targets`) on
    the portals of its settings; it reads no configuration file and no
    registry.

    Args:
        settings: portals, negotiation limits, NOP-In pings, discovery CHAP.
        log: where protocol events and refusals are logged.
    """

    def __init__(self, settings: ServiceSettings, *, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("netstore.iscsi")
        self.settings = settings
        limits = TargetLimits(max_recv_data_segment_length=settings.max_recv_data_segment_length)
        self.group = PortalGroup(portals=list(settings.portals), limits=limits,
                                 discovery_chap=settings.discovery_chap, log=self.log)
        self._wires: set[_Wire] = set()
        self._nursery: trio.Nursery | None = None
        self.bound: list[tuple[str, int]] = []
        # The units' queued commands run in worker threads (workers.py).
        self._answered = _Answered()
        self._units = UnitWorkers(self._deliver)
        self.group.schedule = self._units.schedule

    def set_targets(self, targets: list[TargetExport]) -> None:
        """Serve exactly these targets from now on (see PortalGroup.set_targets)."""
        self.group.set_targets(targets)

    def reconfigure(self, settings: ServiceSettings) -> None:
        """Apply new settings; the portals change only at the next start."""
        self.settings = settings
        self.group.discovery_chap = settings.discovery_chap

    def status(self) -> dict:
        """JSON-able view of portals, targets and sessions."""
        st = self.group.status()
        st["portals"] = [f"{h}:{p}" for h, p in self.bound]
        return st

    # -- serving ------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Bind every portal, report the bound addresses, serve until cancelled."""
        socks = []
        try:
            for host, port in self.settings.portals:
                socks.append(await listen(host, port))
        except OSError as e:
            for s in socks:
                s.close()
            raise ServiceError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.bound = [(h, s.getsockname()[1]) for (h, _), s in zip(self.settings.portals, socks,
                                                                    strict=True)]
        # Portals bound to port 0 (tests) advertise the port the kernel chose.
        self.group.portals = list(self.bound)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for s in socks:
                    nursery.start_soon(self._accept_loop, s)
                task_status.started(list(self.bound))
                await trio.sleep_forever()  # connections may also come by adopt()
        finally:
            for s in socks:
                s.close()
            with trio.CancelScope(shield=True):
                await self._flush_luns()

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        assert self._nursery is not None
        await accept_loop(listener, self._accept, self.log)

    def _accept(self, sock: _socket.socket, addr) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_connection, sock, addr)

    def adopt(self, sock: _socket.socket, addr, prefix: bytes = b"") -> None:
        """Serve a connection accepted elsewhere (another process), whose first
        `prefix` bytes were already read from it."""
        if self._nursery is None:
            sock.close()
            return
        sock.setblocking(False)
        self._nursery.start_soon(self._serve_connection, sock, addr, prefix)

    def advertise(self, portals: list[tuple[str, int]]) -> None:
        """The portals discovery names (when another process listens for us)."""
        self.group.portals = list(portals)

    async def _serve_connection(self, sock: _socket.socket, addr, prefix: bytes = b"") -> None:
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        wire = _Wire(sock, self._answered)
        cfg = self.settings
        conn = Connection(self.group, peer, wire.wakeup,
                          Timeouts(nop_interval_s=cfg.nop_interval_s,
                                   nop_timeout_s=cfg.nop_timeout_s))
        wire.conn = conn
        self._wires.add(wire)
        self.log.debug("connection from %s", peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keeper, wire, nursery.cancel_scope)
                if prefix:
                    conn.receive_data(prefix)
                    await wire.flush()
                if not conn.closing:
                    await self._receive_loop(wire)
                nursery.cancel_scope.cancel()
        except Exception:
            self.log.exception("connection %s failed; closing it", peer)
        finally:
            self._wires.discard(wire)
            try:
                conn.connection_lost()
            except Exception:
                self.log.exception("cleanup of connection %s failed", peer)
            sock.close()

    async def _receive_loop(self, wire: _Wire) -> None:
        """Receive until the connection ends. The bytes are read and answered
        in the run's shared poller (netstore/poller.py), with no task switch;
        this task only steps in when the poller hands the connection back:
        answers the socket did not take, a full command window, an end."""
        conn = wire.conn
        assert conn is not None
        sock = wire.sock
        fd = sock.fileno()
        buf = bytearray(RECV_SIZE)
        drain = partial(self._drain, wire, buf, memoryview(buf))
        poller = Poller.current()
        while True:
            wire.handed_back = None
            ended = poller.watch(fd, drain)
            try:
                await ended.wait()
            finally:
                poller.unwatch(fd)
            why = wire.handed_back
            if why is None:  # the drain failed (logged by the poller)
                return
            if why == _ENDED:
                if conn.session is not None or conn.login is None:
                    self.log.info("connection %s closed by the initiator", conn.peer)
                return
            if isinstance(why, OSError):
                self.log.info("connection %s: %s", conn.peer, why)
                return
            if conn.outbox:
                try:
                    await wire.flush()
                except OSError as e:
                    self.log.info("connection %s: send failed: %s", conn.peer, e)
                    return
            if conn.closing:
                return
            while conn.saturated and not conn.closing:
                # The window's worth of commands is queued on the units:
                # read no more until some complete (TCP pushes back).
                wire.room = trio.Event()
                await wire.room.wait()
            wire.room = None
            if conn.closing:
                return

    @staticmethod
    def _drain(wire: _Wire, buf: bytearray, view: memoryview) -> int:
        """In the poller: one receive, answered; -1 hands the connection back
        to its task (``wire.handed_back`` says why)."""
        conn = wire.conn
        try:
            n = wire.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            wire.handed_back = e
            return -1
        if not n:
            wire.handed_back = _ENDED
            return -1
        conn.receive_data(view[:n])
        if conn.outbox:
            wire.send_soon()
        if conn.closing or conn.saturated or conn.outbox or wire.sending:
            # an end, a full window, or answers the socket has no room for
            # (read no more until they are sent: TCP pushes back)
            wire.handed_back = _BUSY
            return -1
        return n

    async def _keeper(self, wire: _Wire, scope: trio.CancelScope) -> None:
        """Gives the core the time; sends what it produced outside the receive loop.

        Pings and timeouts are the core's decision (Connection.tick); this
        task only wakes (on output, or every KEEPER_PERIOD_S) and sends.
        """
        conn = wire.conn
        assert conn is not None
        while True:
            conn.tick(time.monotonic())
            if conn.outbox:
                try:
                    await wire.flush()
                except OSError:
                    scope.cancel()
                    return
            if conn.closing:
                scope.cancel()
                return
            with trio.move_on_after(KEEPER_PERIOD_S):
                await wire.wake.wait()
            wire.wake = trio.Event()

    async def aclose(self) -> None:
        """Ask every session to log out, wait a little, close the rest, flush LUNs."""
        wires = list(self._wires)
        for w in wires:
            if w.conn is not None:
                w.conn.async_logout_request()
        with trio.move_on_after(LOGOUT_GRACE_S):
            while self._wires:
                await trio.sleep(0.05)
        for w in list(self._wires):
            if w.conn is not None:
                w.conn.shut("target shutting down")
        with trio.move_on_after(0.5):
            while self._wires:
                await trio.sleep(0.02)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._flush_luns()

    # -- the units' queued commands ----------------------------------------------------
    def _deliver(self, finish) -> None:
        """Run a batch's completions (on the loop), then send their answers at once."""
        a = self._answered
        a.active = True
        try:
            finish()
        finally:
            a.active = False
        wires = list(a.wires)
        a.wires.clear()
        for w in wires:
            w.send_soon()

    async def _flush_luns(self) -> None:
        """Wait for every unit's queued commands, then flush them all (in a thread)."""
        await self._units.wait_idle()
        units = self.group.units()

        def flush_all() -> None:
            for lu in units:
                try:
                    lu.backend.flush()
                except Exception:
                    self.log.exception("flushing a LUN failed")

        await trio.to_thread.run_sync(flush_all)
        self._units.stop()
