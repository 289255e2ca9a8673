# netstore/vm/qmp.py - a QMP client (QEMU Machine Protocol, qemu's
# docs/interop/qmp-spec): JSON objects one per line over QEMU's unix socket.
# The server greets with {"QMP": ...}; capabilities negotiation
# (qmp_capabilities) moves it to command mode; each {"execute", "arguments",
# "id"} gets one {"return"} or {"error": {"class", "desc"}} with the same id,
# and asynchronous {"event"} objects may come in between. One reader task
# hands replies to their callers by id and keeps the recent events.
"""A Trio QMP client: execute commands on a running QEMU, see its events."""

from __future__ import annotations

import itertools
import json
from collections import deque
from pathlib import Path
from typing import Any

import trio

__all__ = ["QmpError", "Qmp", "LINE_MAX", "EVENTS_KEPT"]

# No QMP reply netstore asks for is near this; a longer line is a broken peer.
LINE_MAX = 1 << 20
# Recent events kept for `events()` (SHUTDOWN, RESET, STOP, RESUME, ...).
EVENTS_KEPT = 64


class QmpError(Exception):
    """QEMU refused a command (its error class and description), or the
    socket closed or spoke something other than QMP."""

    def __init__(self, message: str, error_class: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class


class Qmp:
    """One QMP connection in command mode; run :meth:`serve` in a nursery."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._send_lock = trio.Lock()
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.closed = trio.Event()
        self._buf = bytearray()

    @classmethod
    async def connect(cls, path: Path, nursery: trio.Nursery) -> Qmp:
        """Connect, read the greeting, negotiate; the reader runs in ``nursery``."""
        stream = await trio.open_unix_socket(str(path))
        qmp = cls(stream)
        try:
            greeting = await qmp._read_object()
            if "QMP" not in greeting:
                raise QmpError(f"{path}: not a QMP greeting: {str(greeting)[:200]}")
            nursery.start_soon(qmp.serve)
            await qmp.execute("qmp_capabilities")
        except BaseException:
            await qmp.aclose()
            raise
        return qmp

    async def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its ``return`` value.  Raises QmpError."""
        if self.closed.is_set():
            raise QmpError(f"QMP connection closed; {command} not sent")
        ident = next(self._ids)
        done = trio.Event()
        slot: list[Any] = []
        self._waiting[ident] = (done, slot)
        msg: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            msg["arguments"] = arguments
        try:
            async with self._send_lock:
                await self._stream.send_all(json.dumps(msg).encode() + b"\n")
            await done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise QmpError(f"QMP connection closed while sending {command}: {e}") from None
        finally:
            self._waiting.pop(ident, None)
        if not slot:
            raise QmpError(f"QMP connection closed before {command} was answered")
        reply = slot[0]
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise QmpError(f"{command}: {err.get('desc', 'refused')}", err.get("class", ""))
        return reply.get("return")

    async def serve(self) -> None:
        """Read replies and events until the socket closes."""
        try:
            while True:
                obj = await self._read_object()
                if "event" in obj:
                    self.events.append(obj)
                    continue
                entry = self._waiting.get(obj.get("id"))  # type: ignore[arg-type]
                if entry is not None:
                    entry[1].append(obj)
                    entry[0].set()
        except (QmpError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._close_waiters()

    async def _read_object(self) -> dict[str, Any]:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError) as e:
                    raise QmpError(f"QMP sent something that is not JSON: {e}") from None
                if not isinstance(obj, dict):
                    raise QmpError("QMP sent a JSON value that is not an object")
                return obj
            if len(self._buf) > LINE_MAX:
                raise QmpError(f"QMP line longer than {LINE_MAX} bytes")
            data = await self._stream.receive_some(65536)
            if not data:
                raise QmpError("QMP connection closed")
            self._buf += data

    def _close_waiters(self) -> None:
        self.closed.set()
        for done, _ in list(self._waiting.values()):
            done.set()

    def seen(self, event: str) -> list[dict[str, Any]]:
        """The recent events named ``event``, oldest first."""
        return [e for e in self.events if e.get("event") == event]

    async def aclose(self) -> None:
        self._close_waiters()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
