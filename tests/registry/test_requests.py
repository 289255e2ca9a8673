# tests/registry/test_requests.py - requests one host's CLI files for another
# host's daemon: taken once, answered, read and withdrawn (both backends).
"""Control requests carried by the registry."""

from __future__ import annotations

from netstore.registry import Registry
from netstore.registry import requests as rq


def test_a_request_is_taken_once_answered_and_withdrawn(reg: Registry) -> None:
    rid = rq.ask(reg, "host2", "vm_stop", {"name": "web", "force": True})
    other = rq.ask(reg, "host3", "vm_stop", {"name": "db"})
    assert rq.outcome(reg, rid) == (rq.WAITING, None, None)
    assert rq.take(reg, "host2") == [(rid, "vm_stop", {"name": "web", "force": True})]
    assert rq.take(reg, "host2") == []  # taken once
    assert not rq.withdraw(reg, rid, only_waiting=True)  # taken: the daemon runs it
    rq.answer(reg, rid, {"state": "poweroff"})
    assert rq.outcome(reg, rid) == (rq.ANSWERED, {"state": "poweroff"}, None)
    assert rq.withdraw(reg, rid) and rq.outcome(reg, rid) is None
    assert rq.withdraw(reg, other, only_waiting=True)  # nobody took it: given up
    assert rq.take(reg, "host3") == []


def test_a_refusal_comes_back_as_its_error(reg: Registry) -> None:
    rid = rq.ask(reg, "host2", "vm_control", {"name": "web", "action": "pause"})
    rq.take(reg, "host2")
    rq.answer(reg, rid, error="web is not running here")
    assert rq.outcome(reg, rid) == (rq.ANSWERED, None, "web is not running here")
