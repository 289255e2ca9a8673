# MODE SENSE(6/10) data format and MODE SELECT(6/10) (SPC-4 7.5, SBC-3 6.4).
from __future__ import annotations

import struct

import pytest

from tests.scsi.scsi_cdb import (
    NEXUS,
    OTHER,
    check,
    good,
    mode_select6,
    mode_select10,
    mode_sense6,
    mode_sense10,
    rw10,
)
from tests.scsi.units import BLOCKS

BS = 512


def split_pages(b: bytes) -> dict[int, bytes]:
    pages, pos = {}, 0
    while pos < len(b):
        length = b[pos + 1] + 2
        pages[b[pos] & 0x3F] = b[pos:pos + length]
        pos += length
    assert pos == len(b)
    return pages


def test_mode_sense6_all_pages(lu):
    d = good(lu.execute(NEXUS, mode_sense6(0x3F), None))
    assert d[0] == len(d) - 1  # mode data length
    assert d[1] == 0  # medium type
    assert d[2] == 0x10  # DPOFUA, not write protected
    assert d[3] == 8  # one short block descriptor
    nblocks, bs_hi, bs_lo = struct.unpack_from(">IxBH", d, 4)
    assert nblocks == BLOCKS and (bs_hi << 16 | bs_lo) == BS
    pages = split_pages(d[12:])
    assert sorted(pages) == [0x08, 0x0A, 0x1C]
    assert pages[0x08][1] == 0x12 and pages[0x08][2] & 0x04  # WCE on
    assert pages[0x0A][1] == 0x0A
    assert pages[0x0A][2] & 0x04 == 0  # D_SENSE 0: fixed format
    assert pages[0x1C][1] == 0x0A


def test_mode_sense6_dbd(lu):
    d = good(lu.execute(NEXUS, mode_sense6(0x08, dbd=True), None))
    assert d[3] == 0 and len(d) == 4 + 20 and d[4] == 0x08


def test_mode_sense10_long_descriptor(lu):
    d = good(lu.execute(NEXUS, mode_sense10(0x08, llbaa=True), None))
    mdl, _medium, devspec, longlba, bdl = struct.unpack_from(">HBBBxH", d)
    assert mdl == len(d) - 2 and devspec == 0x10
    assert longlba == 1 and bdl == 16
    nblocks, bs = struct.unpack_from(">Q4xI", d, 8)
    assert (nblocks, bs) == (BLOCKS, BS)
    assert d[24] == 0x08


def test_mode_sense10_short_descriptor(lu):
    d = good(lu.execute(NEXUS, mode_sense10(0x0A), None))
    assert struct.unpack_from(">H", d, 6)[0] == 8 and d[4] == 0
    assert split_pages(d[16:]).keys() == {0x0A}


def test_page_control_values(lu):
    changeable = good(lu.execute(NEXUS, mode_sense6(0x08, pc=1, dbd=True), None))[4:]
    assert changeable[2] == 0x04 and changeable[3:] == bytes(17)
    control_ch = good(lu.execute(NEXUS, mode_sense6(0x0A, pc=1, dbd=True), None))[4:]
    # only SWP (byte 4 bit 3) of the control page is changeable
    assert control_ch[2:] == bytes([0, 0, 0x08]) + bytes(7)
    default = good(lu.execute(NEXUS, mode_sense6(0x08, pc=2, dbd=True), None))[4:]
    assert default[2] & 0x04
    check(lu.execute(NEXUS, mode_sense6(0x08, pc=3), None), 5, 0x39)


def test_unsupported_page_and_subpage(lu):
    s = check(lu.execute(NEXUS, mode_sense6(0x19), None), 5, 0x24)
    assert s.field == 2
    s = check(lu.execute(NEXUS, mode_sense6(0x08, subpage=1), None), 5, 0x24)
    assert s.field == 3
    good(lu.execute(NEXUS, mode_sense6(0x3F, subpage=0xFF), None))


def test_mode_sense_allocation_length(lu):
    assert len(good(lu.execute(NEXUS, mode_sense6(0x3F, alloc=4), None))) == 4


def test_write_protect_bit(ro_lu):
    d = good(ro_lu.execute(NEXUS, mode_sense6(0x3F), None))
    assert d[2] & 0x80
    d = good(ro_lu.execute(NEXUS, mode_sense10(0x3F), None))
    assert d[3] & 0x80


def caching(wce: bool) -> bytes:
    p = bytearray(20)
    p[0], p[1], p[2] = 0x08, 0x12, 0x04 if wce else 0
    return bytes(p)


def test_mode_select_changes_wce(lu):
    lu.execute(OTHER, bytes(6), None)  # OTHER sees the power-on UA first
    params = bytes(4) + caching(False)
    good(lu.execute(NEXUS, mode_select6(len(params)), params))
    assert lu.write_cache is False
    d = good(lu.execute(NEXUS, mode_sense6(0x08, dbd=True), None))
    assert d[4 + 2] & 0x04 == 0
    # other nexuses learn of it by a unit attention
    check(lu.execute(OTHER, bytes(6), None), 6, 0x2A, 0x01)
    # WCE off: writes are flushed, still land
    good(lu.execute(NEXUS, rw10(0x2A, 0, 1), b"w" * BS))
    params10 = bytes(8) + caching(True)
    good(lu.execute(NEXUS, mode_select10(len(params10)), params10))
    assert lu.write_cache is True


def test_mode_select_with_block_descriptor(lu):
    bd = struct.pack(">IxBH", 0, 0, BS)
    params = bytes((0, 0, 0, 8)) + bd + caching(True)
    good(lu.execute(NEXUS, mode_select6(len(params)), params))
    bad = bytes((0, 0, 0, 8)) + struct.pack(">IxBH", 0, 0, 4096) + caching(True)
    s = check(lu.execute(NEXUS, mode_select6(len(bad)), bad), 5, 0x26)
    assert s.sksv and not s.cd


def test_mode_select_echo_of_mode_sense_is_accepted(lu):
    d = bytearray(good(lu.execute(NEXUS, mode_sense10(0x3F, dbd=True), None)))
    d[0:2] = b"\0\0"  # mode data length is reserved in MODE SELECT
    d[3] = 0
    good(lu.execute(NEXUS, mode_select10(len(d)), bytes(d)))


@pytest.mark.parametrize("offset", [3, 5, 10])
def test_mode_select_rejects_non_changeable(lu, offset):
    page = bytearray(caching(True))
    page[offset] = 0x01
    params = bytes(4) + bytes(page)
    s = check(lu.execute(NEXUS, mode_select6(len(params)), params), 5, 0x26)
    assert s.field == 4 + offset
    assert lu.write_cache is True


def test_mode_select_rejects_other_pages(lu):
    control = bytearray(good(lu.execute(NEXUS, mode_sense6(0x0A, dbd=True), None))[4:])
    good(lu.execute(NEXUS, mode_select6(4 + len(control)), bytes(4) + bytes(control)))
    control[2] ^= 0x04  # D_SENSE change: not supported
    check(lu.execute(NEXUS, mode_select6(4 + len(control)), bytes(4) + bytes(control)), 5, 0x26)
    unknown = bytes(4) + bytes((0x19, 0x06)) + bytes(6)
    check(lu.execute(NEXUS, mode_select6(len(unknown)), unknown), 5, 0x26)
    # a bad page after a good caching page: nothing applied
    params = bytes(4) + caching(False) + bytes((0x19, 0x02, 0, 0))
    check(lu.execute(NEXUS, mode_select6(len(params)), params), 5, 0x26)
    assert lu.write_cache is True


def test_mode_select_cdb_errors(lu):
    params = bytes(4) + caching(True)
    check(lu.execute(NEXUS, mode_select6(len(params), sp=True), params), 5, 0x24)
    check(lu.execute(NEXUS, mode_select6(len(params)), params[:10]), 5, 0x24)
    check(lu.execute(NEXUS, mode_select6(2), params[:2]), 5, 0x1A)
    good(lu.execute(NEXUS, mode_select6(0), None))


def test_lu_reset_restores_default_wce(lu):
    params = bytes(4) + caching(False)
    good(lu.execute(NEXUS, mode_select6(len(params)), params))
    lu.reset(NEXUS)
    assert lu.write_cache is True


def test_software_write_protect(lu):
    """SWP set by MODE SELECT: writes refused as on a read-only unit, WP shown;
    cleared again, or by a LU reset, writes work."""
    current = good(lu.execute(NEXUS, mode_sense6(0x0A, dbd=True), None))
    page = bytearray(current[4:])
    page[4] |= 0x08
    params = bytes(4) + bytes(page)
    select = bytes([0x15, 0x10, 0, 0, len(params), 0])
    good(lu.execute(NEXUS, select, params))
    d = good(lu.execute(NEXUS, mode_sense6(0x0A, dbd=True), None))
    assert d[2] & 0x80 and d[4 + 4] & 0x08  # WP in the header, SWP in the page
    write10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    check(lu.execute(NEXUS, write10, bytes(BS)), 7, 0x27)
    page[4] &= ~0x08
    good(lu.execute(NEXUS, select, bytes(4) + bytes(page)))
    good(lu.execute(NEXUS, write10, bytes(BS)))
    page[4] |= 0x08
    good(lu.execute(NEXUS, select, bytes(4) + bytes(page)))
    lu.reset(None)
    lu.execute(NEXUS, bytes(6), None)  # the reset's unit attention
    good(lu.execute(NEXUS, write10, bytes(BS)))
