# tests/registry/test_reservations.py - reservation state of units several
# hosts export, kept in the registry (both backends): saved whole, replaced,
# and restored by a unit opened on another host even without APTPL.
"""Persistent reservations in the shared registry."""

from __future__ import annotations

from netstore.exports.identity import RegistryReservations
from netstore.registry import Registry
from netstore.registry import reservations as kept
from netstore.scsi.reservations import Reservations, ReservationState, load_state
from tests.registry.conftest import Place


def test_saved_replaced_and_loaded(reg: Registry) -> None:
    assert kept.load(reg, "u1") is None
    kept.save(reg, "u1", b'{"a": 1}')
    kept.save(reg, "u1", b'{"a": 2}')
    kept.save(reg, "u2", b"{}")
    assert kept.load(reg, "u1") == b'{"a": 2}' and kept.load(reg, "u2") == b"{}"


def test_a_unit_on_another_host_takes_the_state_over(place: Place) -> None:
    with place.open():
        pass  # the registry exists
    host1 = RegistryReservations(place.state_dir, place.url, "unit")
    pr = Reservations(ua=lambda sense, nexuses: None, store=host1)
    nexus = "iqn.2026-11.org.example:init,i,0x400001370000"
    # REGISTER (key 0x1234) then RESERVE write exclusive, no APTPL
    pr.pr_out(nexus, bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]), bytes(8) +
              (0x1234).to_bytes(8, "big") + bytes(8))
    pr.pr_out(nexus, bytes([0x5F, 1, 1, 0, 0, 0, 0, 0, 24, 0]), (0x1234).to_bytes(8, "big") +
              bytes(16))
    host2 = RegistryReservations(place.state_dir / "other-host", place.url, "unit")
    state = load_state(host2) if place.url else load_state(host1)
    assert state.registrations == {nexus: 0x1234} and state.holder == nexus and state.res_type == 1
    # a file (one host) keeps only what APTPL asks to survive a power loss
    assert ReservationState.from_json(state.to_json()).registrations == {}
