# netstore/switch/service.py - the Trio shell of one learning switch: it owns
# the switch's ports (sockets, TAP devices, VDE directories), feeds every frame
# they receive to the pure core (Switch.receive) and hands each (egress port,
# frame) pair to that port's non-blocking send. It also runs the MAC aging
# ticker, applies configuration reloads, and runs capture sessions.
"""The switch service of the daemon: one per ``[[switches]]`` entry."""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from typing import Any

import trio

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.control import ControlError, Streaming
from netstore.switch.core import PortSettings, Switch
from netstore.switch.frames import mac_text
from netstore.switch.ports import Port, make_port

__all__ = ["SwitchService", "SwitchServiceError"]

# How often aged MAC entries are swept (the core expects about once a second).
EXPIRE_INTERVAL_S = 1.0
# A live capture holds at most this many bytes for a slow reader; beyond it
# frames are left out of the capture (counted), never the switch slowed down.
STREAM_BUFFER = 8 << 20
CAPTURE_SNAPLEN = 262144  # tcpdump's default


class SwitchServiceError(Exception):
    """A switch cannot start as configured (an address in use, no TAP device)."""


class SwitchService:
    """One learning switch and its ports.

    Args:
        config: the ``[[switches]]`` entry.
        log: where port events and refusals go.
    """

    def __init__(self, config: SwitchConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.name = config.name
        self.log = log or logging.getLogger(f"netstore.switch.{config.name}")
        self.switch = Switch(config.name, aging_s=config.mac_aging_s,
                             table_size=config.mac_table_size)
        # Every port by name: configured ones and the dynamic VDE clients.
        self.ports: dict[str, Port] = {}
        self._configured: dict[str, SwitchPortConfig] = {}
        self._done: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.captures: dict[int, Any] = {}
        self._capture_ids = 0
        self.started = time.time()

    # -- PortHost: what ports call -------------------------------------------------
    def deliver(self, port: str, frames: list[bytes]) -> None:
        """Forward frames received on ``port``."""
        receive = self.switch.receive
        ports = self.ports
        for frame in frames:
            for egress, out in receive(port, frame):
                p = ports.get(egress)
                if p is not None:
                    p.send(out)

    def link_changed(self, port: str, up: bool) -> None:
        p = self.ports.get(port)
        if p is not None and p.forwards:
            try:
                self.switch.set_link(port, up)
            except KeyError:
                pass

    def attach(self, port: Port) -> None:
        self.switch.add_port(port.settings)
        self.switch.set_link(port.name, port.link_up)
        self.ports[port.name] = port

    def detach(self, port: Port) -> None:
        if self.ports.get(port.name) is port:
            del self.ports[port.name]
            try:
                self.switch.remove_port(port.name)
            except KeyError:
                pass

    # -- serving --------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Open every port, report the listening addresses, serve until cancelled.

        Raises:
            SwitchServiceError: a port could not be opened (nothing stays open).
        """
        opened: list[tuple[SwitchPortConfig, Port]] = []
        try:
            for pc in self.config.ports:
                opened.append((pc, self._open(pc)))
        except SwitchServiceError:
            for _, p in opened:
                p._closed()
            raise
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for pc, port in opened:
                self._start(pc, port)
            nursery.start_soon(self._expire_ticker)
            if self.config.capture:
                try:
                    self.start_capture(path=self.config.capture)
                except (OSError, ValueError) as e:
                    self.log.error("switch %s: cannot capture to %s: %s", self.name,
                                   self.config.capture, e)
            task_status.started(self.listening())
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for session in list(self.captures.values()):
                    session.stop("switch stopped")

    def _open(self, pc: SwitchPortConfig) -> Port:
        """Make and bind the port of ``pc`` now, so errors surface synchronously."""
        try:
            settings = PortSettings.from_config(pc)
            port = make_port(pc, settings, self, self.log)
            port.open()  # type: ignore[attr-defined]
        except (OSError, ValueError) as e:
            what = getattr(e, "strerror", None) or e
            raise SwitchServiceError(
                f"switch {self.name}: port {pc.name} ({pc.kind}): {what}") from e
        return port

    def _start(self, pc: SwitchPortConfig, port: Port) -> None:
        assert self._nursery is not None
        if port.forwards:
            self.switch.add_port(port.settings)
            self.switch.set_link(port.name, False)  # up when the port says so
        self.ports[port.name] = port
        self._configured[port.name] = pc
        done = self._done[port.name] = trio.Event()
        self._nursery.start_soon(self._run_port, port, done)

    async def _run_port(self, port: Port, done: trio.Event) -> None:
        try:
            await port.run()
        except Exception:
            self.log.exception("switch %s: port %s failed; it is closed", self.name, port.name)
        finally:
            done.set()
            if self.ports.get(port.name) is port:
                del self.ports[port.name]
                if port.forwards:
                    try:
                        self.switch.remove_port(port.name)
                    except KeyError:
                        pass

    async def _expire_ticker(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL_S)
            self.switch.expire()
            for session in list(self.captures.values()):
                session.tick()

    def listening(self) -> list[tuple[str, str, str]]:
        """(port, kind, address) of every configured port a peer can reach."""
        out = []
        for name in self._configured:
            p = self.ports.get(name)
            if p is not None and p.address is not None:
                out.append((name, p.kind, p.address))
        return out

    # -- reconfiguration ------------------------------------------------------------
    def reconfigure(self, config: SwitchConfig) -> None:
        """Apply a new configuration of this switch: ports added, removed or changed.

        Ports whose settings did not change keep running (their peers notice
        nothing); the rest is applied by a task within moments, errors logged.
        """
        old = self.config
        self.config = config
        self.switch.table.aging_s = config.mac_aging_s
        self.switch.table.size = config.mac_table_size
        if config.capture != old.capture:
            for sid, session in list(self.captures.items()):
                if session.from_config:
                    session.stop("capture setting changed")
                    self.captures.pop(sid, None)
            if config.capture:
                try:
                    self.start_capture(path=config.capture)
                except (OSError, ValueError) as e:
                    self.log.error("switch %s: cannot capture to %s: %s", self.name,
                                   config.capture, e)
        if self._nursery is not None:
            self._nursery.start_soon(self._apply_ports, config)

    async def _apply_ports(self, config: SwitchConfig) -> None:
        wanted = {pc.name: pc for pc in config.ports}
        for name, pc in list(self._configured.items()):
            if wanted.get(name) != pc:
                port = self.ports.get(name)
                del self._configured[name]
                if port is not None:
                    port.close()
                    for child in [p for p in self.ports if p.startswith(name + ".")]:
                        self.ports[child].close()
                    with trio.move_on_after(5):
                        await self._done[name].wait()
                self.log.info("switch %s: port %s removed", self.name, name)
        for pc in config.ports:
            if pc.name in self._configured:
                continue
            try:
                port = self._open(pc)
            except SwitchServiceError as e:
                self.log.error("%s; the port is left out", e)
                continue
            if self._nursery is None:
                port._closed()
                return
            self._start(pc, port)
            self.log.info("switch %s: port %s (%s) added", self.name, pc.name, pc.kind)

    # -- status -----------------------------------------------------------------------
    def status(self, *, macs: bool = True, ports: bool = True) -> dict[str, Any]:
        """JSON-able view: ports with kind, link and counters; the MAC table."""
        sw = self.switch
        out: dict[str, Any] = {
            "name": self.name,
            "mac_aging_s": sw.aging_s,
            "mac_table_size": sw.table_size,
            "mac_count": len(sw.table),
            "port_count": sum(1 for p in self.ports.values() if p.forwards),
            "captures": [s.describe() for s in self.captures.values()],
        }
        if ports:
            rows = []
            for p in self.ports.values():
                row = p.describe()
                s = p.settings
                if s is not None:
                    row.update(vlan=s.vlan, trunk=sorted(s.trunk) if s.trunk else None,
                               native=s.native, mtu=s.mtu)
                if p.forwards:
                    c = sw.counters(p.name)
                    drops = dict(c.drops)
                    for cause, n in p.drops.items():
                        drops[cause] = drops.get(cause, 0) + n
                    row.update(rx_frames=c.rx_frames, rx_bytes=c.rx_bytes,
                               tx_frames=c.tx_frames, tx_bytes=c.tx_bytes, drops=drops)
                rows.append(row)
            out["ports"] = rows
        if macs:
            out["macs"] = [
                {"vlan": vlan, "mac": mac_text(mac), "port": port, "age_s": round(age, 1)}
                for vlan, mac, port, age in sw.macs()
            ]
        return out

    # -- capture ----------------------------------------------------------------------
    def start_capture(self, *, path: str | None = None, port: str | None = None,
                      fmt: str | None = None, count: int | None = None,
                      duration: float | None = None, sink: Any = None) -> CaptureSession:
        """Start capturing to ``path`` (or a ``sink`` with ``write(bytes)``).

        ``fmt`` is pcap or pcapng; for a file it defaults to pcapng when the
        name ends in .pcapng. ``port`` limits the capture to one port (both
        directions); without it every frame is captured once, as it enters.

        Raises:
            ValueError: an unknown port or format.
            OSError: the file cannot be created.
        """
        if port is not None and port not in self.ports:
            raise ValueError(f"switch {self.name} has no port {port!r}")
        if fmt is None:
            fmt = "pcapng" if path and path.endswith(".pcapng") else "pcap"
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"capture format {fmt!r}: expected pcap or pcapng")
        self._capture_ids += 1
        session = CaptureSession(self, self._capture_ids, port=port, fmt=fmt, count=count,
                                 duration=duration, path=path, sink=sink,
                                 from_config=path is not None and path == self.config.capture)
        self.captures[session.id] = session
        self.switch.add_tap(session.tap)
        self.log.info("switch %s: capture %d started (%s%s, %s)", self.name, session.id,
                      self.name, f":{port}" if port else "", session.to)
        return session

    def _capture_ended(self, session: CaptureSession) -> None:
        self.switch.remove_tap(session.tap)
        self.captures.pop(session.id, None)

    def capture_stream(self, *, port: str | None = None, fmt: str = "pcap",
                       count: int | None = None, duration: float | None = None) -> Streaming:
        """A live capture for the control socket: header, then records as they come."""
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ControlError(f"count must be a positive whole number, got {count!r}")
        if duration is not None and (not isinstance(duration, int | float) or duration <= 0):
            raise ControlError(f"duration must be a positive number of seconds, got {duration!r}")
        buffer = _StreamSink()
        try:
            session = self.start_capture(port=port, fmt=fmt, count=count, sink=buffer)
        except ValueError as e:
            raise ControlError(str(e)) from None

        async def produce(send: Any) -> None:
            with trio.move_on_after(duration if duration else math.inf):
                while True:
                    data = buffer.take()
                    if data:
                        await send(data)
                    elif session.finished:
                        return
                    else:
                        await buffer.wait()

        header = {"capture": session.target, "format": fmt, "count": count,
                  "duration": duration}
        return Streaming(header, produce, cleanup=lambda: session.stop("stream ended"))

    async def aclose(self) -> None:
        """Stop every port and capture (files flushed)."""
        for session in list(self.captures.values()):
            session.stop("switch stopped")
        self.captures.clear()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


class _StreamSink:
    """Bytes waiting for a live capture's reader; bounded by STREAM_BUFFER."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._event = trio.Event()
        self.overflow = 0

    def room(self, n: int) -> bool:
        return self._size + n <= STREAM_BUFFER

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return data

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class _FileSink:
    """A capture file written one whole record per write(): a killed daemon leaves
    a readable file (complete records only)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def room(self, n: int) -> bool:
        return True

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wake(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.fd)


# Classic pcap (magic a1b2c3d4, version 2.4, linktype 1 = Ethernet) and pcapng
# (SHB, one IDB per port, EPB with the direction in epb_flags).
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, CAPTURE_SNAPLEN, 1)
_PCAP_RECORD = struct.Struct("<IIII")
_DIRECTION = {"rx": 1, "tx": 2}  # epb_flags bits 0-1: inbound, outbound


def _pcapng_block(kind: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    total = 12 + len(body) + pad
    return struct.pack("<II", kind, total) + body + b"\0" * pad + struct.pack("<I", total)


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((-len(value)) % 4)


class CaptureSession:
    """One capture on a switch: a tap writing pcap or pcapng records to a sink."""

    def __init__(self, service: SwitchService, id_: int, *, port: str | None, fmt: str,
                 count: int | None, duration: float | None, path: str | None, sink: Any,
                 from_config: bool) -> None:
        self.service = service
        self.id = id_
        self.port = port
        self.fmt = fmt
        self.count = count
        self.deadline = time.monotonic() + duration if duration else None
        self.from_config = from_config
        self.to = path or "control socket"
        self.target = service.name + (f":{port}" if port else "")
        self.frames = 0
        self.left_out = 0
        self.finished = False
        self._interfaces: dict[str, int] = {}
        self.sink = _FileSink(path) if path else sink
        if fmt == "pcap":
            self.sink.write(_PCAP_HEADER)
        else:
            shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            shb += _pcapng_option(4, b"netstore") + _pcapng_option(0, b"")
            self.sink.write(_pcapng_block(0x0A0D0D0A, shb))

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "target": self.target, "format": self.fmt, "to": self.to,
                "frames": self.frames, "left_out": self.left_out}

    def tap(self, port: str, direction: str, frame: bytes) -> None:
        """The switch's capture hook."""
        if self.finished:
            return
        if self.port is None:
            if direction != "rx":  # a whole-switch capture shows each frame once
                return
        elif port != self.port:
            return
        now = time.time()
        snap = bytes(frame[:CAPTURE_SNAPLEN])
        if self.fmt == "pcap":
            sec = int(now)
            record = _PCAP_RECORD.pack(sec, int((now - sec) * 1e6), len(snap), len(frame)) + snap
        else:
            record = self._interface(port) + self._epb(port, direction, now, snap, len(frame))
        if not self.sink.room(len(record)):
            self.left_out += 1
            return
        self.sink.write(record)
        self.frames += 1
        if self.count is not None and self.frames >= self.count:
            self.stop("count reached")

    def _interface(self, port: str) -> bytes:
        if port in self._interfaces:
            return b""
        self._interfaces[port] = len(self._interfaces)
        idb = struct.pack("<HHI", 1, 0, CAPTURE_SNAPLEN)
        idb += _pcapng_option(2, f"{self.service.name}:{port}".encode())
        idb += _pcapng_option(9, b"\x06") + _pcapng_option(0, b"")  # if_tsresol: microseconds
        return _pcapng_block(1, idb)

    def _epb(self, port: str, direction: str, now: float, snap: bytes, length: int) -> bytes:
        ts = int(now * 1e6)
        body = struct.pack("<IIIII", self._interfaces[port], ts >> 32, ts & 0xFFFFFFFF,
                           len(snap), length) + snap + b"\0" * ((-len(snap)) % 4)
        body += _pcapng_option(2, struct.pack("<I", _DIRECTION[direction]))
        body += _pcapng_option(0, b"")
        return _pcapng_block(6, body)

    def tick(self) -> None:
        """Called about once a second: ends a capture whose duration is over."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop("duration reached")

    def stop(self, why: str = "stopped") -> None:
        """End the capture (idempotent); a file is closed with every record in it."""
        if self.finished:
            return
        self.finished = True
        self.service._capture_ended(self)
        if isinstance(self.sink, _FileSink):
            self.sink.close()
        else:
            self.sink.wake()
        self.service.log.info("switch %s: capture %d ended (%s): %d frame(s)",
                              self.service.name, self.id, why, self.frames)
