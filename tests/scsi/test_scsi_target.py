# Unit attention lifecycle, REPORT LUNS, missing LUNs, resets, LUN map changes,
# REQUEST SENSE and the small commands (SPC-4 5.14, 6.33; SAM-5 5.9, 6.3).
from __future__ import annotations

import struct

import pytest

from tests.scsi.scsi_cdb import (
    NEXUS,
    OTHER,
    cdb6,
    check,
    decode_sense,
    good,
    inquiry,
    report_luns,
    rw10,
)

TUR = bytes(6)


def request_sense(unit_or_target, nexus, lun=None, alloc=252, desc=0):
    cdb = cdb6(0x03, desc, 0, 0, alloc)
    if lun is None:
        return unit_or_target.execute(nexus, cdb, None)
    return unit_or_target.execute(nexus, lun, cdb, None)


def test_power_on_ua_once_per_nexus(fresh_lu):
    check(fresh_lu.execute(NEXUS, TUR, None), 6, 0x29, 0x00)
    good(fresh_lu.execute(NEXUS, TUR, None))
    check(fresh_lu.execute(OTHER, rw10(0x28, 0, 1), None), 6, 0x29, 0x00)
    good(fresh_lu.execute(OTHER, rw10(0x28, 0, 1), None))


def test_request_sense_reports_and_consumes_ua(fresh_lu):
    r = request_sense(fresh_lu, NEXUS)
    s = decode_sense(good(r))
    assert (s.key, s.asc, s.ascq) == (6, 0x29, 0)
    s = decode_sense(good(request_sense(fresh_lu, NEXUS)))
    assert (s.key, s.asc, s.ascq) == (0, 0, 0)
    good(fresh_lu.execute(NEXUS, TUR, None))


def test_request_sense_alloc_and_desc(lu):
    assert len(good(request_sense(lu, NEXUS, alloc=8))) == 8
    check(request_sense(lu, NEXUS, desc=1), 5, 0x24)


def test_lu_reset_ua_for_others(lu):
    ready_other = lu.execute(OTHER, TUR, None)
    assert ready_other.status == 2
    lu.reset(NEXUS)
    good(lu.execute(NEXUS, TUR, None))
    check(lu.execute(OTHER, TUR, None), 6, 0x29, 0x03)
    good(lu.execute(OTHER, TUR, None))
    lu.reset(None)
    check(lu.execute(NEXUS, TUR, None), 6, 0x29, 0x03)


def test_reset_supersedes_pending(lu):
    lu.execute(OTHER, TUR, None)
    from netstore.scsi.sense import MODE_PARAMETERS_CHANGED

    lu.establish_unit_attention(MODE_PARAMETERS_CHANGED, except_nexus=NEXUS)
    lu.reset(NEXUS)
    check(lu.execute(OTHER, TUR, None), 6, 0x29, 0x03)
    good(lu.execute(OTHER, TUR, None))


def test_nexus_loss(lu):
    lu.nexus_gone(NEXUS)
    check(lu.execute(NEXUS, TUR, None), 6, 0x29, 0x07)
    good(lu.execute(NEXUS, TUR, None))


def test_misc_commands(lu):
    good(lu.execute(NEXUS, TUR, None))
    good(lu.execute(NEXUS, cdb6(0x1B, 1, 0, 0, 0x01), None))  # START, IMMED
    good(lu.execute(NEXUS, cdb6(0x1B, 0, 0, 0, 0x00), None))  # STOP: flush
    good(lu.execute(NEXUS, cdb6(0x1B, 0, 0, 0, 0x02), None))  # LOEJ
    good(lu.execute(NEXUS, cdb6(0x1B, 0, 0, 0, 0x30), None))  # power condition STANDBY
    check(lu.execute(NEXUS, cdb6(0x1B, 0, 0, 0, 0x40), None), 5, 0x24)  # reserved
    for prevent in range(4):
        good(lu.execute(NEXUS, cdb6(0x1E, 0, 0, 0, prevent), None))
    good(lu.execute(NEXUS, rw10(0x28, 0, 1), None))  # still readable after STOP


def test_unknown_opcode(lu):
    for op in (0x02, 0x42, 0xC0, 0xFF):
        check(lu.execute(NEXUS, bytes((op,)) + bytes(15), None), 5, 0x20)


def test_short_and_empty_cdb(lu):
    check(lu.execute(NEXUS, b"", None), 5, 0x24)
    check(lu.execute(NEXUS, b"\x28\x00\x00", None), 5, 0x24)


def test_ua_is_per_nexus_and_not_blocking_inquiry(fresh_lu):
    good(fresh_lu.execute(NEXUS, inquiry(), None))
    good(fresh_lu.execute(NEXUS, report_luns(), None))
    check(fresh_lu.execute(NEXUS, TUR, None), 6, 0x29)


# ------------------------------------------------------------ ScsiTarget


def luns_of(data: bytes) -> list[int]:
    n = struct.unpack_from(">I", data)[0]
    assert len(data) == 8 + n and data[4:8] == bytes(4)
    out = []
    for i in range(8, len(data), 8):
        entry = data[i:i + 8]
        assert entry[2:] == bytes(6)
        assert entry[0] >> 6 in (0, 1)
        out.append(((entry[0] & 0x3F) << 8) | entry[1])
    return out


@pytest.mark.parametrize("select", [0, 2])
def test_report_luns(target, select):
    assert luns_of(good(target.execute(NEXUS, 0, report_luns(select), None))) == [0, 3]
    # works on a LUN that does not exist too
    assert luns_of(good(target.execute(NEXUS, 9, report_luns(select), None))) == [0, 3]


def test_report_luns_well_known_and_errors(target):
    assert luns_of(good(target.execute(NEXUS, 0, report_luns(1), None))) == []
    s = check(target.execute(NEXUS, 0, report_luns(3), None), 5, 0x24)
    assert s.field == 2
    check(target.execute(NEXUS, 0, report_luns(0, alloc=15), None), 5, 0x24)
    d = good(target.execute(NEXUS, 0, report_luns(0, alloc=16), None))
    assert len(d) == 16 and struct.unpack_from(">I", d)[0] == 16


def test_flat_space_lun_encoding(image, tmp_path):
    from netstore.disk.raw import RawImage
    from netstore.scsi import LogicalUnit, ScsiTarget
    from tests.scsi.units import identity

    t = ScsiTarget("t", {300: LogicalUnit(RawImage(image), identity())})
    d = good(t.execute(NEXUS, 300, report_luns(), None))
    assert d[8:16] == bytes((0x41, 0x2C)) + bytes(6)
    t.close()


def test_missing_lun(target):
    d = good(target.execute(NEXUS, 7, inquiry(alloc=96), None))
    assert d[0] == 0x7F and len(d) == 96
    check(target.execute(NEXUS, 7, inquiry(1, 0x80), None), 5, 0x25)
    s = decode_sense(good(request_sense(target, NEXUS, 7)))
    assert (s.key, s.asc) == (5, 0x25)
    check(target.execute(NEXUS, 7, TUR, None), 5, 0x25)
    check(target.execute(NEXUS, 7, rw10(0x28, 0, 1), None), 5, 0x25)
    check(target.execute(NEXUS, 7, b"", None), 5, 0x25)


def test_target_routes_and_tracks_ua_per_lun(target):
    check(target.execute(NEXUS, 0, TUR, None), 6, 0x29)
    good(target.execute(NEXUS, 0, TUR, None))
    check(target.execute(NEXUS, 3, TUR, None), 6, 0x29)
    good(target.execute(NEXUS, 3, rw10(0x28, 0, 1), None))
    check(target.execute(NEXUS, 3, rw10(0x28, 64, 1), None), 5, 0x21)  # LUN 3 is 64 blocks


def test_target_resets(target):
    for lun in (0, 3):
        target.execute(NEXUS, lun, TUR, None)
        target.execute(OTHER, lun, TUR, None)
    target.target_reset(NEXUS, cold=False)
    good(target.execute(NEXUS, 0, TUR, None))
    check(target.execute(OTHER, 0, TUR, None), 6, 0x29, 0x02)
    check(target.execute(OTHER, 3, TUR, None), 6, 0x29, 0x02)
    target.target_reset(NEXUS, cold=True)
    check(target.execute(NEXUS, 0, TUR, None), 6, 0x29, 0x01)
    check(target.execute(OTHER, 3, TUR, None), 6, 0x29, 0x01)
    check(target.execute(OTHER, 0, TUR, None), 6, 0x29, 0x01)
    target.lun_reset(3, NEXUS)
    check(target.execute(OTHER, 3, TUR, None), 6, 0x29, 0x03)
    good(target.execute(OTHER, 0, TUR, None))
    target.lun_reset(99, NEXUS)  # no such LUN: ignored


def test_target_nexus_gone(target):
    target.execute(NEXUS, 0, TUR, None)
    target.nexus_gone(NEXUS)
    check(target.execute(NEXUS, 0, TUR, None), 6, 0x29, 0x07)


def test_set_luns_reported_luns_changed(target):
    target.execute(NEXUS, 0, TUR, None)
    luns = target.luns
    del luns[3]
    target.set_luns(luns)
    check(target.execute(NEXUS, 0, TUR, None), 6, 0x3F, 0x0E)
    good(target.execute(NEXUS, 0, TUR, None))
    check(target.execute(NEXUS, 3, TUR, None), 5, 0x25)
    # REPORT LUNS clears the condition without it being reported
    target.set_luns(luns)
    assert luns_of(good(target.execute(NEXUS, 0, report_luns(), None))) == [0]
    good(target.execute(NEXUS, 0, TUR, None))
