# netstore/switch/mactable.py - the learning table: (VLAN, MAC) -> port, with
# aging, a size cap that evicts from the port holding most entries (Open
# vSwitch's rule), and MAC-move damping against loops and spoofers. Pure: the
# caller passes `now` (seconds on a monotonic clock) to every call.
"""MacTable: where each (VLAN, MAC) was last seen, aged, capped and damped."""

from __future__ import annotations

from collections import OrderedDict

from netstore.switch.limits import DEFAULT_MAC_AGING_S, DEFAULT_MAC_TABLE_SIZE

# An entry's place in the age order is refreshed at most this often, so the hot
# path is an attribute store; expire() may run up to this much late.
REORDER_S = 1.0
# MAC-move damping. vde_switch ignores a MAC's move within 3 s of the last one
# (anti-flap); Open vSwitch locks a MAC for 5 s after a gratuitous ARP. Here a
# MAC may move FLAP_MOVES times within FLAP_WINDOW_S; the next move puts it back
# on the port it held when the window opened and locks it there FLAP_HOLD_S.
FLAP_WINDOW_S = 3.0
FLAP_MOVES = 3
FLAP_HOLD_S = 5.0


class MacEntry:
    """Where one (VLAN, MAC) lives and its damping state."""

    __slots__ = ("port", "seen", "ordered", "home", "window_start", "moves", "locked_until")

    def __init__(self, port: str, now: float) -> None:
        self.port = port
        self.seen = now  # last frame from this MAC
        self.ordered = now  # when it last took its place at the end of the age order
        self.home = port  # the port it held when the current move window opened
        self.window_start = now
        self.moves = 0
        self.locked_until = 0.0


class MacTable:
    """(VLAN, MAC) -> port with aging, a cap and move damping.

    Each VLAN has a dict ordered by ``MacEntry.ordered`` (oldest first), so the
    expiry sweep stops at the first live entry; each port has an OrderedDict in
    the same order, so eviction takes the oldest entry of the fullest port.
    """

    def __init__(self, *, aging_s: float = DEFAULT_MAC_AGING_S,
                 size: int = DEFAULT_MAC_TABLE_SIZE) -> None:
        if aging_s <= 0:
            raise ValueError(f"MAC aging must be positive, got {aging_s}")
        if size < 1:
            raise ValueError(f"MAC table size must be at least 1, got {size}")
        self.aging_s = aging_s
        self.size = size
        self._vlans: dict[int, dict[bytes, MacEntry]] = {}
        self._ports: dict[str, OrderedDict[tuple[int, bytes], None]] = {}
        self._count = 0
        self.evictions = 0  # entries dropped to make room (for counters/tests)

    def __len__(self) -> int:
        return self._count

    # -- lookups ---------------------------------------------------------

    def lookup(self, vlan: int, mac: bytes, now: float) -> str | None:
        """The port ``mac`` was learnt on in ``vlan``, or None; an aged entry is removed."""
        d = self._vlans.get(vlan)
        if d is None:
            return None
        e = d.get(mac)
        if e is None:
            return None
        if now - e.seen >= self.aging_s:
            self._remove(vlan, mac, e)
            return None
        return e.port

    def port_count(self, port: str) -> int:
        """How many entries point at ``port`` (aged ones included until swept)."""
        p = self._ports.get(port)
        return len(p) if p is not None else 0

    def entries(self, now: float) -> list[tuple[int, bytes, str, float]]:
        """Live entries as (vlan, mac, port, age seconds), sorted by VLAN then MAC."""
        out = [
            (vlan, mac, e.port, now - e.seen)
            for vlan, d in self._vlans.items()
            for mac, e in d.items()
            if now - e.seen < self.aging_s
        ]
        out.sort()
        return out

    # -- updates -----------------------------------------------------------

    def learn(self, vlan: int, mac: bytes, port: str, now: float) -> bool:
        """Record a frame from ``mac`` in ``vlan`` arriving on ``port``.

        Returns:
            True if the frame may be forwarded; False if ``mac`` is flapping
            (locked to another port, or this move crossed the limit): the caller
            drops the frame as 'flap'. The table changes only as described in
            the module comment; a new entry may evict the oldest entry of the
            port holding most entries when the table is full.
        """
        d = self._vlans.get(vlan)
        if d is None:
            d = self._vlans[vlan] = {}
        e = d.get(mac)
        if e is not None:
            if e.port == port:  # the common case: a known host talking
                e.seen = now
                if now - e.ordered >= REORDER_S:
                    self._reorder(vlan, mac, e, d, now)
                return True
            if now - e.seen >= self.aging_s:  # forgotten already: a fresh learn
                self._remove(vlan, mac, e)
            else:
                return self._move(vlan, mac, e, d, port, now)
        if self._count >= self.size:
            self._evict()
        # _remove and _evict drop a VLAN's dict when it empties: put it back
        d = self._vlans.setdefault(vlan, d)
        d[mac] = MacEntry(port, now)
        self._port_index(port)[(vlan, mac)] = None
        self._count += 1
        return True

    def forget_port(self, port: str) -> int:
        """Remove every entry on ``port`` (port removed or link down); returns how many."""
        keys = self._ports.pop(port, None) or {}
        for vlan, mac in keys:
            d = self._vlans[vlan]
            del d[mac]
            if not d:
                del self._vlans[vlan]
        self._count -= len(keys)
        # A damped MAC whose home just vanished stays where it is now, also when
        # the port held no entry itself (a MAC that moved away from it within
        # its window): damping must never put a MAC back on a port now gone.
        for d in self._vlans.values():
            for e in d.values():
                if e.home == port:
                    e.home = e.port
        return len(keys)

    def expire(self, now: float) -> int:
        """Remove entries older than the aging time; returns how many.

        Cost is proportional to the entries removed (plus one per VLAN): each
        VLAN's dict is in age order, so the sweep stops at the first live one;
        an entry may outlive its time by REORDER_S here, never in lookup().
        """
        removed = 0
        for vlan, d in list(self._vlans.items()):
            dead = []
            for mac, e in d.items():
                if now - e.seen < self.aging_s:
                    break
                dead.append((mac, e))
            for mac, e in dead:
                self._remove(vlan, mac, e)
            removed += len(dead)
        return removed

    def clear(self) -> None:
        """Forget everything."""
        self._vlans.clear()
        self._ports.clear()
        self._count = 0

    # -- internals ---------------------------------------------------------

    def _port_index(self, port: str) -> OrderedDict[tuple[int, bytes], None]:
        p = self._ports.get(port)
        if p is None:
            p = self._ports[port] = OrderedDict()
        return p

    def _reorder(self, vlan: int, mac: bytes, e: MacEntry, d: dict, now: float) -> None:
        del d[mac]
        d[mac] = e
        self._ports[e.port].move_to_end((vlan, mac))
        e.ordered = now

    def _move(self, vlan: int, mac: bytes, e: MacEntry, d: dict, port: str, now: float) -> bool:
        if now < e.locked_until:
            return False
        if now - e.window_start > FLAP_WINDOW_S:
            e.window_start = now
            e.moves = 0
            e.home = e.port
        e.moves += 1
        if e.moves > FLAP_MOVES:
            e.locked_until = now + FLAP_HOLD_S
            if e.home != e.port:
                self._relocate(vlan, mac, e, e.home)
            e.seen = now
            e.moves = 0
            e.window_start = e.locked_until
            self._reorder(vlan, mac, e, d, now)
            return port == e.port  # a frame from the home port itself still passes
        self._relocate(vlan, mac, e, port)
        e.seen = now
        self._reorder(vlan, mac, e, d, now)
        return True

    def _relocate(self, vlan: int, mac: bytes, e: MacEntry, port: str) -> None:
        old = self._ports[e.port]
        del old[(vlan, mac)]
        if not old:
            del self._ports[e.port]
        self._port_index(port)[(vlan, mac)] = None
        e.port = port

    def _remove(self, vlan: int, mac: bytes, e: MacEntry) -> None:
        d = self._vlans[vlan]
        del d[mac]
        if not d:
            del self._vlans[vlan]
        p = self._ports[e.port]
        del p[(vlan, mac)]
        if not p:
            del self._ports[e.port]
        self._count -= 1

    def _evict(self) -> None:
        # Open vSwitch (lib/mac-learning.c, mac_learning_insert): when full,
        # evict from the port with the most MACs, its least recently used one.
        port = max(self._ports, key=lambda name: len(self._ports[name]))
        vlan, mac = next(iter(self._ports[port]))
        self._remove(vlan, mac, self._vlans[vlan][mac])
        self.evictions += 1
