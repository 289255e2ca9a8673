# tests/processes/test_owners.py - which iSCSI worker serves which target: N
# targets spread over N workers, a target keeps its worker while the list
# changes, targets sharing a one-machine-at-a-time disk share a worker.
"""Tests for netstore.processes.acceptor.owners."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netstore.exports.targets import TargetPlan
from netstore.iscsi.login import TargetEntry
from netstore.iscsi.portal import Claim
from netstore.processes.acceptor import owners


def plan(name: str, *claims: str) -> TargetPlan:
    return TargetPlan(entry=TargetEntry(name=name), luns={},
                      claims=tuple(Claim(key=k, label=k, rule="one at a time") for k in claims))


def test_targets_spread_over_the_workers_and_keep_theirs():
    plans = [plan(f"iqn.2026-12.org.example:bench{i}") for i in range(4)]
    first = owners(plans, 2)
    assert sorted(first.values()) == [0, 0, 1, 1]
    # one goes, one comes: the others stay where their sessions are
    later = owners([*plans[1:], plan("iqn.2026-12.org.example:new")], 2, first)
    assert all(later[p.entry.name] == first[p.entry.name] for p in plans[1:])
    assert later["iqn.2026-12.org.example:new"] == first[plans[0].entry.name]


def test_targets_sharing_a_claim_share_a_worker():
    got = owners([plan("a", "disk1"), plan("b"), plan("c", "disk1"), plan("d")], 2)
    assert got["a"] == got["c"]
    assert got["b"] != got["a"] or got["d"] != got["a"]


@given(st.lists(st.text("abc", min_size=1, max_size=3), unique=True, max_size=12),
       st.integers(1, 8))
def test_every_target_has_one_worker_in_range_and_loads_differ_by_at_most_one(names, n):
    got = owners([plan(x) for x in names], n)
    assert set(got) == set(names) and all(0 <= i < n for i in got.values())
    loads = [list(got.values()).count(i) for i in range(n)]
    assert max(loads) - min(loads) <= 1
