# tests/switch/test_mactable_stateful.py - the MAC table as a hypothesis state
# machine: learn, let time pass, look up, sweep, forget a port, frames from
# group sources through the core; checked after every step against a model
# written from what mactable.py promises (aging, the cap and whom it evicts,
# move damping), using the table's public calls only.
"""Stateful property tests for netstore.switch.mactable.MacTable."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netstore.switch.core import PortSettings, Switch
from netstore.switch.mactable import FLAP_HOLD_S, FLAP_MOVES, FLAP_WINDOW_S, REORDER_S

PORTS = ("p0", "p1", "p2", "p3")
VLANS = (1, 2)
MACS = tuple(bytes([2, 0, 0, 0, 0, i]) for i in range(1, 6))
GROUP_MACS = (b"\xff" * 6, bytes.fromhex("01005e000001"), bytes.fromhex("333300000001"))
AGING_S = 8.0
SIZE = 5
# Steps of time: multiples of 1/4 s are exact in binary, so no rounding blurs
# "aged" at the boundary.
STEPS = st.sampled_from((0.0, 0.25, 0.5, 1.0, 2.0, 3.25, 5.0, 8.0, 20.0))


@dataclass
class Entry:
    """The model of one (VLAN, MAC): where it is and its damping state."""

    port: str
    seen: float
    home: str
    window_start: float
    moves: int = 0
    locked_until: float = 0.0


class MacTableMachine(RuleBasedStateMachine):
    """The table of a switch core, driven directly and through the core."""

    @initialize()
    def start(self) -> None:
        self.now = 1000.0
        self.sw = Switch("sw", aging_s=AGING_S, table_size=SIZE, now=self.now)
        for name in PORTS:
            self.sw.add_port(PortSettings(name))
        self.table = self.sw.table
        self.model: dict[tuple[int, bytes], Entry] = {}

    # -- the model -------------------------------------------------------------

    def live(self) -> dict[tuple[int, bytes], Entry]:
        """Model entries not aged at ``now`` (aged ones are gone, swept or not)."""
        return {k: e for k, e in self.model.items() if self.now - e.seen < AGING_S}

    def model_learn(self, key: tuple[int, bytes], port: str) -> bool:
        now = self.now
        e = self.live().get(key)
        if e is None:  # unknown or forgotten: a fresh learn, always taken
            self.model[key] = Entry(port, now, home=port, window_start=now)
            return True
        if e.port == port:
            e.seen = now
            return True
        # A move. At most FLAP_MOVES within FLAP_WINDOW_S; the next one puts the
        # MAC back on the port it held when the window opened, locked there
        # FLAP_HOLD_S, and only a frame from that port passes.
        if now < e.locked_until:
            return False
        if now - e.window_start > FLAP_WINDOW_S:
            e.window_start, e.moves, e.home = now, 0, e.port
        e.moves += 1
        if e.moves > FLAP_MOVES:
            e.locked_until = now + FLAP_HOLD_S
            e.port, e.seen, e.moves, e.window_start = e.home, now, 0, e.locked_until
            return port == e.port
        e.port, e.seen = port, now
        return True

    def observed(self) -> dict[tuple[int, bytes], tuple[str, float]]:
        return {(v, m): (p, age) for v, m, p, age in self.table.entries(self.now)}

    # -- rules -----------------------------------------------------------------

    @rule(vlan=st.sampled_from(VLANS), mac=st.sampled_from(MACS), port=st.sampled_from(PORTS))
    def learn(self, vlan: int, mac: bytes, port: str) -> None:
        t, key = self.table, (vlan, mac)
        before = self.observed()
        counts = {p: t.port_count(p) for p in PORTS}
        size_before, evictions = len(t), t.evictions
        taken = t.learn(vlan, mac, port, self.now)
        assert taken == self.model_learn(key, port)
        if t.evictions == evictions:
            return
        # Room was made: the table was full, the newcomer is new, and the entry
        # that went was the oldest (within REORDER_S) of the port holding most.
        assert t.evictions == evictions + 1
        assert size_before == SIZE and key not in before
        after = {p: t.port_count(p) for p in PORTS}
        expected = dict(counts)
        expected[port] += 1
        (victim_port,) = [p for p in PORTS if after[p] == expected[p] - 1]
        assert all(after[p] == expected[p] for p in PORTS if p != victim_port)
        assert counts[victim_port] == max(counts.values())
        gone = set(before) - set(self.observed())
        assert len(gone) <= 1  # none: an aged entry went
        for k in gone:
            p, age = before[k]
            assert p == victim_port
            others = [a for kk, (pp, a) in before.items() if pp == p and kk != k]
            assert all(age >= a - REORDER_S for a in others)
            del self.model[k]

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        self.now += step

    @rule(vlan=st.sampled_from(VLANS), mac=st.sampled_from(MACS))
    def lookup(self, vlan: int, mac: bytes) -> None:
        e = self.live().get((vlan, mac))
        assert self.table.lookup(vlan, mac, self.now) == (e.port if e else None)

    @rule()
    def sweep(self) -> None:
        n = len(self.table)
        removed = self.table.expire(self.now)
        assert removed == n - len(self.table)
        # What stays is live, or aged by less than REORDER_S (the sweep's slack).
        assert len(self.table) == len(self.table.entries(self.now - REORDER_S))

    @rule(port=st.sampled_from(PORTS))
    def forget_port(self, port: str) -> None:
        n = self.table.port_count(port)
        assert self.table.forget_port(port) == n
        assert self.table.port_count(port) == 0
        for k, e in list(self.model.items()):
            if e.port == port:
                del self.model[k]
            elif e.home == port:  # a damped MAC whose home vanished stays where it is
                e.home = e.port

    @rule(src=st.sampled_from(GROUP_MACS), dst=st.sampled_from(MACS + GROUP_MACS[:1]),
          port=st.sampled_from(PORTS))
    def frame_from_a_group_source(self, src: bytes, dst: bytes, port: str) -> None:
        before = self.observed()
        self.sw.now = self.now
        self.sw.receive(port, dst + src + b"\x08\x00" + bytes(46))
        assert self.observed() == before  # a group address is never learnt

    @rule(mac=st.sampled_from(MACS), dst=st.sampled_from(MACS), port=st.sampled_from(PORTS))
    def frame_through_the_core(self, mac: bytes, dst: bytes, port: str) -> None:
        """A unicast frame on VLAN 1: learnt as the table would, and sent to
        the port the model says holds ``dst`` (flooded when none does)."""
        self.sw.now = self.now
        taken = self.model_learn((1, mac), port)
        evictions = self.table.evictions
        out = self.sw.receive(port, dst + mac + b"\x08\x00" + bytes(46))
        if self.table.evictions != evictions:  # whom it took is the learn rule's business
            self.model = {k: v for k, v in self.model.items() if k in self.observed()}
        e = self.live().get((1, dst))
        names = [p for p, _ in out]
        if not taken:
            assert names == []
        elif e is None:
            assert names == [p for p in PORTS if p != port]
        elif e.port == port:
            assert names == []  # filtered: the destination is behind the ingress port
        else:
            assert names == [e.port]

    # -- invariants --------------------------------------------------------------

    @invariant()
    def the_cap_holds(self) -> None:
        assert len(self.table) <= SIZE

    @invariant()
    def entries_are_the_models_live_ones(self) -> None:
        want = {k: (e.port, self.now - e.seen) for k, e in self.live().items()}
        assert self.observed() == want

    @invariant()
    def no_group_source_is_ever_learnt(self) -> None:
        assert all(not mac[0] & 1 for _, mac, _, _ in self.table.entries(self.now))

    @invariant()
    def counts_add_up(self) -> None:
        assert sum(self.table.port_count(p) for p in PORTS) == len(self.table)


MacTableMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=60,
                                             deadline=None)
test_mac_table = MacTableMachine.TestCase
