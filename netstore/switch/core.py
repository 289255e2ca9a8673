# netstore/switch/core.py - the forwarding core of the learning switch: one
# frame in on a port -> the (port, frame) pairs that go out. Pure (no sockets,
# no Trio, no clock: the shell gives it the time); the port shells in
# switch/ports/ feed it.
#
# The rules (semantics.md section 4, Open vSwitch's NORMAL action where the
# brief leaves a choice):
# - learn (VLAN, source MAC) -> port, never a group (broadcast/multicast)
#   source; flood unknown unicast, broadcast and multicast to every other up
#   port of the VLAN; never send a frame back out of its ingress port.
# - 802.1Q, as OVS vlan_mode=access / native-untagged: an access port carries
#   one VLAN untagged; a frame arriving on it with a tag whose VID is not 0 is
#   dropped ('vlan') even when the VID equals the port's VLAN (OVS vswitch.xml,
#   vlan_mode access); VID 0 (priority-only) is taken as the port's VLAN. A
#   trunk carries tagged frames of its allowed VLANs, and untagged or VID-0
#   frames belong to its native VLAN (dropped when it has none); the native
#   VLAN is allowed implicitly and leaves untagged. Egress adds or strips the
#   tag per port; a re-added tag keeps the arriving PCP and DEI bits.
# - link-local 01-80-C2-00-00-0x (STP, LACP, LLDP...) is never forwarded
#   (802.1D 7.12.6; OVS does the same unless forward_bpdu): dropped 'reserved'.
# - a mirror port (another port's mirror_to) is dedicated, as OVS output_port:
#   it gets only mirror copies and what arrives on it is dropped ('mirror').
#   Copies are the mirrored port's frames as received (before any check, like
#   SPAN rx) and as transmitted, byte for byte.
"""Switch: the pure learning, VLAN-aware forwarding core; PortSettings; PortCounters."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netstore.switch.frames import (
    ETH_ALEN,
    ETH_HLEN,
    RESERVED_LAST,
    RESERVED_PREFIX,
    TPID_8021Q,
    VLAN_HLEN,
    max_frame_len,
    parse_mac,
)
from netstore.switch.limits import (
    DEFAULT_MAC_AGING_S,
    DEFAULT_MAC_TABLE_SIZE,
    DEFAULT_MTU,
    MTU_MAX,
    MTU_MIN,
    VLAN_MAX,
    VLAN_MIN,
)
from netstore.switch.mactable import REORDER_S, MacTable

if TYPE_CHECKING:
    from netstore.switch.spec import PortSpec, SwitchSpec

__all__ = ["PortCounters", "PortSettings", "Switch", "Tap", "DROP_CAUSES"]

# Why frames are dropped; counters use these keys (shells add 'queue' and their own).
DROP_CAUSES = {
    "no_link": "arrived on a port whose link is down",
    "mirror": "arrived on a mirror destination port (it only sends)",
    "runt": "shorter than an Ethernet header (14 bytes, 18 with an 802.1Q tag)",
    "oversize": "longer than the ingress port's MTU + 18 (+4 tagged)",
    "tx_oversize": "longer than the egress port's MTU + 18 (+4 tagged)",
    "vlan": "a VLAN the port does not carry, or a tag on an access port",
    "reserved": "to an 802.1D link-local address (01-80-C2-00-00-0x)",
    "security": "source MAC not allowed on the port (bound_mac / max_macs)",
    "storm": "broadcast/multicast above the port's storm_pps",
    "flap": "source MAC moving between ports too often (damped)",
    "filtered": "destination learnt on the ingress port itself",
    "queue": "the port's send queue was full (counted by the shell)",
}

# A capture hook: (port, "rx"|"tx", frame[, comment]); the comment says why a
# frame that an impaired link dropped was dropped.
Tap = Callable[..., None]
_TAG = struct.Struct("!HH")


@dataclass(frozen=True)
class PortSettings:
    """How one switch port forwards; kind-independent (the shell owns the transport).

    An access port has ``vlan``; a trunk has ``trunk`` (allowed VLANs, any
    iterable is accepted and stored as a frozenset), ``vlan=None`` and an
    optional ``native`` VLAN for its untagged frames. ``bound_mac`` may be given
    as six bytes or as text ``52:54:00:..``.

    Raises:
        ValueError: inconsistent or out-of-range settings (message says which).
    """

    name: str
    vlan: int | None = 1
    trunk: frozenset[int] | None = None
    native: int | None = None
    mtu: int = DEFAULT_MTU
    max_macs: int | None = None
    bound_mac: bytes | None = None
    storm_pps: int | None = None
    mirror_to: str | None = None

    def __post_init__(self) -> None:
        def vid(v: object, what: str) -> None:
            if not isinstance(v, int) or isinstance(v, bool) or not VLAN_MIN <= v <= VLAN_MAX:
                raise ValueError(
                    f"port {self.name}: {what} must be a VLAN {VLAN_MIN}-{VLAN_MAX}, got {v!r}"
                )

        if not self.name:
            raise ValueError("a port needs a name")
        if self.trunk is not None:
            if not isinstance(self.trunk, frozenset):
                object.__setattr__(self, "trunk", frozenset(self.trunk))
            if self.vlan is not None:
                raise ValueError(
                    f"port {self.name}: a trunk port has vlan=None (its untagged VLAN is native)"
                )
            if not self.trunk:
                raise ValueError(f"port {self.name}: a trunk needs at least one allowed VLAN")
            for v in self.trunk:
                vid(v, "each trunk VLAN")
            if self.native is not None:
                vid(self.native, "native")
        else:
            if self.vlan is None:
                raise ValueError(f"port {self.name}: an access port needs vlan, or set trunk")
            vid(self.vlan, "vlan")
            if self.native is not None:
                raise ValueError(f"port {self.name}: native only on a trunk port")
        if not MTU_MIN <= self.mtu <= MTU_MAX:
            raise ValueError(f"port {self.name}: mtu must be {MTU_MIN}-{MTU_MAX}, got {self.mtu}")
        if self.bound_mac is not None:
            mac = self.bound_mac
            if isinstance(mac, str):
                mac = parse_mac(mac)
            mac = bytes(mac)
            if len(mac) != ETH_ALEN or mac[0] & 1:
                raise ValueError(f"port {self.name}: bound_mac must be a unicast MAC")
            object.__setattr__(self, "bound_mac", mac)
        if self.max_macs is not None and self.max_macs < 1:
            raise ValueError(f"port {self.name}: max_macs must be at least 1")
        if self.storm_pps is not None and self.storm_pps < 0:
            raise ValueError(f"port {self.name}: storm_pps must not be negative")
        if self.mirror_to == self.name:
            raise ValueError(f"port {self.name}: cannot mirror to itself")

    @classmethod
    def from_spec(cls, cfg: PortSpec) -> PortSettings:
        """The forwarding settings of one ``[[switches.ports]]`` entry."""
        trunk = frozenset(cfg.trunk) if cfg.trunk else None
        return cls(
            name=cfg.name,
            vlan=None if trunk else cfg.vlan,
            trunk=trunk,
            native=cfg.native if trunk else None,
            mtu=cfg.mtu,
            max_macs=cfg.max_macs,
            bound_mac=cfg.bound_mac,  # text; parsed and checked in __post_init__
            storm_pps=cfg.storm_pps,
            mirror_to=cfg.mirror_to,
        )

    def carries(self, vlan: int) -> bool:
        """True if frames of ``vlan`` may enter and leave this port."""
        if self.trunk is None:
            return vlan == self.vlan
        return vlan == self.native or vlan in self.trunk

    @property
    def untagged_vlan(self) -> int | None:
        """The VLAN this port's untagged frames belong to (access VLAN or native)."""
        return self.vlan if self.trunk is None else self.native


@dataclass(slots=True)
class PortCounters:
    """Per-port counters; rx counts every frame that arrived, dropped or not."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)


class _Port:
    """A port's settings flattened for the hot path, plus its live state."""

    __slots__ = (
        "settings", "name", "up", "counters", "untagged_vlan", "is_access",
        "max_untagged", "max_tagged", "bound_mac", "max_macs", "storm_pps",
        "tokens", "tokens_at", "mirror", "is_mirror_dest", "tap_tx",
    )  # fmt: skip

    def __init__(self, s: PortSettings, now: float) -> None:
        self.settings = s
        self.name = s.name
        self.up = True
        self.counters = PortCounters()
        self.untagged_vlan = s.untagged_vlan
        self.is_access = s.trunk is None
        self.max_untagged = max_frame_len(s.mtu)
        self.max_tagged = max_frame_len(s.mtu, tagged=True)
        self.bound_mac = s.bound_mac
        self.max_macs = s.max_macs
        self.storm_pps = s.storm_pps
        self.tokens = float(s.storm_pps or 0)  # a full bucket: one second's worth
        self.tokens_at = now
        self.mirror: _Port | None = None
        self.is_mirror_dest = False
        self.tap_tx = True  # False: the shell taps what it sends (after an impaired link)


class Switch:
    """A learning, VLAN-aware Ethernet switch core: frames in, (port, frame) pairs out.

    Ports start with their link up. Nothing here blocks or does I/O; a tap
    (capture hook) is called synchronously and must not raise.

    The core reads no clock: ``now`` is its time (monotonic seconds), given by
    the shell. The shell sets the attribute before each batch of frames it
    hands in (an attribute store, not a call per frame) and calls
    ``tick(now)`` about once a second to forget aged MAC entries.
    """

    def __init__(
        self,
        name: str,
        *,
        aging_s: float = DEFAULT_MAC_AGING_S,
        table_size: int = DEFAULT_MAC_TABLE_SIZE,
        now: float = 0.0,
    ) -> None:
        self.name = name
        self.table = MacTable(aging_s=aging_s, size=table_size)
        self.now = now  # the time of what is handed in next (see the class doc)
        self._ports: dict[str, _Port] = {}
        # VLAN -> ports that get its floods, each with "needs a tag" on egress.
        self._flood: dict[int, tuple[tuple[_Port, bool], ...]] = {}
        self._taps: tuple[Tap, ...] = ()

    @classmethod
    def from_spec(cls, cfg: SwitchSpec, *, now: float = 0.0) -> Switch:
        """A switch with the ports of one ``[[switches]]`` entry (links up)."""
        sw = cls(cfg.name, aging_s=cfg.mac_aging_s, table_size=cfg.mac_table_size, now=now)
        for p in cfg.ports:
            sw.add_port(PortSettings.from_spec(p))
        return sw

    @property
    def aging_s(self) -> float:
        return self.table.aging_s

    @property
    def table_size(self) -> int:
        return self.table.size

    # -- ports -------------------------------------------------------------

    def add_port(self, settings: PortSettings) -> None:
        """Add a port, link up. Raises ValueError if the name is taken."""
        if settings.name in self._ports:
            raise ValueError(f"switch {self.name} already has a port {settings.name}")
        self._ports[settings.name] = _Port(settings, self.now)
        self._rebuild()

    def remove_port(self, name: str) -> None:
        """Remove a port and its MAC entries. Raises KeyError for an unknown port."""
        self._port(name)
        del self._ports[name]
        self.table.forget_port(name)
        self._rebuild()

    def set_link(self, name: str, up: bool) -> None:
        """Link up or down; a down port neither receives nor is sent to, and loses its MACs.

        (The Linux bridge flushes a disabled port's entries the same way, so a
        VM that reappears elsewhere is found by flooding at once.)
        """
        p = self._port(name)
        if p.up == up:
            return
        p.up = up
        if not up:
            self.table.forget_port(name)
        self._rebuild()

    def is_up(self, name: str) -> bool:
        """The port's link state."""
        return self._port(name).up

    def ports(self) -> list[PortSettings]:
        """Settings of every port, in the order they were added."""
        return [p.settings for p in self._ports.values()]

    def counters(self, port: str) -> PortCounters:
        """A snapshot of ``port``'s counters. Raises KeyError for an unknown port."""
        c = self._port(port).counters
        return PortCounters(c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, dict(c.drops))

    def count_drop(self, port: str, cause: str, frames: int = 1) -> None:
        """Count drops the shell makes (e.g. 'queue' when a send queue is full)."""
        p = self._ports.get(port)
        if p is not None:
            d = p.counters.drops
            d[cause] = d.get(cause, 0) + frames

    def recount_tx(self, port: str, frames: int, nbytes: int) -> None:
        """Correct what ``port`` sent by what the shell knows better: an
        impaired link that dropped (negative) or duplicated (positive) frames
        the core counted as sent."""
        p = self._ports.get(port)
        if p is not None:
            c = p.counters
            c.tx_frames = max(0, c.tx_frames + frames)
            c.tx_bytes = max(0, c.tx_bytes + nbytes)

    def macs(self) -> list[tuple[int, bytes, str, float]]:
        """Learnt entries as (vlan, mac, port, age seconds at ``now``), sorted by
        VLAN and MAC."""
        return self.table.entries(self.now)

    def tick(self, now: float) -> int:
        """The time is ``now``: forget the MAC entries aged by then and return
        how many (the shell calls this about once a second)."""
        self.now = now
        return self.table.expire(now)

    # -- capture hooks -----------------------------------------------------

    def tap_on_send(self, name: str, shell: bool) -> None:
        """``shell=True``: frames sent out of ``name`` are not tapped here but by
        the shell when they really leave (after the port's impaired link)."""
        self._port(name).tap_tx = not shell

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The capture hooks now set."""
        return self._taps

    def add_tap(self, fn: Tap) -> None:
        """Call ``fn(port, "rx"|"tx", frame)`` for every frame received and sent."""
        self._taps = (*self._taps, fn)

    def remove_tap(self, fn: Tap) -> None:
        """Stop calling ``fn``; removing a tap that is not there does nothing."""
        taps = list(self._taps)
        if fn in taps:
            taps.remove(fn)
        self._taps = tuple(taps)

    # -- forwarding --------------------------------------------------------

    def receive(self, port: str, frame: bytes | memoryview) -> list[tuple[str, bytes]]:
        """One frame in on ``port`` -> the (egress port, frame as it leaves) pairs.

        Tags are added or stripped per egress port; mirror copies are included;
        nothing goes back out of ``port``. A dropped frame is counted on the port
        that dropped it (``DROP_CAUSES``) and yields no pairs (bar mirror copies
        of what arrived). A frame for an unknown port (removed meanwhile) yields
        []. Never raises for any frame content.
        """
        p = self._ports.get(port)
        if p is None:
            return []
        if type(frame) is not bytes:
            frame = bytes(frame)
        n = len(frame)
        c = p.counters
        c.rx_frames += 1
        c.rx_bytes += n
        taps = self._taps
        if taps:
            for fn in taps:
                fn(port, "rx", frame)
        if not p.up:
            return self._drop(p, "no_link", [])
        if p.is_mirror_dest:
            return self._drop(p, "mirror", [])
        if n < ETH_HLEN:
            return self._drop(p, "runt", [])
        out: list[tuple[str, bytes]] = []
        if p.mirror is not None:
            self._copy(out, p.mirror, frame)

        # 802.1Q admission: which VLAN, the untagged form, the tagged form if known.
        tagged: bytes | None = None
        prio = 0
        if frame[12] == 0x81 and frame[13] == 0x00:
            if n < ETH_HLEN + VLAN_HLEN:
                return self._drop(p, "runt", out)
            if n > p.max_tagged:
                return self._drop(p, "oversize", out)
            tci = (frame[14] << 8) | frame[15]
            vlan = tci & 0x0FFF
            prio = tci & 0xF000
            untagged = frame[:12] + frame[16:]
            if vlan == 0:  # priority-only tag: the port's untagged VLAN
                vlan = p.untagged_vlan
                if vlan is None:
                    return self._drop(p, "vlan", out)
            elif p.is_access or not p.settings.carries(vlan):
                return self._drop(p, "vlan", out)
            else:
                tagged = frame
        else:
            if n > p.max_untagged:
                return self._drop(p, "oversize", out)
            vlan = p.untagged_vlan
            if vlan is None:
                return self._drop(p, "vlan", out)
            untagged = frame

        dst = frame[0:6]
        src = frame[6:12]
        group = dst[0] & 1
        if group and dst[5] <= RESERVED_LAST and dst[:5] == RESERVED_PREFIX:
            return self._drop(p, "reserved", out)
        now = self.now
        table = self.table
        if p.bound_mac is not None and src != p.bound_mac:
            return self._drop(p, "security", out)
        if p.max_macs is not None and not self._admits(p, vlan, src, now):
            return self._drop(p, "security", out)
        if group and p.storm_pps is not None:
            rate = p.storm_pps
            tokens = min(float(rate), p.tokens + (now - p.tokens_at) * rate)
            p.tokens_at = now
            if tokens < 1.0:
                p.tokens = tokens
                return self._drop(p, "storm", out)
            p.tokens = tokens - 1.0
        # The table's fast paths inlined (a known host on its own port; a live
        # destination): method calls are a large part of a ~2 µs frame.
        vt = table._vlans.get(vlan)
        e = vt.get(src) if vt is not None else None
        if e is not None and e.port == port and now - e.ordered < REORDER_S:
            e.seen = now
        elif not src[0] & 1 and not table.learn(vlan, src, port, now):
            return self._drop(p, "flap", out)

        if group:
            targets = self._flood.get(vlan, ())
        else:
            e = vt.get(dst) if vt is not None else None
            if e is not None and now - e.seen < table.aging_s:
                where = e.port
            else:
                where = table.lookup(vlan, dst, now)
            if where is None:
                targets = self._flood.get(vlan, ())
            elif where == port:
                return self._drop(p, "filtered", out)
            else:
                q = self._ports[where]
                targets = ((q, q.untagged_vlan != vlan),)
        for q, needs_tag in targets:
            if q is p:
                continue
            if needs_tag:
                if tagged is None:
                    tagged = untagged[:12] + _TAG.pack(TPID_8021Q, prio | vlan) + untagged[12:]
                f = tagged
                if len(f) > q.max_tagged:
                    self._drop(q, "tx_oversize", out)
                    continue
            else:
                f = untagged
                if len(f) > q.max_untagged:
                    self._drop(q, "tx_oversize", out)
                    continue
            out.append((q.name, f))
            qc = q.counters
            qc.tx_frames += 1
            qc.tx_bytes += len(f)
            if taps and q.tap_tx:
                for fn in taps:
                    fn(q.name, "tx", f)
            if q.mirror is not None:
                self._copy(out, q.mirror, f)
        return out

    def batch_receiver(self, port: str) -> Callable[[bytes], list[tuple[str, bytes]]]:
        """``receive`` on ``port`` for the frames of one batch read from it, used
        at once and then dropped (nothing else may touch the switch meanwhile).

        A frame with the same addresses and type as the one before it, which the
        full checks sent untouched to a single port (untagged unicast, no
        mirrors, no capture, no MAC limit), goes the same way again at once and
        is counted the same. Only the full checks change the MAC table, and
        each one sets what the next frames are compared with; the one
        difference is that a source's age is refreshed by the first frame of
        the run, not each (they are microseconds apart).
        """
        receive = self.receive
        p = self._ports.get(port)
        if p is None or self._taps or p.mirror is not None or p.max_macs is not None:
            return lambda frame: receive(port, frame)
        pc = p.counters
        ports = self._ports
        key: bytes | None = None
        hit: list[tuple[str, bytes]] = []
        limit = 0
        qc = pc

        def rx(frame: bytes) -> list[tuple[str, bytes]]:
            nonlocal key, hit, limit, qc
            n = len(frame)
            if key is not None and n <= limit and frame[:14] == key:
                pc.rx_frames += 1
                pc.rx_bytes += n
                qc.tx_frames += 1
                qc.tx_bytes += n
                return [(hit[0][0], frame)]
            out = receive(port, frame)
            key = None
            if len(out) == 1 and n >= ETH_HLEN and not frame[0] & 1 and out[0][1] is frame \
                    and not (frame[12] == 0x81 and frame[13] == 0x00):
                q = ports.get(out[0][0])
                if q is not None and q.mirror is None and not self._taps:
                    key = frame[:14]
                    hit = out
                    limit = min(p.max_untagged, q.max_untagged)
                    qc = q.counters
            return out

        return rx

    # -- internals ---------------------------------------------------------

    def _port(self, name: str) -> _Port:
        try:
            return self._ports[name]
        except KeyError:
            raise KeyError(f"switch {self.name} has no port {name!r}") from None

    @staticmethod
    def _drop(p: _Port, cause: str, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        d = p.counters.drops
        d[cause] = d.get(cause, 0) + 1
        return out

    def _copy(self, out: list[tuple[str, bytes]], m: _Port, f: bytes) -> None:
        """A mirror copy of ``f`` to ``m``, untouched (its limit allows a tag)."""
        if len(f) > m.max_tagged:
            self._drop(m, "tx_oversize", out)
            return
        out.append((m.name, f))
        mc = m.counters
        mc.tx_frames += 1
        mc.tx_bytes += len(f)
        for fn in self._taps:
            fn(m.name, "tx", f)

    def _admits(self, p: _Port, vlan: int, src: bytes, now: float) -> bool:
        """Port security by count: a known source, or room for one more."""
        if src[0] & 1:
            return False  # a group address is never a host's own
        if self.table.lookup(vlan, src, now) == p.name:
            return True
        if self.table.port_count(p.name) < p.max_macs:
            return True
        self.table.expire(now)  # aged entries still counted until swept
        return self.table.port_count(p.name) < p.max_macs

    def _rebuild(self) -> None:
        """Recompute mirror links and per-VLAN flood lists after a port change."""
        ports = self._ports
        dests = {
            p.settings.mirror_to
            for p in ports.values()
            if p.settings.mirror_to is not None and p.settings.mirror_to in ports
        }
        for p in ports.values():
            if p.name in dests and not p.is_mirror_dest:
                self.table.forget_port(p.name)
            p.is_mirror_dest = p.name in dests
        for p in ports.values():
            m = ports.get(p.settings.mirror_to) if p.settings.mirror_to else None
            p.mirror = m if m is not None and m.up else None
        vlans: set[int] = set()
        for p in ports.values():
            s = p.settings
            vlans.update(_vlans_of(s))
        flood: dict[int, tuple[tuple[_Port, bool], ...]] = {}
        for v in sorted(vlans):
            flood[v] = tuple(
                (p, p.untagged_vlan != v)
                for p in ports.values()
                if p.up and not p.is_mirror_dest and p.settings.carries(v)
            )
        self._flood = flood


def _vlans_of(s: PortSettings) -> Iterable[int]:
    if s.trunk is None:
        return (s.vlan,) if s.vlan is not None else ()
    return (*s.trunk, *((s.native,) if s.native is not None else ()))
