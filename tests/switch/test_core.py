# tests/switch/test_core.py - the pure forwarding core with scapy-built frames:
# learning, flooding, VLANs on access and trunk ports, aging as the test
# moves the core's time, the table cap under a MAC flood, move damping, frame sizes, port
# security, storm limits, mirroring, links, counters and taps.
"""Tests for netstore.switch.core.Switch."""

from __future__ import annotations

import os
import random

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from netstore.config import parse_config
from netstore.switch.core import PortSettings, Switch
from netstore.switch.frames import add_tag
from netstore.switch.mactable import FLAP_HOLD_S, FLAP_MOVES

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
BCAST = "ff:ff:ff:ff:ff:ff"


class Clock:
    """The time the test gives a switch core: ``clock.t += 1`` sets ``sw.now``."""

    def __init__(self, sw: Switch) -> None:
        self.sw = sw

    @property
    def t(self) -> float:
        return self.sw.now

    @t.setter
    def t(self, now: float) -> None:
        self.sw.now = now


def make(*ports: PortSettings, **kw) -> tuple[Switch, Clock]:
    sw = Switch("sw0", now=1000.0, **kw)
    clock = Clock(sw)
    for p in ports:
        sw.add_port(p)
    return sw, clock


def three() -> tuple[Switch, Clock]:
    return make(PortSettings("a"), PortSettings("b"), PortSettings("c"))


def arp_req(src: str, vlan: int | None = None, prio: int = 0) -> bytes:
    eth = Ether(src=src, dst=BCAST)
    if vlan is not None:
        return bytes(eth / Dot1Q(vlan=vlan, prio=prio) / ARP(hwsrc=src, pdst="10.0.0.9"))
    return bytes(eth / ARP(hwsrc=src, pdst="10.0.0.9"))


def ping(src: str, dst: str, vlan: int | None = None, prio: int = 0, size: int = 0) -> bytes:
    eth = Ether(src=src, dst=dst)
    body = IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / (b"x" * size)
    if vlan is not None:
        return bytes(eth / Dot1Q(vlan=vlan, prio=prio) / body)
    return bytes(eth / body)


def sized(src: str, dst: str, length: int, vlan: int | None = None) -> bytes:
    """A frame of exactly ``length`` bytes."""
    f = ping(src, dst, vlan=vlan)
    assert len(f) <= length
    return f + b"\0" * (length - len(f))


def names(out: list[tuple[str, bytes]]) -> list[str]:
    return sorted(name for name, _ in out)


# -- learning and flooding ------------------------------------------------


def test_three_ports_learn_and_stop_flooding_after_the_first_reply() -> None:
    sw, _ = three()
    req = arp_req(A)
    assert sw.receive("a", req) == [("b", req), ("c", req)]
    reply = bytes(Ether(src=B, dst=A) / ARP(op=2, hwsrc=B, hwdst=A))
    assert sw.receive("b", reply) == [("a", reply)]
    for _ in range(3):
        assert names(sw.receive("a", ping(A, B))) == ["b"]
        assert names(sw.receive("b", ping(B, A))) == ["a"]
    assert sw.counters("c").tx_frames == 1  # only the first broadcast
    assert [(v, m.hex(":"), p) for v, m, p, _ in sw.macs()] == [(1, A, "a"), (1, B, "b")]


def test_unknown_unicast_floods_and_multicast_floods() -> None:
    sw, _ = three()
    assert names(sw.receive("a", ping(A, C))) == ["b", "c"]
    mcast = ping(A, "01:00:5e:00:00:01")
    assert names(sw.receive("a", mcast)) == ["b", "c"]


def test_group_sources_are_forwarded_but_never_learnt() -> None:
    sw, _ = three()
    f = ping("01:00:5e:00:00:05", B)
    assert names(sw.receive("a", f)) == ["b", "c"]
    assert sw.macs() == []


def test_never_back_out_of_the_ingress_port() -> None:
    sw, _ = three()
    sw.receive("a", arp_req(A))
    sw.receive("a", arp_req(B))  # B also behind a (a hub, say)
    assert sw.receive("a", ping(A, B)) == []
    assert sw.counters("a").drops == {"filtered": 1}


def test_link_down_port_is_skipped_and_forgets_its_macs() -> None:
    sw, _ = three()
    sw.receive("b", arp_req(B))
    sw.set_link("b", False)
    assert not sw.is_up("b")
    assert all(p != "b" for _, _, p, _ in sw.macs())
    assert names(sw.receive("a", ping(A, B))) == ["c"]  # B unknown now: flood, not to b
    assert sw.receive("b", arp_req(B)) == []
    assert sw.counters("b").drops == {"no_link": 1}
    sw.set_link("b", True)
    assert names(sw.receive("a", arp_req(A))) == ["b", "c"]


def test_remove_port_drops_its_entries() -> None:
    sw, _ = three()
    sw.receive("b", arp_req(B))
    sw.remove_port("b")
    assert sw.macs() == []
    assert [p.name for p in sw.ports()] == ["a", "c"]
    assert names(sw.receive("a", ping(A, B))) == ["c"]
    assert sw.receive("b", arp_req(B)) == []  # a shell racing the removal: nothing
    with pytest.raises(KeyError):
        sw.counters("b")
    with pytest.raises(ValueError):
        sw.add_port(PortSettings("a"))


# -- 802.1Q ----------------------------------------------------------------


def test_vlan_isolation_on_access_ports() -> None:
    sw, _ = make(
        PortSettings("a", vlan=10),
        PortSettings("b", vlan=10),
        PortSettings("c", vlan=20),
        PortSettings("d", vlan=20),
    )
    assert names(sw.receive("a", arp_req(A))) == ["b"]
    assert names(sw.receive("c", arp_req(C))) == ["d"]
    assert names(sw.receive("c", ping(C, A))) == ["d"]  # A is in VLAN 10: unknown here
    # the same MAC in two VLANs is two entries
    sw.receive("d", arp_req(A))
    assert {(v, p) for v, m, p, _ in sw.macs() if m.hex(":") == A} == {(10, "a"), (20, "d")}


def trunked() -> tuple[Switch, Clock]:
    return make(
        PortSettings("a10", vlan=10),
        PortSettings("b20", vlan=20),
        PortSettings("n1", vlan=1),
        PortSettings("t1", vlan=None, trunk=frozenset({10, 20}), native=1),
        PortSettings("t2", vlan=None, trunk=frozenset({10, 20, 30})),
    )


def test_access_to_trunk_adds_the_tag_and_back_strips_it() -> None:
    sw, _ = trunked()
    out = dict(sw.receive("a10", arp_req(A)))
    assert sorted(out) == ["t1", "t2"]
    for port in ("t1", "t2"):
        pkt = Ether(out[port])
        assert pkt[Dot1Q].vlan == 10
        assert bytes(pkt[Dot1Q].payload) == bytes(Ether(arp_req(A)).payload)
    reply = ping(B, A, vlan=10)
    out = sw.receive("t2", reply)
    assert names(out) == ["a10"]
    assert out[0][1] == ping(B, A)  # untagged, otherwise identical


def test_trunk_to_trunk_keeps_the_tag_and_priority() -> None:
    sw, _ = trunked()
    f = ping(A, C, vlan=20, prio=5)
    out = dict(sw.receive("t1", f))
    assert sorted(out) == ["b20", "t2"]
    assert out["t2"] == f  # byte for byte
    assert out["b20"] == ping(A, C)


def test_priority_bits_survive_retagging() -> None:
    sw, _ = trunked()
    # priority-tagged (VID 0) on an access port: VLAN 10, PCP 3 kept on the trunk
    f = ping(A, C, vlan=0, prio=3)
    out = dict(sw.receive("a10", f))
    tag = Ether(out["t2"])[Dot1Q]
    assert (tag.vlan, tag.prio) == (10, 3)
    assert Ether(out["t1"])[Dot1Q].prio == 3


def test_native_vlan_leaves_untagged_and_untagged_trunk_frames_are_native() -> None:
    sw, _ = trunked()
    out = dict(sw.receive("n1", arp_req(A)))
    assert sorted(out) == ["t1"]  # t2 has no native VLAN and does not carry 1
    assert out["t1"] == arp_req(A)
    out = dict(sw.receive("t1", arp_req(B)))
    assert sorted(out) == ["n1"]
    # an explicit tag of the native VLAN is accepted too (OVS native-untagged)
    assert names(sw.receive("t1", arp_req(C, vlan=1))) == ["n1"]
    assert dict(sw.receive("t1", arp_req(C, vlan=1)))["n1"] == arp_req(C)


def test_vlan_drops() -> None:
    sw, _ = trunked()
    assert sw.receive("t1", arp_req(A, vlan=30)) == []  # not allowed on t1
    assert sw.receive("t2", arp_req(A)) == []  # untagged, no native
    # OVS vlan_mode=access: a tag with a nonzero VID is dropped, even its own VLAN
    assert sw.receive("a10", arp_req(A, vlan=10)) == []
    assert sw.receive("a10", arp_req(A, vlan=20)) == []
    assert sw.counters("t1").drops == {"vlan": 1}
    assert sw.counters("t2").drops == {"vlan": 1}
    assert sw.counters("a10").drops == {"vlan": 2}
    assert sw.macs() == []  # nothing learnt from dropped frames


def test_trunk_allowed_list_filters_floods() -> None:
    sw, _ = trunked()
    out = dict(sw.receive("t2", arp_req(A, vlan=30)))
    assert out == {}  # VLAN 30 has no other port
    sw.add_port(PortSettings("c30", vlan=30))
    out = dict(sw.receive("t2", arp_req(A, vlan=30)))
    assert sorted(out) == ["c30"]


# -- aging -----------------------------------------------------------------


def test_aging_as_the_time_given_moves() -> None:
    sw, clock = make(PortSettings("a"), PortSettings("b"), PortSettings("c"), aging_s=300)
    sw.receive("a", arp_req(A))
    clock.t += 299
    assert names(sw.receive("b", ping(B, A))) == ["a"]
    assert [round(age) for _, _, _, age in sw.macs()] == [299, 0]
    clock.t += 1.5  # A last seen 300.5 s ago: forgotten on lookup
    assert names(sw.receive("b", ping(B, A))) == ["a", "c"]
    assert [m.hex(":") for _, m, _, _ in sw.macs()] == [B]
    clock.t += 400
    assert sw.macs() == []
    assert sw.tick(clock.t) == 1
    assert len(sw.table) == 0


def test_expire_sweep_removes_only_aged_entries() -> None:
    sw, clock = make(PortSettings("a"), PortSettings("b"), aging_s=10)
    for i in range(50):
        sw.receive("a", arp_req(f"02:00:00:00:01:{i:02x}"))
        clock.t += 0.5
    # entries seen at t0 .. t0+24.5; now t0+25: those older than 10 s go
    removed = sw.tick(clock.t)
    assert 28 <= removed <= 31
    assert len(sw.table) == 50 - removed
    assert all(age < 10 for *_, age in sw.macs())


def test_refreshed_entries_survive_the_sweep() -> None:
    sw, clock = make(PortSettings("a"), PortSettings("b"), aging_s=10)
    sw.receive("a", arp_req(A))
    sw.receive("b", arp_req(B))
    for _ in range(30):
        clock.t += 1
        sw.receive("a", ping(A, B))
        sw.tick(clock.t)
    assert [m.hex(":") for _, m, _, _ in sw.macs()] == [A]


# -- table cap ---------------------------------------------------------------


def test_table_cap_under_a_flood_of_random_sources() -> None:
    sw, clock = three()
    assert sw.table_size == 8192
    sw.receive("a", arp_req(A))
    sw.receive("b", arp_req(B))
    a_to_b, b_to_a = ping(A, B), ping(B, A)
    template = bytearray(ping(C, "02:00:00:00:99:99"))
    rng = random.Random(4)
    flood_out = 0
    for i in range(100_000):
        src = bytearray(rng.randbytes(6))
        src[0] = (src[0] & 0xFE) | 0x02  # unicast, locally administered
        template[6:12] = src
        flood_out += len(sw.receive("c", bytes(template)))
        if i % 500 == 0:
            clock.t += 0.1
            assert sw.receive("a", a_to_b) == [("b", a_to_b)]
            assert sw.receive("b", b_to_a) == [("a", b_to_a)]
        assert len(sw.table) <= 8192
    assert len(sw.table) == 8192
    assert sw.table.evictions >= 100_000 - 8192
    by_port: dict[str, int] = {}
    for _, _, port, _ in sw.macs():
        by_port[port] = by_port.get(port, 0) + 1
    assert by_port == {"a": 1, "b": 1, "c": 8190}
    assert flood_out == 200_000  # each unknown unicast to a and b


def test_table_cap_evicts_from_the_port_with_most_entries() -> None:
    sw, clock = make(PortSettings("a"), PortSettings("b"), PortSettings("c"), table_size=10)
    for i in range(6):
        sw.receive("a", arp_req(f"02:00:00:00:0a:{i:02x}"))
        clock.t += 1
    for i in range(4):
        sw.receive("b", arp_req(f"02:00:00:00:0b:{i:02x}"))
        clock.t += 1
    sw.receive("c", arp_req(C))  # full: a holds most, its oldest goes
    macs = {m.hex(":"): p for _, m, p, _ in sw.macs()}
    assert len(macs) == 10
    assert "02:00:00:00:0a:00" not in macs
    assert macs[C] == "c"


# -- MAC-move damping --------------------------------------------------------


def test_mac_move_damping() -> None:
    sw, clock = three()
    sw.receive("c", arp_req(C))
    sw.receive("a", arp_req(A))
    ports = ["b", "a"] * FLAP_MOVES
    for i in range(FLAP_MOVES):  # up to FLAP_MOVES moves within the window are fine
        clock.t += 0.1
        assert sw.receive(ports[i], ping(A, C)) == [("c", ping(A, C))]
    where = {m.hex(":"): p for _, m, p, _ in sw.macs()}
    assert where[A] == ports[FLAP_MOVES - 1]
    clock.t += 0.1
    moving = "a" if where[A] == "b" else "b"
    if moving == "a":  # the locking frame from the home port passes; go one step more
        sw.receive("a", ping(A, C))
        moving = "b"
    else:
        assert sw.receive(moving, ping(A, C)) == []
    # A stays on its first port, a; frames from it elsewhere are dropped as flap
    assert {m.hex(":"): p for _, m, p, _ in sw.macs()}[A] == "a"
    clock.t += 1
    assert sw.receive("b", ping(A, C)) == []
    assert sw.counters("b").drops.get("flap", 0) >= 1
    assert sw.receive("a", ping(A, C)) == [("c", ping(A, C))]  # home port still works
    assert names(sw.receive("c", ping(C, A))) == ["a"]
    clock.t += FLAP_HOLD_S + 0.1  # hold over: a real move is learnt again
    assert sw.receive("b", ping(A, C)) == [("c", ping(A, C))]
    assert names(sw.receive("c", ping(C, A))) == ["b"]


def test_damping_never_puts_a_mac_back_on_a_removed_port() -> None:
    """A MAC moved away from port a, then a was removed while empty: the lock
    that damping puts on later moves keeps it where it is, never on a."""
    sw, clock = make(*(PortSettings(n) for n in "abcd"))
    sw.receive("a", arp_req(A))
    clock.t += 0.1
    sw.receive("b", arp_req(A))  # the move window opens with a as A's home
    sw.remove_port("a")  # a holds no entry now
    for p in "cbc":  # three more moves: the last one crosses the limit
        clock.t += 0.1
        sw.receive(p, arp_req(A))
    assert {m.hex(":"): p for _, m, p, _ in sw.macs()}[A] in ("b", "c")
    clock.t += 0.1
    assert len(sw.receive("d", ping(B, A))) == 1  # raised KeyError: 'a' before


def test_a_single_move_is_learnt_at_once() -> None:
    sw, clock = three()
    sw.receive("a", arp_req(A))
    clock.t += 0.01
    sw.receive("b", arp_req(A))  # a VM migrated
    assert names(sw.receive("c", ping(C, A))) == ["b"]


# -- frame sizes -------------------------------------------------------------


def test_runts_are_dropped_and_counted() -> None:
    sw, _ = three()
    for n in range(14):
        assert sw.receive("a", ping(A, B)[:n]) == []
    assert sw.receive("a", ping(A, B, vlan=1)[:17]) == []  # tag cut short
    assert sw.counters("a").drops == {"runt": 15}
    assert names(sw.receive("a", ping(A, B)[:14])) == ["b", "c"]  # a bare header passes
    assert sw.counters("a").rx_frames == 16


def test_oversize_and_jumbo() -> None:
    sw, _ = make(
        PortSettings("a"),
        PortSettings("b"),
        PortSettings("j1", mtu=9000),
        PortSettings("j2", mtu=9000),
        PortSettings("t", vlan=None, trunk=frozenset({1}), native=None),
    )
    assert names(sw.receive("a", sized(A, C, 1518))) == ["b", "j1", "j2", "t"]
    assert sw.receive("a", sized(A, C, 1519)) == []
    assert sw.counters("a").drops == {"oversize": 1}
    # 1518 untagged leaves t tagged (1522): within t's tagged limit; 1519 tagged is too
    assert sw.receive("t", sized(A, C, 1522, vlan=1)) != []
    assert sw.receive("t", sized(A, C, 1523, vlan=1)) == []
    assert sw.counters("t").drops == {"oversize": 1}
    # jumbo between jumbo ports; the 1500-byte ports drop their copy on egress
    out = sw.receive("j1", sized(A, C, 9018))
    assert names(out) == ["j2"]
    assert sw.counters("a").drops.get("tx_oversize") == 1
    assert sw.counters("b").drops.get("tx_oversize") == 1
    assert sw.counters("t").drops.get("tx_oversize") == 1
    assert sw.receive("j1", sized(A, C, 9019)) == []
    assert sw.counters("j1").drops == {"oversize": 1}


# -- port security, storms ---------------------------------------------------


def test_port_security_bound_mac() -> None:
    sw, _ = make(PortSettings("vm", bound_mac=bytes.fromhex("02000000000a")), PortSettings("b"))
    assert names(sw.receive("vm", arp_req(A))) == ["b"]
    assert sw.receive("vm", arp_req(B)) == []
    assert sw.counters("vm").drops == {"security": 1}
    assert [m.hex(":") for _, m, _, _ in sw.macs()] == [A]
    assert PortSettings("x", bound_mac="02:00:00:00:00:0a").bound_mac == bytes.fromhex(
        "02000000000a"
    )


def test_port_security_max_macs() -> None:
    sw, clock = make(PortSettings("p", max_macs=2), PortSettings("b"), aging_s=60)
    assert sw.receive("p", arp_req(A)) != []
    assert sw.receive("p", arp_req(B)) != []
    assert sw.receive("p", arp_req(C)) == []
    assert sw.receive("p", ping("01:00:5e:00:00:01", A)) == []  # a group source: never
    assert sw.receive("p", ping(A, C)) != []  # known ones keep working
    assert sw.counters("p").drops == {"security": 2}
    clock.t += 30
    sw.receive("p", ping(A, C))
    clock.t += 31  # B aged out, A did not: room for C
    assert sw.receive("p", arp_req(C)) != []
    assert sorted(m.hex(":") for _, m, _, _ in sw.macs()) == [A, C]


def test_storm_limit_on_broadcast_and_multicast() -> None:
    sw, clock = make(PortSettings("a", storm_pps=10), PortSettings("b"))
    passed = sum(1 for _ in range(25) if sw.receive("a", arp_req(A)))
    assert passed == 10
    assert sw.counters("a").drops == {"storm": 15}
    sw.receive("b", arp_req(B))
    assert all(sw.receive("a", ping(A, B)) for _ in range(100))  # unicast: not limited
    clock.t += 0.5
    passed = sum(1 for _ in range(25) if sw.receive("a", ping(A, "01:00:5e:00:00:01")))
    assert passed == 5
    clock.t += 100  # the bucket holds one second's worth, no more
    assert sum(1 for _ in range(25) if sw.receive("a", arp_req(A))) == 10


# -- mirroring -----------------------------------------------------------------


def test_mirroring_copies_rx_and_tx_untouched() -> None:
    sw, _ = make(
        PortSettings("a", mirror_to="m"),
        PortSettings("b"),
        PortSettings("c"),
        PortSettings("m"),
        PortSettings("t", vlan=None, trunk=frozenset({1, 5}), mirror_to="m"),
    )
    req = arp_req(A)
    out = sw.receive("a", req)
    tagged_req = add_tag(req, 1)
    # a's rx copy, then per egress port its frame and (t mirrored too) t's tx copy
    assert out == [("m", req), ("b", req), ("c", req), ("t", tagged_req), ("m", tagged_req)]
    reply = ping(B, A)
    assert sorted(sw.receive("b", reply)) == [("a", reply), ("m", reply)]  # a's tx
    assert sw.receive("c", ping(C, B)) == [("b", ping(C, B))]  # not mirrored
    tagged = ping(C, A, vlan=5)
    assert sw.receive("t", tagged) == [("m", tagged)]  # rx copy, as received; VLAN 5 has no one
    # the mirror port is dedicated: it gets no floods and what it sends is dropped
    assert sw.receive("m", arp_req(C)) == []
    assert sw.counters("m").drops == {"mirror": 1}
    assert sw.counters("m").tx_frames == 4


def test_counters_count_frames_and_bytes_both_ways() -> None:
    sw, _ = three()
    req, reply = arp_req(A), ping(B, A)
    sw.receive("a", req)
    sw.receive("b", reply)
    ca, cb, cc = sw.counters("a"), sw.counters("b"), sw.counters("c")
    assert (ca.rx_frames, ca.rx_bytes, ca.tx_frames, ca.tx_bytes) == (1, len(req), 1, len(reply))
    assert (cb.rx_frames, cb.rx_bytes, cb.tx_frames, cb.tx_bytes) == (1, len(reply), 1, len(req))
    assert (cc.rx_frames, cc.tx_frames, cc.tx_bytes) == (0, 1, len(req))
    ca.rx_frames = 99  # a snapshot: the switch's own counters are untouched
    assert sw.counters("a").rx_frames == 1
    sw.count_drop("a", "queue", 3)
    assert sw.counters("a").drops == {"queue": 3}


def test_taps_see_every_frame_received_and_sent() -> None:
    sw, _ = three()
    seen: list[tuple[str, str, bytes]] = []

    def tap(port: str, direction: str, frame: bytes) -> None:
        seen.append((port, direction, frame))

    sw.add_tap(tap)
    req = arp_req(A)
    sw.receive("a", req)
    sw.receive("a", req[:5])  # a runt is seen arriving too
    assert seen == [("a", "rx", req), ("b", "tx", req), ("c", "tx", req), ("a", "rx", req[:5])]
    sw.remove_tap(tap)
    sw.remove_tap(tap)  # harmless
    sw.receive("a", req)
    assert len(seen) == 4


def test_memoryview_frames_are_accepted() -> None:
    sw, _ = three()
    buf = bytearray(arp_req(A))
    out = sw.receive("a", memoryview(buf))
    assert out == [("b", bytes(buf)), ("c", bytes(buf))]
    assert all(type(f) is bytes for _, f in out)


def test_reserved_link_local_destinations_are_not_forwarded() -> None:
    sw, _ = three()
    bpdu = bytes(Ether(src=A, dst="01:80:c2:00:00:00") / (b"\x00" * 40))
    lldp = bytes(Ether(src=A, dst="01:80:c2:00:00:0e", type=0x88CC) / (b"\x00" * 40))
    assert sw.receive("a", bpdu) == [] and sw.receive("a", lldp) == []
    assert sw.counters("a").drops == {"reserved": 2}
    assert sw.receive("a", ping(A, "01:80:c2:00:00:10")) != []  # outside the block


# -- settings ------------------------------------------------------------------


def test_port_settings_validation() -> None:
    PortSettings("t", vlan=None, trunk=[10, 20], native=1)  # any iterable
    assert PortSettings("t", vlan=None, trunk=[10, 20]).trunk == frozenset({10, 20})
    for bad in (
        dict(vlan=0),
        dict(vlan=4095),
        dict(vlan=None),
        dict(trunk=frozenset({10})),  # vlan left at 1
        dict(vlan=None, trunk=frozenset()),
        dict(vlan=10, native=1),
        dict(mtu=67),
        dict(max_macs=0),
        dict(bound_mac=b"\x01\x00\x00\x00\x00\x00"),
        dict(bound_mac="zz"),
        dict(mirror_to="p"),
    ):
        with pytest.raises(ValueError):
            PortSettings("p", **bad)


def test_from_spec() -> None:
    cfg = parse_config(
        """
        [[switches]]
        name = "lab"
        mac_aging_s = 100
        mac_table_size = 64
        [[switches.ports]]
        name = "p1"
        kind = "udp"
        local = "127.0.0.1:40001"
        vlan = 7
        mtu = 9000
        [[switches.ports]]
        name = "up"
        kind = "tap"
        device = "tap0"
        trunk = [7, 8]
        native = 1
        """,
        source=None,
    ).switches[0]
    sw = Switch.from_spec(cfg)
    assert (sw.name, sw.aging_s, sw.table_size) == ("lab", 100, 64)
    assert sw.ports() == [
        PortSettings("p1", vlan=7, mtu=9000),
        PortSettings("up", vlan=None, trunk=frozenset({7, 8}), native=1),
    ]


def test_random_garbage_frames_do_not_upset_the_switch() -> None:
    sw, _ = three()
    for _ in range(2000):
        f = os.urandom(random.randrange(0, 80))
        for name, _out in sw.receive("a", f):
            assert name != "a"
