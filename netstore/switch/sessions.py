# netstore/switch/sessions.py - the capture sessions of a switch service: a
# CaptureSession (a Capture tapping the core, and where its records go) and a
# LiveCapture (one streamed to a reader through a bounded queue).
"""CaptureSession and LiveCapture of the switch service."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from netstore.switch.capture import Capture, RecordQueue

if TYPE_CHECKING:
    from netstore.switch.service import SwitchService

__all__ = ["CaptureSession", "LiveCapture"]


class LiveCapture:
    """A capture streamed to a reader: ``header`` (JSON-able), then ``await
    produce(send)`` calls ``await send(bytes)`` with whole records until the
    capture ends (count, duration, stop) or ``send`` raises (the reader left);
    ``close()`` stops the capture, however the stream ended.

    Records wait in a bounded RecordQueue; when a slow reader lets it fill,
    new frames are left out of the capture (counted), the switch never waits.
    """

    def __init__(self) -> None:
        self._event = trio.Event()
        self.queue = RecordQueue(on_data=self._wake)
        self.header: dict[str, Any] = {}
        self.session: CaptureSession | None = None

    def _wake(self) -> None:
        self._event.set()

    async def produce(self, send: Callable[[bytes], Any]) -> None:
        session = self.session
        assert session is not None
        session.capture.on_stop(lambda _capture: self._wake())
        with trio.move_on_after(session.duration or math.inf):
            while True:
                self._event = trio.Event()
                data = self.queue.take()
                if data:
                    await send(data)
                elif session.finished:
                    return
                else:
                    await self._event.wait()

    def close(self) -> None:
        if self.session is not None:
            self.session.stop("stream ended")


class CaptureSession:
    """One capture of a switch: a Capture (writer, filters, limits) tapping the
    core, and where its records go (a file, or a live stream)."""

    def __init__(self, service: SwitchService, id_: int, capture: Capture, *,
                 port: str | None, fmt: str, duration: float | None, to: str,
                 from_config: bool) -> None:
        self.service = service
        self.id = id_
        self.capture = capture
        self.port = port
        self.fmt = fmt
        self.to = to
        self.from_config = from_config
        self.target = service.name + (f":{port}" if port else "")
        self.duration = duration
        self._why = "stopped"
        capture.on_stop(self._ended)

    @property
    def finished(self) -> bool:
        return self.capture.stopped

    @property
    def frames(self) -> int:
        """Frames recorded so far."""
        return self.capture.captured

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "target": self.target, "format": self.fmt, "to": self.to,
                "frames": self.frames, "left_out": self.capture.writer.dropped}

    def tick(self) -> None:
        """Called about once a second: ends a capture whose duration is over."""
        self.capture.poll()

    def stop(self, why: str = "stopped") -> None:
        """End the capture (idempotent); a file is closed with every record in it."""
        if not self.finished:
            self._why = why
            self.capture.stop()

    def _ended(self, capture: Capture) -> None:
        self.service._capture_ended(self)
        why = self._why
        if capture.error is not None:
            why = f"write failed: {capture.error}"
            self.service.log.error("switch %s: capture %d to %s: %s", self.service.name,
                                   self.id, self.to, capture.error)
        elif capture.count is not None and capture.captured >= capture.count:
            why = "count reached"
        elif capture.deadline is not None and time.monotonic() >= capture.deadline:
            why = "duration reached"
        self.service.log.info("switch %s: capture %d ended (%s): %d frame(s)",
                              self.service.name, self.id, why, capture.captured)
