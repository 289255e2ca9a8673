# netstore/switch/ports/base.py - what every port kind shares: a name, its
# forwarding settings, a link state, a non-blocking send with a bounded queue,
# and a receive loop that hands the switch every frame the kernel has before
# yielding.  Port kinds differ only in how bytes reach a socket or device.
"""The common base of the switch's port kinds."""

from __future__ import annotations

import logging
import socket
from collections import Counter, deque
from typing import Any, Protocol

import trio

__all__ = [
    "MAX_FRAME",
    "QUEUE_FRAMES",
    "RECV_BATCH",
    "DatagramPort",
    "Port",
    "PortHost",
]

# The largest datagram a port reads: a 64 KiB segment plus Ethernet header,
# one 802.1Q tag and a virtio-net header (QEMU's NET_BUFSIZE is 4096 + 65536).
MAX_FRAME = 65536 + 4096
# Frames a port holds while its socket is full; beyond this a frame is dropped
# and counted as 'queue' (a slow peer must not grow our memory).
QUEUE_FRAMES = 1024
# Frames read in one wake-up before the other ports get their turn.
RECV_BATCH = 64


class PortHost(Protocol):
    """What a port needs from the service that owns it."""

    def deliver(self, port: str, frames: list[bytes]) -> None:
        """Frames received on ``port``, in order."""

    def link_changed(self, port: str, up: bool) -> None:
        """The peer of ``port`` came (up) or went (down)."""

    def attach(self, port: Port) -> None:
        """A dynamic port (a VDE client) joined the switch."""

    def detach(self, port: Port) -> None:
        """A dynamic port left the switch."""


class Port:
    """A switch port: subclasses open their socket or device in ``run``.

    Attributes:
        name: the port's name on the switch.
        settings: its forwarding settings (a core ``PortSettings``).
        kind: udp, unixgram, stream, tap or vde.
        link_up: whether a peer is there to receive frames.
        drops: frames this port dropped itself, by cause ('queue', 'no_peer',
            'error'); the switch core counts its own drops separately.
    """

    kind = "?"
    forwards = True  # a switch port of its own (a VDE control directory is not)
    vnet = False  # frames carry a virtio-net header (a TAP port with IFF_VNET_HDR)

    def __init__(self, name: str, settings: Any, host: PortHost,
                 log: logging.Logger | None = None) -> None:
        self.name = name
        self.settings = settings
        self.host = host
        self.log = log or logging.getLogger(f"netstore.switch.{name}")
        self.link_up = False
        self.drops: Counter[str] = Counter()
        self._queue: deque[Any] = deque()
        self._wake_writer = trio.Event()
        self._cancel: trio.CancelScope | None = None
        # While the port's outbound link is impaired, what the switch sends goes
        # to its emulator, which hands frames to transmit() when they are due.
        self.egress: Any = None
        self.admin_up = True  # False: set down by the user or a flap schedule

    # -- what the service sees ------------------------------------------------------
    @property
    def address(self) -> str | None:
        """Where a peer reaches this port (for the ready line and status), if anywhere."""
        return None

    @property
    def peer(self) -> str | None:
        """The peer currently attached, if known."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the port for ``switch show``."""
        return {"name": self.name, "kind": self.kind, "link": "up" if self.link_up else "down",
                "address": self.address, "peer": self.peer, "queued": len(self._queue)}

    def set_admin(self, up: bool) -> None:
        """The link set down (or up again) by the user; kinds that can tell
        their peer do (a stream port closes its connection, a TAP drops its
        carrier)."""
        self.admin_up = up

    def set_link(self, up: bool) -> None:
        if up != self.link_up:
            self.link_up = up
            self.log.info("port %s: link %s", self.name, "up" if up else "down")
            self.host.link_changed(self.name, up)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the port, report started, move frames until cancelled or closed."""
        with trio.CancelScope() as scope:
            self._cancel = scope
            try:
                await self._run(task_status)
            finally:
                self._closed()

    # -- receiving ------------------------------------------------------------------
    def _readable_fd(self) -> Any:
        """The socket or descriptor frames arrive on."""
        raise NotImplementedError

    def _drain(self) -> int:
        """Read what the kernel has (at most RECV_BATCH frames) and hand it to
        the switch; the count read, or -1 when the port can receive no more."""
        raise NotImplementedError

    async def _receive(self) -> None:
        """Receive until the port's source ends: in the host's shared poller
        when it has one (netstore/poller.py), else in a loop of the port's own."""
        fd = self._readable_fd()
        poller = getattr(self.host, "poller", None)
        if poller is not None:
            number = fd if isinstance(fd, int) else fd.fileno()
            ended = poller.watch(number, self._drain)
            try:
                await ended.wait()
            finally:
                poller.unwatch(number)
            return
        drain = self._drain
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        while True:
            got = drain()
            if got < 0:
                return
            if got:
                await checkpoint()
            else:
                await wait_readable(fd)

    def close(self) -> None:
        """Stop the port's tasks (their sockets close as the tasks end)."""
        if self._cancel is not None:
            self._cancel.cancel()

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        raise NotImplementedError

    def _closed(self) -> None:
        """Release sockets and files; called once when ``run`` ends."""

    # -- sending --------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        """What the switch sends out of this port: through its impaired link if
        it has one, else transmitted at once."""
        if self.egress is not None:
            self.egress(frame)
            return
        self.transmit(frame)

    def transmit(self, frame: bytes) -> None:
        """Send ``frame`` now if the socket takes it, else queue it (bounded); never blocks."""
        if not self.link_up:
            self.drops["no_peer"] += 1
            return
        if self._queue:
            self._enqueue(frame)
            return
        try:
            self._send_one(frame)
        except (BlockingIOError, InterruptedError):
            self._enqueue(frame)
        except OSError as e:
            self._send_failed(e)

    def _enqueue(self, item: Any) -> None:
        if len(self._queue) >= QUEUE_FRAMES:
            self.drops["queue"] += 1
            return
        self._queue.append(item)
        self._wake_writer.set()

    def _send_one(self, frame: bytes) -> None:
        """Hand one frame to the kernel; raise BlockingIOError when it is full."""
        raise NotImplementedError

    def _send_failed(self, e: OSError) -> None:
        self.drops["error"] += 1
        self.log.debug("port %s: send failed: %s", self.name, e)

    def _writable_fd(self) -> Any:
        raise NotImplementedError

    async def _writer(self) -> None:
        """Drains the queue whenever the socket says it is writable again."""
        queue = self._queue
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while queue:
                try:
                    self._send_one(queue[0])
                except (BlockingIOError, InterruptedError):
                    await trio.lowlevel.wait_writable(self._writable_fd())
                    continue
                except OSError as e:
                    self._send_failed(e)
                queue.popleft()

    def _drop_queue(self) -> None:
        self._queue.clear()


class DatagramPort(Port):
    """A port speaking one frame per datagram on an already bound socket.

    Shared by udp, unixgram and VDE client ports. ``peer_addr`` is where
    frames go; when None, it is learnt from the first datagram received.
    """

    def __init__(self, name: str, settings: Any, host: PortHost,
                 log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.sock: socket.socket | None = None
        self.peer_addr: Any = None
        self.learn_peer = True
        self.connected = False  # a connected socket sends with send(), not sendto()

    @property
    def address(self) -> str | None:
        return _fmt(self.sock.getsockname()) if self.sock is not None else None

    @property
    def peer(self) -> str | None:
        return _fmt(self.peer_addr) if self.peer_addr is not None else None

    def _send_one(self, frame: bytes) -> None:
        assert self.sock is not None
        if self.connected:
            self.sock.send(frame)
        else:
            self.sock.sendto(frame, self.peer_addr)

    def _writable_fd(self) -> Any:
        return self.sock

    def _send_failed(self, e: OSError) -> None:
        # ECONNREFUSED: the peer's socket is gone for now (a VM restarting).
        self.drops["error"] += 1
        self.log.debug("port %s: send to %s failed: %s", self.name, self.peer, e)

    async def _serve_socket(self) -> None:
        """Receive plus writer; returns only by cancellation."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            await self._receive()

    def _readable_fd(self) -> Any:
        return self.sock

    def _drain(self) -> int:
        sock = self.sock
        assert sock is not None
        recvfrom = sock.recvfrom
        frames: list[bytes] = []
        try:
            while len(frames) < RECV_BATCH:
                data, addr = recvfrom(MAX_FRAME)
                if addr != self.peer_addr and self.learn_peer:
                    self._learn(addr)
                frames.append(data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:  # ECONNREFUSED from an earlier send: keep going
            self.log.debug("port %s: receive: %s", self.name, e)
        if frames:
            self.host.deliver(self.name, frames)
        return len(frames)

    def _learn(self, addr: Any) -> None:
        if not self.learn_peer or addr in (None, "", b""):
            return
        if addr != self.peer_addr:
            self.log.info("port %s: peer is %s", self.name, _fmt(addr))
            self.peer_addr = addr
        self.set_link(True)

    def _closed(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.set_link(False)


def _fmt(addr: Any) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(addr, bytes):
        return addr.decode(errors="replace")
    return str(addr)
