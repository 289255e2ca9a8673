# netstore/switch/ports/stream.py - a port on a TCP or unix stream connection,
# each frame behind a 4-byte big-endian length, as QEMU's `-netdev stream` and
# `-netdev socket,listen=..|connect=..` frame them (net/stream.c, net/socket.c).
# The peer may come and go: the port's link is down while it is away; in
# connect mode the port dials again with a growing backoff.
"""Stream ports: ``listen`` or ``connect`` on ``host:port`` or a unix socket path."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Any

import trio

from netstore.addresses import is_socket_path, parse_portal
from netstore.switch.ports.base import RECV_BATCH, Port, PortHost
from netstore.switch.ports.unixgram import _remove_stale_socket

__all__ = ["MAX_STREAM_FRAME", "StreamPort"]

# The largest length prefix accepted; QEMU's NET_BUFSIZE (4096 + 65536) is the
# most its stream backends send. A bigger one is a broken or hostile peer: the
# connection is dropped rather than the stream read as garbage.
MAX_STREAM_FRAME = 65536 + 4096
# One read takes what the kernel has, up to this many bytes.
RECV_SIZE = 256 * 1024
# Connect mode: first retry after this, doubling up to RETRY_MAX_S.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0
_LEN = struct.Struct(">I")


class StreamPort(Port):
    """A stream port; exactly one of ``listen``/``connect`` is set.

    A listening port serves one peer at a time: while one is connected, a
    second connection is refused (closed) and logged.
    """

    kind = "stream"

    def __init__(self, name: str, settings: Any, host: PortHost, *, listen: str | None = None,
                 connect: str | None = None, log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        if (listen is None) == (connect is None):
            raise ValueError("a stream port needs exactly one of listen or connect")
        self.listen_addr = listen
        self.connect_addr = connect
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self._peer: str | None = None
        self.connections = 0  # peers served so far (status)

    @property
    def address(self) -> str | None:
        if self.listener is None:
            return None
        name = self.listener.getsockname()
        if isinstance(name, tuple):
            return f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
        return str(name)

    @property
    def peer(self) -> str | None:
        return self._peer

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["mode"] = "listen" if self.listen_addr else "connect"
        if self.connect_addr:
            d["address"] = self.connect_addr
        d["connections"] = self.connections
        return d

    def open(self) -> None:
        """Listen mode: bind and listen now (raises OSError)."""
        if self.listen_addr is None or self.listener is not None:
            return
        addr = self.listen_addr
        if is_socket_path(addr):
            _remove_stale_socket(addr)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = addr
        else:
            host, port = parse_portal(addr)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                 socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            target = (host, port)
        try:
            sock.bind(target)
            sock.listen(4)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.listener = sock

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            if self.listen_addr is not None:
                self.open()
                task_status.started(self.address)
                await self._accept_loop()
            else:
                task_status.started(None)
                await self._connect_loop()

    def _closed(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if self.listen_addr and is_socket_path(self.listen_addr):
                try:
                    _remove_stale_socket(self.listen_addr)
                except OSError:
                    pass
        self.set_link(False)

    # -- peers --------------------------------------------------------------------
    async def _accept_loop(self) -> None:
        listener = self.listener
        assert listener is not None
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    sock, addr = listener.accept()
                except (BlockingIOError, InterruptedError):
                    await trio.lowlevel.wait_readable(listener)
                    continue
                except OSError as e:  # EMFILE and friends: keep listening
                    self.log.error("port %s: accept failed: %s", self.name, e)
                    await trio.sleep(0.1)
                    continue
                peer = _peer_name(addr, sock)
                if not self.admin_up:
                    self.log.info("port %s: refusing %s, the link is down", self.name, peer)
                    sock.close()
                    continue
                if self.conn is not None:
                    self.log.warning("port %s: refusing %s, %s is connected", self.name, peer,
                                     self._peer)
                    sock.close()
                    continue
                nursery.start_soon(self._serve_peer, sock, peer)

    async def _connect_loop(self) -> None:
        addr = self.connect_addr
        assert addr is not None
        delay = RETRY_MIN_S
        while True:
            if not self.admin_up:  # the link is down: dial again once it is up
                await trio.sleep(RETRY_MIN_S)
                continue
            if is_socket_path(addr):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: Any = addr
            else:
                host, port = parse_portal(addr)
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                     socket.SOCK_STREAM)
                target = (host, port)
            sock.setblocking(False)
            err = sock.connect_ex(target)
            if err in (errno.EINPROGRESS, errno.EAGAIN):
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sock.close()
                if delay == RETRY_MIN_S:
                    self.log.info("port %s: cannot connect to %s (%s); retrying", self.name,
                                  addr, errno.errorcode.get(err, err))
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            await self._serve_peer(sock, addr)
            await trio.sleep(RETRY_MIN_S)

    def set_admin(self, up: bool) -> None:
        """Down: the peer's connection is closed (it sees the end of the
        stream) and no other is taken until the link is up again."""
        super().set_admin(up)
        if not up and self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)  # the receive loop sees the end
            except OSError:
                pass

    async def _serve_peer(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = sock
        self._peer = peer
        self.connections += 1
        self.log.info("port %s: peer %s connected", self.name, peer)
        self.set_link(True)
        try:
            reason = await self._receive_loop(sock)
            self.log.info("port %s: peer %s %s", self.name, peer, reason)
        finally:
            self.conn = None
            self._peer = None
            self._drop_queue()
            self.set_link(False)
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _receive_loop(self, sock: socket.socket) -> str:
        """Read frames until the peer leaves; returns why it ended (for the log)."""
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        start = end = 0  # unparsed bytes are buf[start:end]
        unpack = _LEN.unpack_from
        deliver = self.host.deliver
        name = self.name
        while True:
            if start == end:
                start = end = 0
            elif end == len(buf):
                # A partial frame at the end: move it to the front. RECV_SIZE is
                # larger than any accepted frame, so it then fits.
                view[: end - start] = view[start:end]
                end -= start
                start = 0
            try:
                n = sock.recv_into(view[end:])
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as e:
                return f"lost: {e.strerror or e}"
            if not n:
                return "disconnected"
            end += n
            frames: list[bytes] = []
            while end - start >= 4:
                (length,) = unpack(buf, start)
                if length > MAX_STREAM_FRAME:
                    if frames:  # those before it were good
                        deliver(name, frames)
                    self.drops["oversize_prefix"] += 1
                    self.log.warning("port %s: peer %s sent a length prefix of %d bytes (at "
                                     "most %d); connection dropped", name, self._peer, length,
                                     MAX_STREAM_FRAME)
                    return "dropped (oversize length prefix)"
                if end - start - 4 < length:
                    break
                if length:
                    frames.append(bytes(view[start + 4 : start + 4 + length]))
                start += 4 + length
                if len(frames) >= RECV_BATCH:
                    deliver(name, frames)
                    frames = []
            if frames:
                deliver(name, frames)
            await trio.lowlevel.checkpoint()

    # -- sending ------------------------------------------------------------------
    def transmit(self, frame: bytes) -> None:
        if self.conn is None:
            self.drops["no_peer"] += 1
            return
        super().transmit(frame)

    def _send_one(self, frame: Any) -> None:
        # A fresh frame is bytes; a queued one is [length+frame, bytes sent].
        conn = self.conn
        if conn is None:
            raise OSError(errno.ENOTCONN, "no peer")
        if isinstance(frame, list):
            data, off = frame
            sent = conn.send(memoryview(data)[off:])
            if off + sent < len(data):
                frame[1] = off + sent
                raise BlockingIOError
            return
        data = _LEN.pack(len(frame)) + frame
        sent = conn.send(data)
        if sent < len(data):
            # The rest must go before any other frame: it heads the queue.
            self._queue.appendleft([data, sent])
            self._wake_writer.set()

    def _enqueue(self, item: Any) -> None:
        if isinstance(item, bytes | bytearray | memoryview):
            item = [_LEN.pack(len(item)) + bytes(item), 0]
        super()._enqueue(item)

    def _writable_fd(self) -> Any:
        return self.conn

    async def _writer(self) -> None:
        queue = self._queue
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while queue and self.conn is not None:
                conn = self.conn
                try:
                    self._send_one(queue[0])
                except (BlockingIOError, InterruptedError):
                    try:
                        await trio.lowlevel.wait_writable(conn)
                    except trio.ClosedResourceError:
                        break
                    continue
                except OSError as e:
                    self._send_failed(e)
                queue.popleft()


def _peer_name(addr: Any, sock: socket.socket) -> str:
    if isinstance(addr, tuple):
        return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
    return addr or f"unix:{sock.fileno()}"
