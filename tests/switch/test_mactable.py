# tests/switch/test_mactable.py - the learning table alone: aging on lookup
# and by sweep, the cap and whom it evicts, damping, and the per-port index
# staying consistent with the table under random operations.
"""Tests for netstore.switch.mactable.MacTable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.switch.mactable import FLAP_HOLD_S, FLAP_MOVES, FLAP_WINDOW_S, MacTable


def mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, i >> 8, i & 0xFF])


def test_learn_lookup_and_age() -> None:
    t = MacTable(aging_s=10)
    assert t.learn(1, mac(1), "a", 0.0)
    assert t.lookup(1, mac(1), 9.9) == "a"
    assert t.lookup(2, mac(1), 9.9) is None  # other VLAN
    assert t.lookup(1, mac(1), 10.0) is None
    assert len(t) == 0  # removed by the lookup


def test_sweep_is_in_age_order_after_refreshes() -> None:
    t = MacTable(aging_s=10)
    for i in range(5):
        t.learn(1, mac(i), "a", float(i))
    t.learn(1, mac(0), "a", 8.0)  # refreshed: moves to the back of the age order
    assert t.expire(12.5) == 2  # mac 1 and 2; mac 0 was refreshed at 8
    assert sorted(m for _, m, _, _ in t.entries(12.5)) == [mac(0), mac(3), mac(4)]


def test_cap_evicts_oldest_of_the_fullest_port() -> None:
    t = MacTable(size=5)
    for i in range(3):
        t.learn(1, mac(i), "big", float(i))
    for i in range(3, 5):
        t.learn(1, mac(i), "small", float(i))
    t.learn(1, mac(9), "small", 10.0)
    assert t.lookup(1, mac(0), 10.0) is None
    assert t.port_count("big") == 2 and t.port_count("small") == 3
    assert t.evictions == 1


def test_damping_locks_to_the_first_port_then_releases() -> None:
    t = MacTable()
    now = 0.0
    assert t.learn(1, mac(1), "a", now)
    ports = ["b", "c", "b"]
    for p in ports[:FLAP_MOVES]:
        now += 0.1
        assert t.learn(1, mac(1), p, now)
    now += 0.1
    assert not t.learn(1, mac(1), "c", now)
    assert t.lookup(1, mac(1), now) == "a"
    assert not t.learn(1, mac(1), "b", now + 1)
    assert t.learn(1, mac(1), "a", now + 1)
    assert t.learn(1, mac(1), "b", now + FLAP_HOLD_S + 0.1)
    assert t.lookup(1, mac(1), now + FLAP_HOLD_S + 0.1) == "b"


def test_slow_moves_are_never_damped() -> None:
    t = MacTable()
    now = 0.0
    t.learn(1, mac(1), "a", now)
    for i in range(20):
        now += FLAP_WINDOW_S / FLAP_MOVES + 0.01
        assert t.learn(1, mac(1), "ab"[i % 2 == 0], now)


def test_forget_port() -> None:
    t = MacTable()
    t.learn(1, mac(1), "a", 0)
    t.learn(2, mac(1), "a", 0)
    t.learn(1, mac(2), "b", 0)
    assert t.forget_port("a") == 2
    assert [(v, m, p) for v, m, p, _ in t.entries(0)] == [(1, mac(2), "b")]


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        MacTable(aging_s=0)
    with pytest.raises(ValueError):
        MacTable(size=0)


ops = st.lists(
    st.tuples(
        st.sampled_from(("learn", "lookup", "expire", "forget")),
        st.integers(1, 2),
        st.integers(0, 12),
        st.sampled_from("abc"),
        st.sampled_from((0.0, 0.3, 2.0, 11.0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_index_stays_consistent(operations) -> None:
    t = MacTable(aging_s=10, size=6)
    now = 0.0
    for op, vlan, m, port, dt in operations:
        now += dt
        if op == "learn":
            t.learn(vlan, mac(m), port, now)
        elif op == "lookup":
            t.lookup(vlan, mac(m), now)
        elif op == "expire":
            t.expire(now)
            assert all(age < 10 for *_, age in t.entries(now))
        else:
            t.forget_port(port)
        assert len(t) <= 6
        assert len(t) == sum(len(d) for d in t._vlans.values())
        assert len(t) == sum(t.port_count(p) for p in "abc")
        for v, d in t._vlans.items():
            assert d
            for m_, e in d.items():
                assert (v, m_) in t._ports[e.port]
        orders = [[e.ordered for e in d.values()] for d in t._vlans.values()]
        assert all(o == sorted(o) for o in orders)
