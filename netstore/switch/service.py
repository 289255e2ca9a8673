# netstore/switch/service.py - the Trio shell of one learning switch: it owns
# the switch's ports (sockets, TAP devices, VDE directories), feeds every frame
# they receive to the pure core (Switch.receive) and hands each (egress port,
# frame) pair to that port's non-blocking send. It also runs the MAC aging
# ticker, applies configuration reloads, and runs capture sessions.
"""The switch service of the daemon: one per ``[[switches]]`` entry."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio

from netstore.impairments import Flap, Impairment
from netstore.poller import Poller
from netstore.switch.capture import (
    Capture,
    CaptureWriter,
    PcapngWriter,
    PcapWriter,
    format_for,
)
from netstore.switch.capturefile import CaptureFile
from netstore.switch.core import PortSettings, Switch
from netstore.switch.frames import mac_text
from netstore.switch.links import Links
from netstore.switch.offload import (
    F_NEEDS_CSUM,
    MERGE_MIN,
    OFFLOAD_ERRORS,
    VNET_HDR,
    VNET_HDR_LEN,
    TcpMerge,
    segment,
)
from netstore.switch.ports import Port, make_port
from netstore.switch.sessions import CaptureSession, LiveCapture
from netstore.switch.spec import PortSpec, SwitchSpec

__all__ = ["CaptureSession", "LiveCapture", "SwitchService", "SwitchServiceError"]

# How often aged MAC entries are swept (the core expects about once a second).
EXPIRE_INTERVAL_S = 1.0
# Batches of at least this many frames use the core's batch_receiver (setting
# it up costs more than it saves on fewer).
BATCHED = 4


class SwitchServiceError(Exception):
    """A switch cannot start as configured (an address in use, no TAP device)."""


class SwitchService:
    """One learning switch and its ports.

    Args:
        config: the ``[[switches]]`` entry.
        log: where port events and refusals go.
        clock: monotonic seconds; the service gives the core its time from it
            (once per batch of frames, once per tick), the core reads no clock.
    """

    def __init__(self, config: SwitchSpec, log: logging.Logger | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self.log = log or logging.getLogger(f"netstore.switch.{config.name}")
        self.clock = clock
        self.switch = Switch(config.name, aging_s=config.mac_aging_s,
                             table_size=config.mac_table_size, now=clock())
        # Every port by name: configured ones and the dynamic VDE clients.
        self.ports: dict[str, Port] = {}
        self._configured: dict[str, PortSpec] = {}
        self._done: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.captures: dict[int, Any] = {}
        self._capture_ids = 0
        self.started = time.time()
        self.links = Links(self, config.seed, self.log)
        # The receiving side of the datagram and TAP ports (the Trio run's one).
        self.poller: Poller | None = None

    # -- PortHost: what ports call -------------------------------------------------
    def deliver(self, port: str, frames: list[bytes]) -> None:
        """Forward frames received on ``port`` (through its inbound link if impaired)."""
        sw = self.switch
        sw.now = self.clock()  # one time for the batch: the kernel had them all
        if port in self.links.inbound:
            frames = self.links.admit(port, frames, sw.now)
        self.forward(port, frames)

    def forward(self, port: str, frames: list[bytes]) -> None:
        """Frames entering the switch on ``port`` at the core's ``now``."""
        sw = self.switch
        receive = sw.receive
        rx = sw.batch_receiver(port) if len(frames) >= BATCHED else None
        ports = self.ports
        for frame in frames:
            for egress, out in receive(port, frame) if rx is None else rx(frame):
                p = ports.get(egress)
                if p is not None:
                    p.send(out)

    def deliver_vnet(self, port: str, bufs: list[bytes]) -> None:
        """Forward frames, each behind its virtio-net header, from a TAP port.

        A real frame (no GSO, no partial checksum) goes as in ``deliver``. An
        offloaded one (a TCP segment up to 64 KiB, or a partial checksum)
        crosses whole to TAP ports with headers: the core decides on its first
        segment's worth of bytes (learning, VLANs and the MTU apply per
        segment) and the rest follows untouched. To any other port, and while a
        capture runs, it is segmented and checksummed in software first.
        """
        hl = VNET_HDR_LEN
        if port in self.links.inbound:  # its frames' fates are decided one by one
            frames: list[bytes] = []
            for buf in bufs:
                if not buf[0] & F_NEEDS_CSUM and not buf[1]:
                    frames.append(buf[hl:])
                    continue
                try:
                    frames.extend(segment(buf, buf[hl:]))
                except OFFLOAD_ERRORS:
                    self.switch.count_drop(port, "offload")
            self.deliver(port, frames)
            return
        sw = self.switch
        sw.now = self.clock()
        receive = sw.receive
        rx = sw.batch_receiver(port) if len(bufs) >= BATCHED else None
        ports = self.ports
        # Real TCP segments of one flow read in this batch and bound for a TAP
        # with headers leave as one GSO frame (TcpMerge), by egress port.
        merges: dict[str, TcpMerge] = {}
        stale = False
        for buf in bufs:
            if not buf[0] & F_NEEDS_CSUM and not buf[1]:
                if stale:
                    rx = sw.batch_receiver(port)
                    stale = False
                f = buf[hl:]
                for egress, out in receive(port, f) if rx is None else rx(f):
                    p = ports.get(egress)
                    if p is None:
                        continue
                    if p.vnet and p.egress is None:
                        if merges:
                            m = merges.get(egress)
                            if m is not None:
                                if m.add(out):
                                    continue
                                del merges[egress]
                                m.flush()
                        if len(out) >= MERGE_MIN:
                            m = TcpMerge.start(p, out)
                            if m is not None:
                                merges[egress] = m
                                continue
                    p.send(out)
                continue
            if merges:  # frames keep their order
                for m in merges.values():
                    m.flush()
                merges.clear()
            stale = rx is not None  # what follows may change the MAC table
            try:
                if sw._taps:  # a capture sees real frames only
                    self.deliver(port, segment(buf, buf[hl:]))
                    continue
                flags, gso_type, hdr_len, gso_size, cs, co = VNET_HDR.unpack_from(buf)
                if gso_type:
                    if gso_type & 0x7F not in (1, 4) or not gso_size:  # TCPV4, TCPV6 only
                        raise ValueError(f"GSO type {gso_type}")
                    head = buf[hl : hl + cs + (buf[hl + cs + 12] >> 4) * 4 + gso_size]
                else:
                    head = buf[hl:]
                rest = len(buf) - hl - len(head)
                for egress, out in receive(port, head):
                    p = ports.get(egress)
                    if p is None:
                        continue
                    if rest:  # the core counted the first segment's bytes only
                        sw._ports[egress].counters.tx_bytes += rest
                    if p.vnet and out is head:
                        p.send_vnet(buf)  # type: ignore[attr-defined]
                        continue
                    d = len(out) - len(head)  # an 802.1Q tag added (+4) or stripped (-4)
                    h = VNET_HDR.pack(flags, gso_type, max(0, hdr_len + d), gso_size, cs + d, co)
                    if p.vnet:
                        p.send_vnet(h, out, buf[hl + len(head) :])  # type: ignore[attr-defined]
                    else:
                        for f in segment(h, out + buf[hl + len(head) :]):
                            p.send(f)
                if rest:
                    sw._ports[port].counters.rx_bytes += rest
            except OFFLOAD_ERRORS:
                sw.count_drop(port, "offload")
        for m in merges.values():
            m.flush()

    def _update_offloads(self) -> None:
        """TAP offloads on while two or more ports are TAPs with virtio-net headers
        and nothing captures; off otherwise (the kernel then segments and
        checksums before the switch reads).

        An impaired link turns them off too: its fates (loss, corruption, the
        rate) are per real frame. Other ports (udp, stream, vde, a plain TAP) do
        not turn them off: TAP to
        TAP traffic crosses whole, and deliver_vnet segments in software only
        what leaves through a port without headers. A single TAP keeps them off:
        all it sends goes to such ports, and the kernel segments faster.
        """
        fwd = [p for p in self.ports.values() if p.forwards]
        on = (sum(1 for p in fwd if p.vnet) >= 2 and not self.switch._taps
              and not self.links.impaired)  # impaired links decide frame by frame
        for p in fwd:
            if p.vnet and p.offloaded != on:  # type: ignore[attr-defined]
                p.set_offload(on)  # type: ignore[attr-defined]

    def link_changed(self, port: str, up: bool) -> None:
        p = self.ports.get(port)
        if p is not None and p.forwards:
            try:
                self.switch.set_link(port, up and not self.links.is_down(port))
            except KeyError:
                pass

    def attach(self, port: Port) -> None:
        self.switch.add_port(port.settings)
        self.switch.set_link(port.name, port.link_up)
        self.ports[port.name] = port
        self._update_offloads()

    def detach(self, port: Port) -> None:
        if self.ports.get(port.name) is port:
            del self.ports[port.name]
            self.links.forget(port.name)
            try:
                self.switch.remove_port(port.name)
            except KeyError:
                pass
            self._update_offloads()

    # -- serving --------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Open every port, report the listening addresses, serve until cancelled.

        Raises:
            SwitchServiceError: a port could not be opened (nothing stays open).
        """
        opened: list[tuple[PortSpec, Port]] = []
        try:
            for pc in self.config.ports:
                opened.append((pc, self._open(pc)))
        except SwitchServiceError:
            for _, p in opened:
                p._closed()
            raise
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.poller = Poller.current()
            for pc, port in opened:
                self._start(pc, port)
            nursery.start_soon(self._expire_ticker)
            nursery.start_soon(self.links.run)
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
                self.poller = None
                for session in list(self.captures.values()):
                    session.stop("switch stopped")

    def _open(self, pc: PortSpec) -> Port:
        """Make and bind the port of ``pc`` now, so errors surface synchronously."""
        try:
            settings = PortSettings.from_spec(pc)
            port = make_port(pc, settings, self, self.log)
            port.open()  # type: ignore[attr-defined]
        except (OSError, ValueError) as e:
            what = getattr(e, "strerror", None) or e
            raise SwitchServiceError(
                f"switch {self.name}: port {pc.name} ({pc.kind}): {what}") from e
        return port

    def _start(self, pc: PortSpec, port: Port) -> None:
        assert self._nursery is not None
        if port.forwards:
            self.switch.add_port(port.settings)
            self.switch.set_link(port.name, False)  # up when the port says so
        self.ports[port.name] = port
        self._configured[port.name] = pc
        done = self._done[port.name] = trio.Event()
        self._nursery.start_soon(self._run_port, port, done)
        if port.forwards:
            self.links.apply_spec(port.name, pc)
        self._update_offloads()

    async def _run_port(self, port: Port, done: trio.Event) -> None:
        try:
            await port.run()
        except Exception:
            self.log.exception("switch %s: port %s failed; it is closed", self.name, port.name)
        finally:
            done.set()
            if self.ports.get(port.name) is port:
                del self.ports[port.name]
                self.links.forget(port.name)
                if port.forwards:
                    try:
                        self.switch.remove_port(port.name)
                    except KeyError:
                        pass
                self._update_offloads()

    async def _expire_ticker(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL_S)
            self.switch.tick(self.clock())
            self._update_offloads()  # captures come and go
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
    def reconfigure(self, config: SwitchSpec) -> None:
        """Apply a new configuration of this switch: ports added, removed or changed.

        Ports whose settings did not change keep running (their peers notice
        nothing); the rest is applied by a task within moments, errors logged.
        """
        old = self.config
        self.config = config
        self.switch.table.aging_s = config.mac_aging_s
        self.switch.table.size = config.mac_table_size
        self.links.seed = config.seed  # for links set from now on
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

    async def _apply_ports(self, config: SwitchSpec) -> None:
        wanted = {pc.name: pc for pc in config.ports}
        for name, pc in list(self._configured.items()):
            new = wanted.get(name)
            if new is not None and new != pc and _same_port(new, pc) and name in self.ports:
                self.links.apply_spec(name, new)  # only its links changed: in place
                self._configured[name] = new
                self.log.info("switch %s: port %s links changed", self.name, name)
                continue
            if new != pc:
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
        sw.now = self.clock()  # ages as of this call
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
            mirrored: dict[str, list[str]] = {}
            for p in self.ports.values():
                if p.forwards and p.settings is not None and p.settings.mirror_to:
                    mirrored.setdefault(p.settings.mirror_to, []).append(p.name)
            for p in self.ports.values():
                row = p.describe()
                s = p.settings
                if s is not None:
                    row.update(vlan=s.vlan, trunk=sorted(s.trunk) if s.trunk else None,
                               native=s.native, mtu=s.mtu, mirror_to=s.mirror_to,
                               mirror_of=mirrored.get(p.name, []), max_macs=s.max_macs,
                               bound_mac=mac_text(s.bound_mac) if s.bound_mac else None,
                               storm_pps=s.storm_pps)
                if p.forwards:
                    row["impair"] = self.links.describe(p.name)
                    if self.links.is_down(p.name):
                        row["link"] = "down"
                    c = sw.counters(p.name)
                    drops = dict(c.drops)
                    for cause, n in p.drops.items():
                        drops[cause] = drops.get(cause, 0) + n
                    row.update(rx_frames=c.rx_frames, rx_bytes=c.rx_bytes,
                               tx_frames=c.tx_frames, tx_bytes=c.tx_bytes, drops=drops)
                rows.append(row)
            out["ports"] = rows
        if macs:
            out["macs"] = rows = []
            for vlan, mac, port, age in sw.macs():
                row = {"vlan": vlan, "mac": mac_text(mac), "port": port, "age_s": round(age, 1)}
                vtep_of = getattr(self.ports.get(port), "vtep_of", None)
                if vtep_of is not None:  # a vxlan port: which remote VTEP it is behind
                    row["vtep"] = vtep_of(vlan, mac)
                rows.append(row)
        return out

    # -- links ------------------------------------------------------------------------
    def impairment(self, port: str, direction: str) -> Impairment | None:
        """The impairment of one direction ("in" or "out") of ``port``, if any."""
        return self.links.impairment(port, direction)

    def set_impairment(self, port: str, direction: str, imp: Impairment | None) -> None:
        """Impair (or, with None, clear) one direction of ``port`` at once;
        nothing else is dropped. Raises ValueError for an unknown port or direction."""
        self.links.set_impairment(port, direction, imp)

    def set_admin(self, port: str, up: bool) -> None:
        """Set ``port``'s link down (nothing crosses either way) or up again."""
        self.links.set_admin(port, up)

    def set_flap(self, port: str, flap: Flap | None) -> None:
        """Flap ``port``'s link on a schedule (None: stop)."""
        self.links.set_flap(port, flap)

    def link_show(self) -> list[dict[str, Any]]:
        """One row per forwarding port: kind, link state, impairments and counters."""
        rows = []
        for name, p in self.ports.items():
            if not p.forwards:
                continue
            down = self.links.is_down(name)
            rows.append({"port": name, "kind": p.kind,
                         "link": "down" if down or not p.link_up else "up",
                         **self.links.describe(name)})
        return rows

    # -- capture ----------------------------------------------------------------------
    def start_capture(self, *, path: str | None = None, port: str | None = None,
                      fmt: str | None = None, count: int | None = None,
                      duration: float | None = None,
                      sink: Callable[[bytes], bool | None] | None = None) -> CaptureSession:
        """Start capturing to the file ``path`` or to ``sink`` (a callable taking
        whole records, e.g. a RecordQueue).

        ``fmt`` is pcap or pcapng; for a file it defaults to pcapng when the
        name ends in .pcapng. ``port`` limits the capture to one port, both
        directions. Without it the capture is the whole switch as a SPAN of
        every port's ingress: each frame once, as it enters (before VLAN
        checks, tagging and flooding), on the pcapng interface of the port it
        entered by; frames sent out are not recorded again.

        Raises:
            ValueError: an unknown port or format, a count or duration out of range.
            OSError: the file cannot be created.
        """
        if port is not None and port not in self.ports:
            raise ValueError(f"switch {self.name} has no port {port!r}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ValueError(f"count must be a positive whole number, got {count!r}")
        if duration is not None and (isinstance(duration, bool)
                                     or not isinstance(duration, int | float)
                                     or not 0 < duration < math.inf):
            raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
        fmt = format_for(path or "", fmt)
        # pcapng: the interfaces known now, in port order; later ones (VDE
        # clients) get theirs when they first carry a frame.
        names = [port] if port is not None else [
            n for n, p in self.ports.items() if p.forwards]
        writer: CaptureWriter
        if path is not None:
            file = CaptureFile(path)  # written by its own thread, never on this loop
            try:
                writer = (PcapngWriter(file, names, description=self.name, owns_fd=True)
                          if fmt == "pcapng" else PcapWriter(file, owns_fd=True))
            except BaseException:
                file.close()
                raise
        elif sink is None:
            raise ValueError("a capture needs a file or a sink")
        elif fmt == "pcapng":
            writer = PcapngWriter(sink, names, description=self.name)
        else:
            writer = PcapWriter(sink)
        capture = Capture(writer, ports=None if port is None else (port,),
                          directions=("rx",) if port is None else ("rx", "tx"),
                          count=count, duration=duration)
        self._capture_ids += 1
        session = CaptureSession(self, self._capture_ids, capture, port=port, fmt=fmt,
                                 duration=duration, to=path or "control socket",
                                 from_config=path is not None and path == self.config.capture)
        self.captures[session.id] = session
        capture.attach(self.switch)
        self.log.info("switch %s: capture %d started (%s, %s, %s)", self.name, session.id,
                      session.target, fmt, session.to)
        return session

    def _capture_ended(self, session: CaptureSession) -> None:
        self.captures.pop(session.id, None)

    def capture_stream(self, *, port: str | None = None, fmt: str = "pcap",
                       count: int | None = None, duration: float | None = None) -> LiveCapture:
        """A live capture: a header, then whole records as they come (the daemon
        sends them on the control socket).

        Raises:
            ValueError: as for start_capture.
        """
        live = LiveCapture()
        session = self.start_capture(port=port, fmt=fmt, count=count, duration=duration,
                                     sink=live.queue)
        live.session = session
        live.header = {"capture": session.target, "format": session.fmt, "count": count,
                       "duration": duration}
        return live

    async def aclose(self) -> None:
        """Stop every port and capture (files flushed)."""
        for session in list(self.captures.values()):
            session.stop("switch stopped")
        self.captures.clear()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


def _same_port(a: PortSpec, b: PortSpec) -> bool:
    """True if two specs of a port differ at most in their links (impairments,
    link state, flap), which apply without reopening the port."""
    def bare(s: PortSpec) -> PortSpec:
        return dataclasses.replace(s, impair_in=None, impair_out=None, link="up", flap=None)
    return bare(a) == bare(b)
