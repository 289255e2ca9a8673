# netstore/switch/capturefile.py - a capture file the switch's loop never
# writes itself: records are handed over in memory and a thread of the file's
# own writes them, a batch at a time. A slow or stalled disk then delays the
# file, never the frames (and one write per batch instead of one per frame is
# what lets a capture keep up with a busy link). Records still reach the file
# whole: a batch is whole records in ONE os.write on an O_APPEND descriptor
# (capture.py explains why that keeps a file readable after a crash). They
# reach it MAX_DELAY_S after the first of a batch was captured (so the
# thread wakes at most 1/MAX_DELAY_S times a second), or as soon as
# BATCH_BYTES wait; a crash loses only what was captured in that last moment.
"""CaptureFile: a pcap/pcapng file written by a thread of its own."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path

__all__ = ["BATCH_BYTES", "MAX_DELAY_S", "CaptureFile"]

log = logging.getLogger("netstore.switch.capture")

# A write as soon as this many bytes wait ...
BATCH_BYTES = 256 << 10
# ... and never later than this after the first of them was captured.
MAX_DELAY_S = 0.002
# How long closing waits for the last batch to be written.
CLOSE_WAIT_S = 10.0


class CaptureFile:
    """A new file at ``path`` (replaced if it exists, mode 0600, O_APPEND)
    taking whole records as a capture writer's sink.

    A failed write (a full disk) is kept and raised as OSError by the next
    call, which stops the capture with that error; closing waits for what
    was handed over to be written and closes the file.

    Raises:
        OSError: the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], *, batch_bytes: int = BATCH_BYTES,
                 max_delay_s: float = MAX_DELAY_S) -> None:
        self.path = str(path)
        self._fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                           0o600)
        self._batch_bytes = batch_bytes
        self._max_delay_s = max_delay_s
        self._chunks: deque[bytes] = deque()
        self._since_urgent = 0  # bytes handed over since the writer was last hurried
        self._has_data = threading.Event()
        self._urgent = threading.Event()
        self._closing = False
        self.error: OSError | None = None
        self.written = 0  # bytes on the file
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"capture {Path(path).name}")
        self._thread.start()

    def __call__(self, data: bytes) -> bool:
        """Take whole records (called on the loop; never waits for the disk)."""
        if self.error is not None:
            raise self.error
        if self._closing:
            raise OSError(f"capture file {self.path} is closed")
        chunks = self._chunks
        idle = not chunks
        chunks.append(data)
        if idle:
            self._has_data.set()
        self._since_urgent += len(data)
        if self._since_urgent >= self._batch_bytes:
            self._since_urgent = 0
            self._urgent.set()
        return True

    def close(self) -> None:
        """Write what was handed over, then close the file (waits for that write)."""
        if self._closing:
            return
        self._closing = True
        self._urgent.set()
        self._has_data.set()
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            log.error("capture file %s: the last records are still being written", self.path)
        if self.error is not None:
            raise self.error

    # -- the file's thread ------------------------------------------------------------
    def _run(self) -> None:
        chunks = self._chunks
        try:
            while True:
                self._has_data.wait()
                if not self._closing:
                    self._urgent.wait(self._max_delay_s)
                self._has_data.clear()
                self._urgent.clear()
                parts = []
                while chunks:
                    parts.append(chunks.popleft())
                if parts and self.error is None:
                    self._write(b"".join(parts))
                if self._closing and not chunks:
                    return
        finally:
            os.close(self._fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except OSError as e:
            log.error("capture file %s: %s; the capture stops", self.path, e)
            self.error = e
