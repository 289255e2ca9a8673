# netstore/switch/capture.py - packet capture of a switch's frames: writers for
# classic pcap and pcapng, a Capture that filters frames from a Switch tap and
# stops after a count or a duration, and a bounded record queue for streaming
# a capture live (`netstore capture sw0 -w - | tshark -r -`). Pure apart from
# os.write on a descriptor the caller hands over or that open_capture() opens.
#
# Crash safety: every record (pcap: 16-byte header + data; pcapng: one whole
# block) is built complete in memory and handed to the sink in ONE call; on a
# descriptor that is ONE os.write(2) on an O_APPEND file. write(2) to a regular
# file is not split by ordinary signals, so a daemon that dies leaves complete
# records only, and tshark/scapy read the file to its last record. (The one
# gap: Linux checks for SIGKILL between the pages of a write, so a kill -9
# landing inside the syscall for a record that straddles a page boundary could
# in theory leave part of it; a power cut can too, as with any file.) Batching
# (batch_bytes > 0) keeps that: a batch is whole records, still one write.
"""pcap / pcapng writers, Capture (a Switch tap with filters and limits), RecordQueue."""

from __future__ import annotations

import os
import struct
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "Capture",
    "CaptureWriter",
    "PcapWriter",
    "PcapngWriter",
    "RecordQueue",
    "open_capture",
]

# libpcap's file format (pcap-savefile(5)); tcpdump.org/linktypes.html.
PCAP_MAGIC_US = 0xA1B2C3D4  # microsecond timestamps
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
# libpcap's MAXIMUM_SNAPLEN: tcpdump and Wireshark refuse larger snap lengths
# in some versions, and the largest frame here (a 65535-byte MTU) fits.
SNAPLEN = 262144
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")

# pcapng (draft-ietf-opsawg-pcapng): block types, option codes.
BT_SHB, BT_IDB, BT_EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION = 2, 3
EPB_FLAGS = 2
# epb_flags bits 0-1: 01 inbound, 10 outbound (as seen from the interface).
EPB_INBOUND, EPB_OUTBOUND = 0b01, 0b10
_DIRECTION_FLAGS = {"rx": EPB_INBOUND, "tx": EPB_OUTBOUND}

FORMATS = ("pcap", "pcapng")
# Stream mode: frames queued for a slow reader before new ones are dropped.
QUEUE_MAX_BYTES = 4 << 20
# Default batching when asked for it: a write per this many bytes or this delay.
BATCH_BYTES = 64 << 10
BATCH_DELAY_S = 0.2

Sink = Callable[[bytes], "bool | None"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # only pipes and sockets write short; a regular file takes it whole
        view = view[os.write(fd, view) :]


def _sink(target: int | BinaryIO | Sink) -> tuple[Sink, Callable[[], None] | None]:
    """(write one chunk of whole records, flush or None) for a fd, file object or callable."""
    if isinstance(target, int):
        return (lambda data: _write_all(target, data)), None
    if hasattr(target, "write"):
        try:
            fd = target.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            target.flush()  # whatever it buffered goes before our records
            return (lambda data: _write_all(fd, data)), None
        return target.write, getattr(target, "flush", None)
    if callable(target):
        return target, None
    raise TypeError(f"a capture target is a fd, a binary file or a callable, not {target!r}")


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


class CaptureWriter:
    """What both formats share: a sink, optional batching, counts, close.

    Args:
        target: a file descriptor (not closed unless ``owns_fd``), a binary
            file object (its descriptor is used when it has one), or a
            callable taking bytes (returning False if it could not take them,
            e.g. a full RecordQueue).
        snaplen: frames are cut to this many bytes (the original length kept).
        clock: wall-clock seconds for timestamps (``time.time``).
        owns_fd: close ``target`` with the writer (a descriptor, or a sink
            with a ``close()`` such as a CaptureFile).
        batch_bytes: 0 writes each record at once; otherwise records are
            gathered and written when this many bytes wait or when the oldest
            waited ``max_delay_s`` (checked on each record and by ``tick()``,
            which the shell calls about once a second).
    """

    format = ""

    def __init__(
        self,
        target: int | BinaryIO | Sink,
        *,
        snaplen: int = SNAPLEN,
        clock: Callable[[], float] = time.time,
        batch_bytes: int = 0,
        max_delay_s: float = BATCH_DELAY_S,
        owns_fd: bool = False,
    ) -> None:
        self._sink, self._flush_target = _sink(target)
        self._fd = target if owns_fd and isinstance(target, int) else None
        # A sink of its own to close with the writer (a CaptureFile).
        self._owned_sink = target if owns_fd and not isinstance(target, int) else None
        self.snaplen = snaplen
        self._clock = clock
        self._batch_bytes = batch_bytes
        self._max_delay_s = max_delay_s
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self.records = 0  # packet records taken
        self.dropped = 0  # packet records a sink refused (a full stream queue)
        self.closed = False

    def write_frame(self, port: str, direction: str, frame: bytes, ts: float | None = None,
                    comment: str | None = None) -> None:
        """Record one frame seen on ``port`` ("rx" or "tx"); ``ts`` defaults to
        now; ``comment`` (pcapng only) is shown by Wireshark with the packet."""
        raise NotImplementedError

    def tick(self) -> None:
        """Write batched records that waited longer than the bounded delay;
        raise the error an owned sink met writing on its own (a full disk)."""
        error = getattr(self._owned_sink, "error", None)
        if error is not None:
            raise error
        if self._pending and time.monotonic() - self._pending_since >= self._max_delay_s:
            self.flush()

    def flush(self) -> None:
        """Write whatever is batched, as one write of whole records."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._put(data)
        if self._flush_target is not None:
            self._flush_target()

    def close(self) -> None:
        """Flush, and close the descriptor if this writer opened it."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            if self._fd is not None:
                os.close(self._fd)
            if self._owned_sink is not None:
                self._owned_sink.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # A record that must not be lost or split from what follows (headers, IDBs)
    # is put straight through; a refusal is reported to the caller.
    def _put(self, data: bytes) -> bool:
        return self._sink(data) is not False

    def _record(self, data: bytes) -> None:
        if self._batch_bytes <= 0:
            if self._put(data):
                self.records += 1
            else:
                self.dropped += 1
            return
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.records += 1
        if (
            self._pending_bytes >= self._batch_bytes
            or time.monotonic() - self._pending_since >= self._max_delay_s
        ):
            self.flush()

    def _timestamp(self, ts: float | None) -> int:
        """Microseconds since the epoch."""
        return int(round((self._clock() if ts is None else ts) * 1_000_000))


class PcapWriter(CaptureWriter):
    """Classic pcap: magic a1b2c3d4 (µs), version 2.4, linktype 1 (Ethernet).

    The file header is written at once. Ports and directions are not
    recorded (the format has no place for them; use pcapng for that).
    """

    format = "pcap"

    def __init__(self, target: int | BinaryIO | Sink, **kw: Any) -> None:
        super().__init__(target, **kw)
        header = _PCAP_HEADER.pack(
            PCAP_MAGIC_US, *PCAP_VERSION, 0, 0, self.snaplen, LINKTYPE_ETHERNET
        )
        if not self._put(header):
            raise OSError("the capture sink refused the pcap file header")

    def write_frame(self, port: str, direction: str, frame: bytes, ts: float | None = None,
                    comment: str | None = None) -> None:
        self.write(frame, ts)

    def write(self, frame: bytes, ts: float | None = None) -> None:
        """One record: header and data in a single write."""
        us = self._timestamp(ts)
        data = frame[: self.snaplen]
        rec = _PCAP_RECORD.pack(us // 1_000_000, us % 1_000_000, len(data), len(frame))
        self._record(rec + bytes(data))


class PcapngWriter(CaptureWriter):
    """pcapng: a Section Header Block, one Interface Description Block per port
    (if_name = the port's name), Enhanced Packet Blocks with the interface id,
    µs timestamps and the direction in epb_flags.

    Ports may appear at any time: a new one gets its IDB just before its first
    packet (pcapng allows IDBs anywhere in a section).
    """

    format = "pcapng"

    def __init__(
        self,
        target: int | BinaryIO | Sink,
        ports: Iterable[str] = (),
        *,
        description: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(target, **kw)
        self.description = description  # e.g. the switch's name, in every IDB
        self._ids: dict[str, int] = {}
        shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)  # section length unknown
        shb += _option(SHB_USERAPPL, b"netstore") + _option(OPT_ENDOFOPT, b"")
        if not self._put(_block(BT_SHB, shb)):
            raise OSError("the capture sink refused the pcapng section header")
        for name in ports:
            self.add_port(name)

    @property
    def interfaces(self) -> list[str]:
        """Port names in interface-id order."""
        return list(self._ids)

    def add_port(self, name: str) -> int | None:
        """Write the IDB for ``name`` (once); its interface id, or None if the sink refused."""
        if name in self._ids:
            return self._ids[name]
        opts = _option(IF_NAME, name.encode())
        if self.description:
            opts += _option(IF_DESCRIPTION, f"{self.description} port {name}".encode())
        opts += _option(OPT_ENDOFOPT, b"")
        idb = _block(BT_IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, self.snaplen) + opts)
        self.flush()  # the IDB follows every record written before it
        if not self._put(idb):
            return None
        self._ids[name] = len(self._ids)
        return self._ids[name]

    def write_frame(self, port: str, direction: str, frame: bytes, ts: float | None = None,
                    comment: str | None = None) -> None:
        iface = self._ids.get(port)
        if iface is None:
            iface = self.add_port(port)
            if iface is None:
                self.dropped += 1
                return
        us = self._timestamp(ts)
        data = bytes(frame[: self.snaplen])
        body = struct.pack("<IIIII", iface, us >> 32, us & 0xFFFFFFFF, len(data), len(frame))
        body += data + b"\0" * (-len(data) % 4)
        flags = _DIRECTION_FLAGS.get(direction)
        opts = b""
        if comment:
            opts += _option(OPT_COMMENT, comment.encode())
        if flags is not None:
            opts += _option(EPB_FLAGS, struct.pack("<I", flags))
        if opts:
            body += opts + _option(OPT_ENDOFOPT, b"")
        self._record(_block(BT_EPB, body))


def format_for(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The capture format: ``format`` if given, else from the suffix (.pcapng), else pcap."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"capture format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    return "pcapng" if str(path).endswith((".pcapng", ".ntar")) else "pcap"


def open_capture(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    ports: Iterable[str] = (),
    description: str | None = None,
    **kw: Any,
) -> CaptureWriter:
    """A writer on a new file at ``path`` (replaced if it exists), opened O_APPEND,
    mode 0600 (captures hold whatever crossed the switch); closing the writer
    closes it. Raises OSError if the file cannot be created."""
    fmt = format_for(path, format)
    fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        if fmt == "pcapng":
            return PcapngWriter(fd, ports, description=description, owns_fd=True, **kw)
        return PcapWriter(fd, owns_fd=True, **kw)
    except BaseException:
        os.close(fd)
        raise


class RecordQueue:
    """A bounded queue of whole records for streaming a capture to a slow reader.

    Use it as a writer's target; a Trio task drains it (``take()``) and sends
    the bytes on. When ``max_bytes`` wait, new chunks are refused (the writer
    counts them as dropped) rather than blocking the switch; a chunk into an
    empty queue is always taken, so file headers always get through.
    ``on_data`` is called when the queue goes from empty to not empty (set an
    event there).
    """

    def __init__(
        self, max_bytes: int = QUEUE_MAX_BYTES, on_data: Callable[[], None] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.on_data = on_data
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self.refused = 0

    def __call__(self, data: bytes) -> bool:
        if self._chunks and self._bytes + len(data) > self.max_bytes:
            self.refused += 1
            return False
        was_empty = not self._chunks
        self._chunks.append(data)
        self._bytes += len(data)
        if was_empty and self.on_data is not None:
            self.on_data()
        return True

    def __len__(self) -> int:
        return self._bytes

    def take(self) -> bytes:
        """Everything queued (whole records), emptying the queue."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._bytes = 0
        return data


class Capture:
    """A Switch tap that writes chosen frames to a writer until a limit.

    Args:
        writer: a PcapWriter or PcapngWriter.
        ports: capture only these ports (None: all).
        directions: "rx", "tx" or both. Capturing every port in both
            directions records a forwarded frame twice (in on one port, out on
            another), as capturing on every interface of a host does.
        count: stop after this many frames written (``--count``); frames the
            writer's sink refused (a full RecordQueue) do not count.
        duration: stop this many seconds after the start (``--duration``);
            checked on each frame and by ``poll()``, so the shell should call
            ``poll()`` by ``deadline`` even if no frame comes.
        clock: monotonic seconds, for the duration.
        close_writer: close the writer when the capture stops.

    A write error (disk full, reader gone: BrokenPipeError) stops the capture
    and is kept in ``error``; it is never raised into the switch.
    """

    def __init__(
        self,
        writer: CaptureWriter,
        *,
        ports: Collection[str] | None = None,
        directions: Collection[str] = ("rx", "tx"),
        count: int | None = None,
        duration: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        close_writer: bool = True,
    ) -> None:
        bad = set(directions) - {"rx", "tx"}
        if bad:
            raise ValueError(f"capture directions are rx and tx, not {sorted(bad)}")
        if count is not None and count < 1:
            raise ValueError(f"capture count must be at least 1, got {count}")
        if duration is not None and duration <= 0:
            raise ValueError(f"capture duration must be positive, got {duration}")
        self.writer = writer
        self.ports = frozenset(ports) if ports is not None else None
        self.directions = frozenset(directions)
        self.count = count
        self._clock = clock
        self.deadline = clock() + duration if duration is not None else None
        self._close_writer = close_writer
        self.captured = 0
        self.stopped = False
        self.error: OSError | None = None
        self._switches: list[Any] = []
        self._on_stop: list[Callable[[Capture], None]] = []
        if isinstance(writer, PcapngWriter) and self.ports is not None:
            for name in sorted(self.ports):  # interfaces up front, in a stable order
                writer.add_port(name)

    def attach(self, switch: Any) -> Capture:
        """Tap ``switch`` (a core Switch) until the capture stops; returns self."""
        switch.add_tap(self)
        self._switches.append(switch)
        return self

    def on_stop(self, fn: Callable[[Capture], None]) -> None:
        """Call ``fn(capture)`` once when the capture stops (limit, error or stop())."""
        self._on_stop.append(fn)

    def __call__(self, port: str, direction: str, frame: bytes,
                 comment: str | None = None) -> None:
        """One frame seen (``comment``: why an impaired link dropped it; such
        frames go to pcapng only, classic pcap has nowhere to say so)."""
        if self.stopped:
            return
        if comment is not None and self.writer.format != "pcapng":
            return
        if self.ports is not None and port not in self.ports:
            return
        if direction not in self.directions:
            return
        if self.deadline is not None and self._clock() >= self.deadline:
            self.stop()
            return
        refused = self.writer.dropped
        try:
            self.writer.write_frame(port, direction, frame, comment=comment)
        except OSError as e:
            self.error = e
            self.stop()
            return
        if self.writer.dropped != refused:
            return  # left out (a full stream queue): --count N means N frames written
        self.captured += 1
        if self.count is not None and self.captured >= self.count:
            self.stop()

    def poll(self) -> bool:
        """Stop if the duration is over; flush due batches. True while still capturing."""
        if not self.stopped:
            if self.deadline is not None and self._clock() >= self.deadline:
                self.stop()
            else:
                try:
                    self.writer.tick()
                except OSError as e:
                    self.error = e
                    self.stop()
        return not self.stopped

    def stop(self) -> None:
        """Stop capturing: untap, flush (and close) the writer, tell on_stop listeners."""
        if self.stopped:
            return
        self.stopped = True
        for sw in self._switches:
            sw.remove_tap(self)
        self._switches.clear()
        try:
            if self._close_writer:
                self.writer.close()
            else:
                self.writer.flush()
        except OSError as e:
            self.error = self.error or e
        for fn in self._on_stop:
            fn(self)
