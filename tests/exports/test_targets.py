"""The wiring layer: a config target on a registered immutable or multiattach
medium gives each initiator a logical unit of its own — its own layer, its own
NAA designator, its own persistent reservations (SPC-4 keeps registrations
per logical unit)."""

from __future__ import annotations

import struct

import pytest

from netstore.config import LunSpec, TargetConfig
from netstore.exports.served import TargetUnits
from netstore.exports.targets import TargetWiring
from netstore.registry import Registry

IQN = "iqn.2026-11.org.netstore:lab"
A = "iqn.1994-05.com.example:a"
B = "iqn.1994-05.com.example:b"
KA = 0xAAAA0001
MiB = 1 << 20


@pytest.fixture
def wiring(tmp_path):
    state = tmp_path / "state"
    with Registry.open(state) as reg:
        m = reg.create("multi", 4 * MiB, format="raw", type="multiattach")
    w = TargetWiring(state, "iqn.2026-11.org.netstore")
    w.set_config([TargetConfig(iqn=IQN, luns=[LunSpec(m.location, medium="multi")])])
    served = TargetUnits(state)
    exports = lambda: served.exports(w.plans())  # noqa: E731
    exports.units = served
    yield exports
    served.flush()


def naa(lu) -> bytes:
    """The NAA designator of VPD page 83h, as an initiator reads it."""
    rsp = lu.execute(A, bytes([0x12, 0x01, 0x83, 0x10, 0x00, 0x00]), None)
    page = bytes(rsp.data)
    off = 4
    while off < len(page):
        code_set, kind, length = page[off] & 0x0F, page[off + 1] & 0x0F, page[off + 3]
        if kind == 3 and code_set == 1:
            return page[off + 4:off + 4 + length]
        off += 4 + length
    raise AssertionError("no NAA designator")


def register_aptpl(lu, nexus: str, key: int) -> None:
    lu.execute(nexus, bytes(6), None)  # TEST UNIT READY takes the power-on unit attention
    cdb = struct.pack(">BBBxxIB", 0x5F, 6, 0, 24, 0)  # REGISTER AND IGNORE EXISTING KEY
    data = struct.pack(">QQ4xBxxx", 0, key, 1)  # APTPL
    assert lu.execute(nexus, cdb, data).status == 0


def keys(lu, nexus: str) -> list[int]:
    lu.execute(nexus, bytes(6), None)
    rsp = lu.execute(nexus, struct.pack(">BB5xHB", 0x5E, 0, 8192, 0), None)
    d = bytes(rsp.data)
    n = struct.unpack_from(">I", d, 4)[0]
    return [struct.unpack_from(">Q", d, 8 + i)[0] for i in range(0, n, 8)]


def test_each_initiator_has_a_unit_of_its_own_with_its_own_naa(wiring):
    (export,) = wiring()
    assert not export.luns and set(export.private) == {0}
    unit_a = export.private[0](A, True)
    unit_b = export.private[0](B, True)
    assert unit_a is not unit_b
    assert naa(unit_a) != naa(unit_b)
    # the designator is stable: the same machine's unit is named alike after a power-on
    assert naa(export.private[0](A, True)) == naa(unit_a)


def test_aptpl_registrations_stay_with_the_unit_of_their_machine(wiring):
    (export,) = wiring()
    unit_a = export.private[0](A, True)
    register_aptpl(unit_a, A + ",i,0x1", KA)
    assert keys(unit_a, A + ",i,0x1") == [KA]
    # B's unit is another logical unit: it does not see A's registration ...
    unit_b = export.private[0](B, True)
    assert keys(unit_b, B + ",i,0x1") == []
    # ... and A's persisted registration survives B's unit and A's next login
    assert keys(export.private[0](A, False), A + ",i,0x1") == [KA]


def test_a_login_gets_the_units_opened_ahead_of_it_in_a_thread(wiring):
    (export,) = wiring()
    units = wiring.units
    assert units.preparable(IQN, A)
    (ahead,) = units.prepare(IQN, A, True)  # what the worker does before the login
    assert export.private[0](A, True) is ahead, "the login opened another layer"
    # unprepared, a power-on gives the machine a fresh unit of its own
    assert export.private[0](A, True) is not ahead
