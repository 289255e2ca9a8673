# Persistent reservations (SPC-4 5.13, PERSISTENT RESERVE IN/OUT) and SPC-2
# RESERVE/RELEASE, over three I_T nexuses of one logical unit.
from __future__ import annotations

import json
import struct

import pytest

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit
from tests.scsi.scsi_cdb import check, decode_sense, good, rw10
from tests.scsi.units import identity, ready

A = "iqn.1994-05.com.example:a,i,0x023d00000001"
B = "iqn.1994-05.com.example:b,i,0x023d00000002"
C = "iqn.1994-05.com.example:c,i,0x023d00000003"
KA, KB, KC = 0xAAAA0001, 0xBBBB0002, 0xCCCC0003
WE, EA, WE_RO, EA_RO, WE_AR, EA_AR = 1, 3, 5, 6, 7, 8
ALL_TYPES = (WE, EA, WE_RO, EA_RO, WE_AR, EA_AR)
CONFLICT = 0x18
BS = 512


def prin(sa: int, alloc: int = 8192) -> bytes:
    return struct.pack(">BB5xHB", 0x5E, sa, alloc, 0)


def prout(sa: int, key: int = 0, sark: int = 0, rtype: int = 0, *, scope: int = 0,
          aptpl: bool = False, flags: int = 0, plen: int = 24) -> tuple[bytes, bytes]:
    cdb = struct.pack(">BBBxxIB", 0x5F, sa, (scope << 4) | rtype, plen, 0)
    data = struct.pack(">QQ4xBxxx", key, sark, flags | (1 if aptpl else 0))
    return cdb, data


def out(lu, nexus, sa, key=0, sark=0, rtype=0, **kw):
    cdb, data = prout(sa, key, sark, rtype, **kw)
    return lu.execute(nexus, cdb, data)


def register(lu, nexus, key, **kw):
    good(out(lu, nexus, 6, sark=key, **kw))  # REGISTER AND IGNORE EXISTING KEY


def reserve(lu, nexus, key, rtype):
    good(out(lu, nexus, 1, key=key, rtype=rtype))


def read_keys(lu, nexus=A):
    d = good(lu.execute(nexus, prin(0), None))
    gen, n = struct.unpack_from(">II", d)
    assert n == len(d) - 8
    return gen, [struct.unpack_from(">Q", d, 8 + i)[0] for i in range(0, n, 8)]


def read_reservation(lu, nexus=A):
    d = good(lu.execute(nexus, prin(1), None))
    gen, n = struct.unpack_from(">II", d)
    if n == 0:
        return gen, None
    assert n == 16 and len(d) == 24
    key, = struct.unpack_from(">Q", d, 8)
    return gen, (key, d[21] >> 4, d[21] & 0x0F)


def can_read(lu, nexus) -> bool:
    r = lu.execute(nexus, rw10(0x28, 1, 1), None)
    assert r.status in (0, CONFLICT), r
    return r.status == 0


def can_write(lu, nexus) -> bool:
    r = lu.execute(nexus, rw10(0x2A, 1, 1), bytes(BS))
    assert r.status in (0, CONFLICT), r
    return r.status == 0


def drain_ua(lu, nexus):
    """Sense (asc, ascq) of every pending unit attention, via TEST UNIT READY."""
    seen = []
    for _ in range(8):
        r = lu.execute(nexus, bytes(6), None)
        if r.status != 2:
            return seen
        s = decode_sense(r.sense)
        assert s.key == 6
        seen.append((s.asc, s.ascq))
    raise AssertionError(seen)


@pytest.fixture
def lus(image):
    made = []

    def make(**kw):
        unit = LogicalUnit(RawImage(image), identity(), **kw)
        for n in (A, B, C):
            ready(unit, n)
        made.append(unit)
        return unit

    yield make
    for u in made:
        u.close()


@pytest.fixture
def lu(lus):
    return lus()


# ------------------------------------------------------------ PR IN


def test_no_keys_no_reservation(lu):
    assert read_keys(lu) == (0, [])
    assert read_reservation(lu) == (0, None)


def test_report_capabilities(lu):
    d = good(lu.execute(A, prin(2), None))
    assert len(d) == 8
    length, caps, allow = struct.unpack_from(">HBB", d)
    assert length == 8
    assert caps & 0x01  # PTPL_C
    assert not caps & 0x10 and not caps & 0x04 and not caps & 0x08  # CRH, ATP_C, SIP_C
    assert (allow >> 4) & 0x07 <= 5 and allow & 0x80  # TMV, ALLOW COMMANDS
    assert not allow & 0x01  # PTPL_A: nothing persisted yet
    assert d[4:6] == bytes((0xEA, 0x01))
    register(lu, A, KA, aptpl=False)
    assert not good(lu.execute(A, prin(2), None))[3] & 0x01


@pytest.mark.parametrize("sa", [4, 5, 0x10, 0x1F])
def test_prin_bad_service_action(lu, sa):
    s = check(lu.execute(A, prin(sa), None), 5, 0x24)
    assert s.cd and s.field == 1


def test_read_keys_allocation_length(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    d = good(lu.execute(A, prin(0, alloc=8), None))
    assert struct.unpack(">II", d) == (2, 16)
    d = good(lu.execute(A, prin(0, alloc=12), None))
    assert len(d) == 12
    assert good(lu.execute(A, prin(0, alloc=0), None)) == b""


def test_read_full_status(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, B, KB, WE_RO)
    d = good(lu.execute(A, prin(3), None))
    gen, n = struct.unpack_from(">II", d)
    assert gen == 2 and n == len(d) - 8
    pos, found = 8, {}
    while pos < len(d):
        key, flags, scope_type, rtpi, dlen = struct.unpack_from(">Q4xBB4xHI", d, pos)
        tid = d[pos + 24:pos + 24 + dlen]
        pos += 24 + dlen
        assert tid[0] == 0x45  # format 01b, iSCSI
        tlen, = struct.unpack_from(">H", tid, 2)
        assert tlen == dlen - 4 and tlen % 4 == 0 and tlen >= 20
        name = tid[4:].split(b"\0")[0].decode()
        found[name] = (key, flags & 0x01, scope_type, rtpi)
    assert found == {
        "iqn.1994-05.com.example:a,i,0x023d00000001": (KA, 0, 0, 1),
        "iqn.1994-05.com.example:b,i,0x023d00000002": (KB, 1, WE_RO, 1),
    }


def test_transport_id_from_short_nexus_form():
    from netstore.scsi.reservations import transport_id

    tid = transport_id("iqn.x:y,0x023d00000001")
    assert tid[4:].split(b"\0")[0] == b"iqn.x:y,i,0x023d00000001"


# ----------------------------------------------------------- REGISTER


def test_register_change_unregister_and_generation(lu):
    good(out(lu, A, 0, sark=KA))  # REGISTER from unregistered with key 0
    assert read_keys(lu) == (1, [KA])
    # wrong current key: conflict
    assert out(lu, A, 0, key=KA + 1, sark=KA + 2).status == CONFLICT
    good(out(lu, A, 0, key=KA, sark=KA + 5))
    assert read_keys(lu) == (2, [KA + 5])
    # REGISTER AND IGNORE EXISTING KEY ignores the key field
    good(out(lu, A, 6, key=999, sark=KA))
    assert read_keys(lu) == (3, [KA])
    good(out(lu, A, 0, key=KA, sark=0))
    assert read_keys(lu) == (4, [])
    # unregistered nexus registering key 0 does nothing, generation unchanged
    good(out(lu, A, 0, sark=0))
    assert read_keys(lu) == (4, [])
    # unregistered nexus giving a nonzero key: conflict
    assert out(lu, B, 0, key=KB, sark=KB).status == CONFLICT


def test_parameter_list_length_and_flags(lu):
    s = check(out(lu, A, 6, sark=KA, plen=23), 5, 0x1A)
    check(out(lu, A, 6, sark=KA, plen=28), 5, 0x1A)
    s = check(out(lu, A, 6, sark=KA, flags=0x08), 5, 0x26)  # SPEC_I_PT
    assert not s.cd and s.field == 20
    check(out(lu, A, 6, sark=KA, flags=0x04), 5, 0x26)  # ALL_TG_PT
    s = check(out(lu, A, 8, sark=KA), 5, 0x24)  # reserved service action
    assert s.field == 1
    check(out(lu, A, 9, sark=KA), 5, 0x24)
    assert read_keys(lu) == (0, [])


def test_reserve_bad_scope_or_type(lu):
    register(lu, A, KA)
    check(out(lu, A, 1, key=KA, rtype=2), 5, 0x24)
    check(out(lu, A, 1, key=KA, rtype=WE, scope=1), 5, 0x24)
    assert read_reservation(lu)[1] is None


# ------------------------------------------------------------ RESERVE


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_reserve_and_release_each_type(lu, rtype):
    register(lu, A, KA)
    reserve(lu, A, KA, rtype)
    key = 0 if rtype in (WE_AR, EA_AR) else KA
    assert read_reservation(lu) == (1, (key, 0, rtype))
    reserve(lu, A, KA, rtype)  # same again: GOOD, nothing changes
    good(out(lu, A, 2, key=KA, rtype=rtype))
    assert read_reservation(lu) == (1, None)  # RESERVE/RELEASE do not count


def test_reserve_needs_registration_and_right_key(lu):
    assert out(lu, A, 1, key=KA, rtype=WE).status == CONFLICT
    register(lu, A, KA)
    assert out(lu, A, 1, key=KB, rtype=WE).status == CONFLICT
    register(lu, B, KB)
    reserve(lu, A, KA, WE)
    assert out(lu, B, 1, key=KB, rtype=WE).status == CONFLICT  # held by A
    assert out(lu, A, 1, key=KA, rtype=EA).status == CONFLICT  # other type


# Access per type: (registered B reads, registered B writes, unregistered C
# reads, unregistered C writes); the holder A may always read and write.
ACCESS = {
    WE: (True, False, True, False),
    EA: (False, False, False, False),
    WE_RO: (True, True, True, False),
    EA_RO: (True, True, False, False),
    WE_AR: (True, True, True, False),
    EA_AR: (True, True, False, False),
}


@pytest.mark.parametrize("rtype", ALL_TYPES)
def test_access_per_type(lu, rtype):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, rtype)
    assert can_read(lu, A) and can_write(lu, A)
    assert (can_read(lu, B), can_write(lu, B), can_read(lu, C), can_write(lu, C)) == ACCESS[rtype]
    # commands any nexus may send
    for nexus in (B, C):
        good(lu.execute(nexus, bytes(6), None))  # TEST UNIT READY
        good(lu.execute(nexus, bytes((0x12, 0, 0, 0, 36, 0)), None))  # INQUIRY
        good(lu.execute(nexus, bytes((0x25,)) + bytes(9), None))  # READ CAPACITY(10)
        good(lu.execute(nexus, prin(0), None))
    # write-side commands conflict for a non-registrant
    assert lu.execute(C, bytes((0x35,)) + bytes(9), None).status == CONFLICT  # SYNC CACHE
    assert lu.execute(C, bytes((0x15, 0x10, 0, 0, 0, 0)), None).status == CONFLICT


def test_write_is_not_done_on_conflict(lu):
    register(lu, A, KA)
    reserve(lu, A, KA, EA)
    assert lu.execute(C, rw10(0x2A, 3, 1), b"\xff" * BS).status == CONFLICT
    assert good(lu.execute(A, rw10(0x28, 3, 1), None)) == bytes(BS)


def test_holder_unregisters_releases_we(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, WE)
    good(out(lu, A, 0, key=KA, sark=0))
    assert read_reservation(lu)[1] is None
    assert drain_ua(lu, B) == []  # no UA for a WE reservation


def test_holder_unregisters_releases_registrants_only_with_ua(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, WE_RO)
    good(out(lu, A, 0, key=KA, sark=0))
    assert read_reservation(lu)[1] is None
    assert drain_ua(lu, B) == [(0x2A, 0x04)]


def test_all_registrants_survives_until_last_registrant(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, EA_AR)
    good(out(lu, A, 0, key=KA, sark=0))
    assert read_reservation(lu)[1] == (0, 0, EA_AR)
    assert not can_read(lu, A)  # A is no longer a registrant
    assert can_write(lu, B)
    good(out(lu, B, 2, key=KB, rtype=EA_AR))
    assert read_reservation(lu)[1] is None


# ------------------------------------------------------------ RELEASE


def test_release_by_non_holder_does_nothing(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, EA)
    good(out(lu, B, 2, key=KB, rtype=EA))
    assert read_reservation(lu)[1] == (KA, 0, EA)
    assert out(lu, C, 2, key=0, rtype=EA).status == CONFLICT  # not registered


def test_release_with_wrong_type_is_invalid(lu):
    register(lu, A, KA)
    reserve(lu, A, KA, WE)
    check(out(lu, A, 2, key=KA, rtype=EA), 5, 0x26, 0x04)
    assert read_reservation(lu)[1] == (KA, 0, WE)


def test_release_registrants_only_sends_released_ua(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    register(lu, C, KC)
    reserve(lu, A, KA, EA_RO)
    good(out(lu, A, 2, key=KA, rtype=EA_RO))
    assert drain_ua(lu, A) == []
    assert drain_ua(lu, B) == [(0x2A, 0x04)]
    assert drain_ua(lu, C) == [(0x2A, 0x04)]


# -------------------------------------------------------------- CLEAR


def test_clear(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    reserve(lu, A, KA, EA)
    assert out(lu, C, 3, key=KC).status == CONFLICT
    assert out(lu, B, 3, key=KA).status == CONFLICT
    good(out(lu, B, 3, key=KB))
    assert read_keys(lu, B) == (3, [])
    assert read_reservation(lu, B)[1] is None
    assert drain_ua(lu, A) == [(0x2A, 0x03)]
    assert drain_ua(lu, B) == []
    assert can_write(lu, C)


# ------------------------------------------------------------ PREEMPT


@pytest.mark.parametrize("sa", [4, 5])
def test_preempt_without_reservation_removes_registration(lu, sa):
    register(lu, A, KA)
    register(lu, B, KB)
    good(out(lu, B, sa, key=KB, sark=KA, rtype=EA))
    assert read_keys(lu, B) == (3, [KB])
    assert read_reservation(lu, B)[1] is None
    assert drain_ua(lu, A) == [(0x2A, 0x05)]
    assert drain_ua(lu, B) == []


def test_preempt_holder_takes_reservation(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    register(lu, C, KC)
    reserve(lu, A, KA, WE)
    good(out(lu, B, 4, key=KB, sark=KA, rtype=EA))
    assert read_keys(lu, B) == (4, [KB, KC])
    assert read_reservation(lu, B)[1] == (KB, 0, EA)
    assert drain_ua(lu, A) == [(0x2A, 0x05)]
    assert drain_ua(lu, C) == [(0x2A, 0x04)]  # type changed
    assert can_write(lu, B) and not can_read(lu, C)


def test_preempt_errors(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    assert out(lu, B, 4, key=KB, sark=0x1234, rtype=EA).status == CONFLICT  # no such key
    check(out(lu, B, 4, key=KB, sark=0, rtype=EA), 5, 0x26)  # zero key, no AR reservation
    assert out(lu, C, 4, key=KC, sark=KA, rtype=EA).status == CONFLICT  # not registered
    check(out(lu, B, 4, key=KB, sark=KA, rtype=2), 5, 0x24)
    assert read_keys(lu) == (2, [KA, KB])


def test_preempt_all_registrants_with_zero_key(lu):
    register(lu, A, KA)
    register(lu, B, KB)
    register(lu, C, KC)
    reserve(lu, A, KA, WE_AR)
    good(out(lu, B, 4, key=KB, sark=0, rtype=WE))
    assert read_keys(lu, B) == (4, [KB])
    assert read_reservation(lu, B)[1] == (KB, 0, WE)
    assert drain_ua(lu, A) == [(0x2A, 0x05)]
    assert drain_ua(lu, C) == [(0x2A, 0x05)]


def test_registrations_survive_nexus_loss_and_reset(lu):
    register(lu, A, KA)
    reserve(lu, A, KA, EA)
    lu.nexus_gone(A)
    lu.reset(B)
    assert read_keys(lu, B) == (1, [KA])
    assert read_reservation(lu, B)[1] == (KA, 0, EA)
    assert not can_read(lu, B)


# -------------------------------------------------------------- APTPL


def test_aptpl_restored_after_recreating_lu(lus, tmp_path):
    store = tmp_path / "pr" / "lun0.json"
    lu1 = lus(reservation_store=store)
    register(lu1, A, KA, aptpl=True)
    register(lu1, B, KB)  # APTPL=0 here... then A again with APTPL=1
    good(out(lu1, A, 0, key=KA, sark=KA, aptpl=True))
    reserve(lu1, A, KA, WE_RO)
    doc = json.loads(store.read_text())
    assert doc["aptpl"] and doc["reservation"] == {"holder": A, "type": WE_RO}
    assert good(lu1.execute(A, prin(2), None))[3] & 0x01  # PTPL_A
    lu1.close()
    lu2 = lus(reservation_store=store)
    assert read_keys(lu2) == (3, [KA, KB])
    assert read_reservation(lu2)[1] == (KA, 0, WE_RO)
    assert not can_write(lu2, C) and can_write(lu2, B)
    assert not list(store.parent.glob(".lun0.json.*"))  # no temporary left


def test_without_aptpl_state_is_lost(lus, tmp_path):
    store = tmp_path / "lun0.json"
    lu1 = lus(reservation_store=store)
    register(lu1, A, KA, aptpl=True)
    assert store.exists()
    register(lu1, A, KA + 1)  # last REGISTER without APTPL: not kept
    reserve(lu1, A, KA + 1, EA)
    lu1.close()
    lu2 = lus(reservation_store=store)
    assert read_keys(lu2)[1] == []
    assert read_reservation(lu2)[1] is None
    assert can_write(lu2, C)


def test_no_store_never_writes(lu, tmp_path):
    register(lu, A, KA, aptpl=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "disk.img"]


# ------------------------------------------------------- RESERVE(6/10)

RESERVE6 = bytes((0x16, 0, 0, 0, 0, 0))
RELEASE6 = bytes((0x17, 0, 0, 0, 0, 0))
RESERVE10 = bytes((0x56,)) + bytes(9)
RELEASE10 = bytes((0x57,)) + bytes(9)


@pytest.mark.parametrize("res,rel", [(RESERVE6, RELEASE6), (RESERVE10, RELEASE10)])
def test_reserve_release_spc2(lu, res, rel):
    good(lu.execute(A, res, None))
    good(lu.execute(A, res, None))  # the holder again: GOOD
    assert lu.execute(B, res, None).status == CONFLICT
    good(lu.execute(B, rel, None))  # non-holder RELEASE: GOOD, no effect
    assert can_read(lu, A) and can_write(lu, A)
    assert not can_read(lu, B) and not can_write(lu, B)
    assert lu.execute(B, bytes((0x1A, 0, 0x3F, 0, 255, 0)), None).status == CONFLICT
    assert lu.execute(B, bytes(6), None).status == CONFLICT  # TEST UNIT READY
    good(lu.execute(B, bytes((0x12, 0, 0, 0, 36, 0)), None))
    good(lu.execute(B, bytes((0x03, 0, 0, 0, 18, 0)), None))
    good(lu.execute(A, rel, None))
    good(lu.execute(B, res, None))
    good(lu.execute(B, rel, None))


def test_spc2_dropped_on_reset_and_nexus_loss(lu):
    good(lu.execute(A, RESERVE6, None))
    lu.reset(C)
    drain_ua(lu, A)
    drain_ua(lu, B)
    good(lu.execute(B, RESERVE6, None))
    lu.nexus_gone(B)
    good(lu.execute(A, RESERVE6, None))
    lu.nexus_gone(B)  # not the holder: nothing happens
    assert lu.execute(C, RESERVE6, None).status == CONFLICT


def test_spc2_reserve_conflicts_with_registrations(lu):
    register(lu, B, KB)
    assert lu.execute(A, RESERVE6, None).status == CONFLICT
    good(lu.execute(A, RELEASE6, None))
    assert lu.execute(B, RESERVE10, None).status == CONFLICT


def test_spc2_reservation_blocks_pr_from_others(lu):
    good(lu.execute(A, RESERVE6, None))
    assert out(lu, B, 6, sark=KB).status == CONFLICT
    register(lu, A, KA)


@pytest.mark.parametrize("cdb", [
    bytes((0x16, 0x01, 0, 0, 0, 0)),  # extent
    bytes((0x16, 0x10, 0, 0, 0, 0)),  # 3rd party (obsolete)
    bytes((0x56, 0x10)) + bytes(8),  # 3RDPTY
    bytes((0x56, 0x02)) + bytes(8),  # LONGID
    bytes((0x57, 0x10)) + bytes(8),
])
def test_spc2_third_party_and_extents_invalid(lu, cdb):
    s = check(lu.execute(A, cdb, None), 5, 0x24)
    assert s.cd and s.field == 1
    good(lu.execute(B, RESERVE6, None))  # nothing was reserved by A


def test_reservation_commands_in_rsoc(lu):
    from tests.scsi.scsi_cdb import rsoc

    d = good(lu.execute(A, rsoc(0), None))
    ops = set()
    for pos in range(4, len(d), 8):
        op, sa, flags = struct.unpack_from(">BxHxB", d, pos)
        ops.add((op, sa if flags & 1 else None))
    assert {(0x16, None), (0x17, None), (0x56, None), (0x57, None)} <= ops
    assert {(0x5E, sa) for sa in range(4)} <= ops
    assert {(0x5F, sa) for sa in range(7)} <= ops


# -------------------------------------------------- REGISTER AND MOVE


def move(lu, nexus, key, sark, dest_tid, *, unreg=False, aptpl=False, rtpi=1, plen=None):
    body = struct.pack(">QQxBHI", key, sark, (2 if unreg else 0) | (1 if aptpl else 0), rtpi,
                       len(dest_tid)) + dest_tid
    cdb = struct.pack(">BBBxxIB", 0x5F, 7, WE, len(body) if plen is None else plen, 0)
    return lu.execute(nexus, cdb, body)


def test_register_and_move(lu):
    from netstore.scsi.reservations import transport_id

    register(lu, A, KA)
    reserve(lu, A, KA, EA)
    good(move(lu, A, KA, KB, transport_id("iqn.1994-05.com.example:b,i,0x023D00000002")))
    assert read_keys(lu, B) == (2, [KA, KB])
    assert read_reservation(lu, B)[1] == (KB, 0, EA)
    assert can_write(lu, B) and not can_read(lu, A)
    good(move(lu, B, KB, KC, transport_id(C), unreg=True))
    assert read_keys(lu, C) == (3, [KA, KC])
    assert read_reservation(lu, C)[1] == (KC, 0, EA)


def test_register_and_move_errors(lu):
    from netstore.scsi.reservations import transport_id

    register(lu, A, KA)
    register(lu, B, KB)
    assert move(lu, A, KA, KC, transport_id(C)).status == CONFLICT  # no reservation
    reserve(lu, A, KA, WE)
    assert move(lu, B, KB, KC, transport_id(C)).status == CONFLICT  # not the holder
    assert move(lu, A, KB, KC, transport_id(C)).status == CONFLICT  # wrong key
    check(move(lu, A, KA, 0, transport_id(C)), 5, 0x26)  # zero SARK
    check(move(lu, A, KA, KC, transport_id(A)), 5, 0x26)  # to itself
    check(move(lu, A, KA, KC, transport_id(C), rtpi=2), 5, 0x26)
    name_only = struct.pack(">BxH", 0x05, 32) + b"iqn.1994-05.com.example:c".ljust(32, b"\0")
    check(move(lu, A, KA, KC, name_only), 5, 0x26)
    check(move(lu, A, KA, KC, transport_id(C), plen=30), 5, 0x1A)
    assert read_reservation(lu, B)[1] == (KA, 0, WE)
    assert read_keys(lu, B) == (2, [KA, KB])
