# The supervisor and each child process talk over one unix SOCK_SEQPACKET
# socketpair: requests, answers and one-way messages as pickled plain values,
# with open file descriptors (an accepted iSCSI connection, a capture's stream)
# riding along as SCM_RIGHTS.  Both ends are our own code, so pickle is fine.
"""A message channel between the supervisor and a child process (Trio)."""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import socket
from collections.abc import Callable
from typing import Any

import trio

# One record carries at most this much of a message (a record must fit the
# socket buffer); longer messages go as several records, the last marked.
RECORD_MAX = 48 * 1024
MORE, LAST = b"\x00", b"\x01"
# Descriptors one message may carry.
MAX_FDS = 8
CALL, REPLY, CAST = "call", "reply", "cast"


class ChannelClosed(Exception):
    """The process at the other end is gone (or closed its end)."""


class RemoteError(Exception):
    """The other end raised while answering a call; the message is its error."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected ends: keep one, give the other to the child (inheritable)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.set_inheritable(False)
    b.set_inheritable(True)
    return a, b


class Channel:
    """Messages (any picklable value) and descriptors over a SEQPACKET socket.

    One task may receive; any number may send (a lock keeps each message's
    records together).  Descriptors received are the caller's to close.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._send_lock = trio.Lock()
        self.closed = False

    async def send(self, message: Any, fds: tuple[int, ...] | list[int] = ()) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        records = [data[i:i + RECORD_MAX] for i in range(0, len(data), RECORD_MAX)] or [b""]
        async with self._send_lock:
            for k, chunk in enumerate(records):
                last = k == len(records) - 1
                await self._send_record((LAST if last else MORE) + chunk,
                                        list(fds) if last else [])

    async def _send_record(self, record: bytes, fds: list[int]) -> None:
        while True:
            if self.closed:
                raise ChannelClosed("the channel is closed")
            try:
                if fds:
                    socket.send_fds(self.sock, [record], fds)
                else:
                    self.sock.send(record)
                return
            except (BlockingIOError, InterruptedError):
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except trio.ClosedResourceError:
                    raise ChannelClosed("the channel was closed") from None
            except OSError as e:  # EPIPE, ECONNRESET: the other end is gone
                raise ChannelClosed(str(e)) from None

    async def receive(self) -> tuple[Any, list[int]]:
        """The next message and the descriptors it carried.

        Raises:
            ChannelClosed: the other end closed or died.
        """
        parts: list[bytes] = []
        fds: list[int] = []
        while True:
            try:
                data, got, _flags, _addr = socket.recv_fds(self.sock, RECORD_MAX + 1, MAX_FDS)
            except (BlockingIOError, InterruptedError):
                try:
                    await trio.lowlevel.wait_readable(self.sock)
                except trio.ClosedResourceError:
                    raise ChannelClosed("the channel was closed") from None
                continue
            except OSError as e:
                raise ChannelClosed(str(e)) from None
            fds += got
            if not data:
                for fd in fds:
                    os.close(fd)
                raise ChannelClosed("the other end closed the channel")
            parts.append(data[1:])
            if data[:1] == LAST:
                return pickle.loads(b"".join(parts)), fds

    def close(self) -> None:
        """Close this end; a task waiting on it gets ChannelClosed."""
        if not self.closed:
            self.closed = True
            try:
                trio.lowlevel.notify_closing(self.sock)
            except RuntimeError:
                pass  # not inside Trio: nobody can be waiting
            self.sock.close()


class Peer:
    """Calls and one-way messages over a :class:`Channel`, both directions.

    ``handlers`` answer the other end's messages: ``handler(*args, fds=...)``
    for messages that carried descriptors; a handler may be async.  Run
    :meth:`serve` in a task: it dispatches until the channel closes.
    """

    def __init__(self, channel: Channel, handlers: dict[str, Callable[..., Any]] | None = None,
                 log: logging.Logger | None = None) -> None:
        self.channel = channel
        self.handlers = dict(handlers or {})
        self.log = log or logging.getLogger("netstore.processes")
        self._ids = itertools.count(1)
        self._waiting: dict[int, list] = {}  # id -> [event, ok, value]

    async def call(self, name: str, *args: Any, fds: tuple[int, ...] = (),
                   timeout: float | None = None) -> Any:
        """Ask the other end; its handler's answer, or RemoteError.

        Raises:
            ChannelClosed: the other end is gone (also when it dies meanwhile).
            trio.TooSlowError: no answer within `timeout` seconds.
        """
        ident = next(self._ids)
        slot = [trio.Event(), False, None]
        self._waiting[ident] = slot
        try:
            await self.channel.send((CALL, ident, name, args), fds)
            if timeout is None:
                await slot[0].wait()
            else:
                with trio.fail_after(timeout):
                    await slot[0].wait()
        finally:
            self._waiting.pop(ident, None)
        if slot[1] is None:
            raise ChannelClosed(slot[2])
        if not slot[1]:
            raise RemoteError(slot[2])
        return slot[2]

    async def cast(self, name: str, *args: Any, fds: tuple[int, ...] = ()) -> None:
        """Tell the other end, expecting no answer."""
        await self.channel.send((CAST, 0, name, args), fds)

    async def serve(self, nursery: trio.Nursery) -> None:
        """Dispatch incoming messages until the channel closes (then return)."""
        try:
            while True:
                (kind, ident, name, payload), fds = await self.channel.receive()
                if kind == REPLY:
                    slot = self._waiting.get(ident)
                    if slot is not None:
                        slot[1], slot[2] = name, payload
                        slot[0].set()
                    continue
                nursery.start_soon(self._answer, kind, ident, name, payload, fds)
        except ChannelClosed as e:
            for slot in self._waiting.values():
                slot[1], slot[2] = None, f"the other process is gone ({e})"
                slot[0].set()

    async def _answer(self, kind: str, ident: int, name: str, args: tuple,
                      fds: list[int]) -> None:
        handler = self.handlers.get(name)
        try:
            if handler is None:
                raise RemoteError(f"no such request {name!r}")
            result = handler(*args, fds=fds) if fds else handler(*args)
            if hasattr(result, "__await__"):
                result = await result
            ok = True
        except Exception as e:
            for fd in fds if handler is None else ():
                os.close(fd)
            if kind == CAST:
                self.log.exception("handling %s failed", name)
                return
            ok, result = False, str(e) or type(e).__name__
        if kind == CALL:
            try:
                await self.channel.send((REPLY, ident, ok, result))
            except ChannelClosed:
                pass
