# WRITE SAME, COMPARE AND WRITE, PRE-FETCH, ORWRITE, WRITE ATOMIC, GET LBA
# STATUS, READ DEFECT DATA, REPORT TARGET PORT GROUPS and data_out_length
# (SBC-4, SPC-4), written from the standards' CDB layouts.
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, ScsiTarget
from tests.scsi.scsi_cdb import NEXUS, OTHER, check, good, inquiry, rsoc, rw10, rw16
from tests.scsi.units import BLOCKS, identity, make_image, ready

BS = 512


def ws10(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x41, b1, lba, 0, n, 0)


def ws16(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x93, b1, lba, n, 0, 0)


def caw(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, b1, lba, n, 0, 0)


def orwrite(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x8B, b1, lba, n, 0, 0)


def watomic(lba: int, n: int, b1: int = 0, boundary: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, b1, lba, boundary, n, 0, 0)


def prefetch10(lba: int, n: int, immed: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x34, 0x02 if immed else 0, lba, 0, n, 0)


def prefetch16(lba: int, n: int, immed: bool = False) -> bytes:
    return struct.pack(">BBQIBB", 0x90, 0x02 if immed else 0, lba, n, 0, 0)


def get_lba_status(lba: int, alloc: int = 24) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def rdd10(flags: int, alloc: int = 32) -> bytes:
    return struct.pack(">BBB4xHB", 0x37, 0, flags, alloc, 0)


def rdd12(flags: int, alloc: int = 32) -> bytes:
    return struct.pack(">BBIIBB", 0xB7, flags, 0, alloc, 0, 0)


def rtpg(fmt: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BB4xIBB", 0xA3, (fmt << 5) | 0x0A, alloc, 0, 0)


def file_bytes(lu) -> bytes:
    with open(lu.backend.path, "rb") as f:
        return f.read()


def fill(lu, lba: int, data: bytes) -> None:
    good(lu.execute(NEXUS, rw10(0x2A, lba, len(data) // BS), data))


def vpd_b0(lu) -> bytes:
    return good(lu.execute(NEXUS, inquiry(1, 0xB0), None))


# ------------------------------------------------------------ data_out_length


def test_data_out_length(lu):
    dol = lu.data_out_length
    assert dol(bytes((0x0A, 0, 0, 0, 0, 0))) == 256 * BS  # WRITE(6) 0 = 256
    assert dol(bytes((0x0A, 0, 0, 0, 3, 0))) == 3 * BS
    assert dol(rw10(0x2A, 0, 4)) == 4 * BS
    assert dol(struct.pack(">BBIIBB", 0xAA, 0, 0, 5, 0, 0)) == 5 * BS
    assert dol(rw16(0x8A, 0, 6)) == 6 * BS
    assert dol(rw10(0x2E, 0, 2)) == 2 * BS  # WRITE AND VERIFY(10)
    assert dol(rw10(0x2F, 0, 2)) == 0  # VERIFY BYTCHK=0
    assert dol(rw10(0x2F, 0, 2, b1=0x02)) == 2 * BS  # BYTCHK=1
    assert dol(rw16(0x8F, 0, 2, b1=0x06)) == BS  # BYTCHK=11b: one block
    assert dol(ws10(0, 100)) == BS
    assert dol(ws16(0, 100)) == BS
    assert dol(ws16(0, 100, b1=0x01)) == 0  # NDOB
    assert dol(caw(0, 3)) == 6 * BS
    assert dol(orwrite(0, 7)) == 7 * BS
    assert dol(watomic(0, 8)) == 8 * BS
    assert dol(bytes((0x15, 0x10, 0, 0, 28, 0))) == 28  # MODE SELECT(6)
    assert dol(struct.pack(">BB5xHB", 0x55, 0x10, 300, 0)) == 300
    assert dol(struct.pack(">BBxxxIB", 0x5F, 0, 24, 0)) == 24  # PR OUT
    assert dol(struct.pack(">BB5xHB", 0x42, 0, 24, 0)) == 24  # UNMAP
    assert dol(rw10(0x28, 0, 8)) == 0  # READ: no Data-Out
    assert dol(inquiry()) == 0
    assert dol(bytes((0xC5, 0, 0, 0, 0, 0))) is None  # unknown
    assert dol(b"") is None
    assert dol(bytes((0x2A, 0))) is None  # too short to say


def test_target_data_out_length(target):
    assert target.data_out_length(0, rw10(0x2A, 0, 2)) == 2 * BS
    assert target.data_out_length(7, rw10(0x2A, 0, 2)) is None
    assert target.data_out_length(7, struct.pack(">BxB3xIxx", 0xA0, 0, 16)) == 0


def test_write_residuals(lu):
    """EDTL < SPDTL: GOOD, only the EDTL bytes written (FCP-4 9.4.2 a, what
    libiscsi 1.19 wants); EDTL > SPDTL: GOOD, exactly SPDTL bytes written."""
    for op, make in ((0x2A, rw10), (0x8A, rw16), (0x2E, rw10), (0x8E, rw16)):
        for buf in (b"", b"b" * 200, b"b" * BS):
            fill(lu, 0, b"a" * 4 * BS)
            good(lu.execute(NEXUS, make(op, 0, 2), buf or None))
            assert file_bytes(lu)[:4 * BS] == buf + b"a" * (4 * BS - len(buf))
    good(lu.execute(NEXUS, rw10(0x2A, 0, 1), b"b" * 10000))
    assert file_bytes(lu)[:4 * BS] == b"b" * BS + b"a" * 3 * BS
    # VERIFY with BYTCHK cannot compare what did not come: 0E/03
    check(lu.execute(NEXUS, rw10(0x2F, 0, 2, b1=0x02), b"b" * BS), 5, 0x0E, 0x03)


def test_short_data_out_refused_where_partial_makes_no_sense(lu):
    before = file_bytes(lu)
    check(lu.execute(NEXUS, ws10(0, 2), b"b" * 100), 5, 0x0E, 0x03)
    check(lu.execute(NEXUS, caw(0, 1), b"b" * BS), 5, 0x0E, 0x03)
    check(lu.execute(NEXUS, orwrite(0, 2), b"b" * BS), 5, 0x0E, 0x03)
    check(lu.execute(NEXUS, watomic(0, 2), b"b" * BS), 5, 0x0E, 0x03)
    assert file_bytes(lu) == before


# ------------------------------------------------------------- WRITE SAME


@pytest.mark.parametrize("make", [ws10, ws16])
def test_write_same(lu, make):
    block = bytes(range(256)) * 2
    good(lu.execute(NEXUS, make(3, 5), block))
    d = file_bytes(lu)
    assert d[3 * BS:8 * BS] == block * 5
    assert d[:3 * BS] == bytes(3 * BS) and d[8 * BS:9 * BS] == bytes(BS)
    # at the very end, and extra Data-Out is ignored
    good(lu.execute(NEXUS, make(BLOCKS - 2, 2), b"\x77" * 2 * BS))
    assert file_bytes(lu)[-2 * BS:] == b"\x77" * 2 * BS


@pytest.mark.parametrize("make,len_byte", [(ws10, 7), (ws16, 10)])
def test_write_same_errors(lu, make, len_byte):
    blk = b"\x55" * BS
    before = file_bytes(lu)
    s = check(lu.execute(NEXUS, make(0, 0), blk), 5, 0x24)  # WSNZ=1
    assert s.cd and s.field == len_byte
    check(lu.execute(NEXUS, make(BLOCKS - 1, 2), blk), 5, 0x21)
    check(lu.execute(NEXUS, make(0xFFFFFFFF, 1), blk), 5, 0x21)
    for b1, bit in ((0x20, 7), (0x10, 4), (0x08, 3), (0x04, 2)):
        s = check(lu.execute(NEXUS, make(0, 1, b1), blk), 5, 0x24)
        assert (s.field, s.bit) == (1, bit)
    check(lu.execute(NEXUS, make(0, 1), blk[:100]), 5, 0x0E, 0x03)
    check(lu.execute(NEXUS, make(0, 1), None), 5, 0x0E, 0x03)
    assert file_bytes(lu) == before


def test_write_same_limit_and_ndob(tmp_path):
    # 40 MiB image: above MAXIMUM WRITE SAME LENGTH (32 MiB)
    nblocks = 40 * 2048
    unit = LogicalUnit(RawImage(make_image(tmp_path / "big.img", nblocks)), identity())
    ready(unit, NEXUS)
    try:
        max_ws = struct.unpack_from(">Q", vpd_b0(unit), 36)[0]
        assert max_ws == 8 * 2048  # no more than one transfer: the suite writes it first
        check(unit.execute(NEXUS, ws16(0, max_ws + 1), b"\x01" * BS), 5, 0x24)
        good(unit.execute(NEXUS, ws16(0, max_ws), b"\x01" * BS))
        good(unit.execute(NEXUS, ws16(5, 3, b1=0x01), None))  # NDOB: zeros
        d = file_bytes(unit)
        assert d[:5 * BS] == b"\x01" * 5 * BS and d[5 * BS:8 * BS] == bytes(3 * BS)
        assert d[8 * BS:9 * BS] == b"\x01" * BS
        check(unit.execute(NEXUS, ws10(0, 1, b1=0x01), b"\x01" * BS), 5, 0x24)
    finally:
        unit.close()


def test_write_same_read_only(ro_lu):
    check(ro_lu.execute(NEXUS, ws10(0, 1), bytes(BS)), 7, 0x27)


# ------------------------------------------------------ COMPARE AND WRITE


def test_compare_and_write(lu):
    fill(lu, 10, b"A" * 3 * BS)
    good(lu.execute(NEXUS, caw(10, 3), b"A" * 3 * BS + b"B" * 3 * BS))
    assert file_bytes(lu)[10 * BS:13 * BS] == b"B" * 3 * BS
    good(lu.execute(NEXUS, caw(10, 3, b1=0x18), b"B" * 3 * BS + b"C" * 3 * BS))  # DPO FUA
    assert file_bytes(lu)[10 * BS:13 * BS] == b"C" * 3 * BS
    good(lu.execute(NEXUS, caw(10, 0), None))  # 0 blocks: nothing


@pytest.mark.parametrize("offset", [0, 1, 511, 512, 3 * BS - 27, 3 * BS - 1])
def test_compare_and_write_miscompare_writes_nothing(lu, offset):
    fill(lu, 10, b"A" * 3 * BS)
    before = file_bytes(lu)
    verify = bytearray(b"A" * 3 * BS)
    verify[offset] = ord("Z")
    s = check(lu.execute(NEXUS, caw(10, 3), bytes(verify) + b"B" * 3 * BS), 0x0E, 0x1D)
    assert s.valid and s.info == offset
    assert file_bytes(lu) == before


def test_compare_and_write_errors(lu):
    data = bytes(4 * BS)
    before = file_bytes(lu)
    check(lu.execute(NEXUS, caw(BLOCKS - 1, 2), data), 5, 0x21)
    check(lu.execute(NEXUS, caw(2**64 - 1, 1), data[:2 * BS]), 5, 0x21)
    s = check(lu.execute(NEXUS, caw(0, 2, b1=0x40), data), 5, 0x24)
    assert (s.field, s.bit) == (1, 7)
    check(lu.execute(NEXUS, caw(0, 2), data[:3 * BS]), 5, 0x0E, 0x03)
    s = check(lu.execute(NEXUS, caw(0, 1), data), 5, 0x24)  # 4 blocks for NLB 1
    assert s.field == 13
    # 256 blocks does not fit the byte: NLB 0 with 512 blocks of Data-Out
    s = check(lu.execute(NEXUS, caw(0, 0), bytes(512 * BS)), 5, 0x24)
    assert s.field == 13
    assert file_bytes(lu) == before
    assert vpd_b0(lu)[5] == 255


def test_compare_and_write_read_only(ro_lu):
    check(ro_lu.execute(NEXUS, caw(0, 1), bytes(2 * BS)), 7, 0x27)


def test_compare_and_write_is_one_command(target):
    """Two nexuses race on one block: exactly one compare matches."""
    fill_cdb = rw10(0x2A, 0, 1)
    target.execute(NEXUS, 0, fill_cdb, None)
    ready_lu = target.luns[0]
    ready(ready_lu, OTHER)
    good(target.execute(NEXUS, 0, fill_cdb, b"0" * BS))
    r1 = target.execute(NEXUS, 0, caw(0, 1), b"0" * BS + b"1" * BS)
    r2 = target.execute(OTHER, 0, caw(0, 1), b"0" * BS + b"2" * BS)
    assert (r1.status, r2.status) == (0, 2)
    assert good(target.execute(OTHER, 0, rw10(0x28, 0, 1), None)) == b"1" * BS


# -------------------------------------------------------------- ORWRITE


def test_orwrite(lu):
    fill(lu, 4, b"\x0F" * BS + b"\x00" * BS)
    good(lu.execute(NEXUS, orwrite(4, 2), b"\xF0" * BS + b"\xA5" * BS))
    d = file_bytes(lu)
    assert d[4 * BS:6 * BS] == b"\xFF" * BS + b"\xA5" * BS
    assert d[6 * BS:7 * BS] == bytes(BS)
    good(lu.execute(NEXUS, orwrite(4, 1, b1=0x18), b"\x00" * BS))
    good(lu.execute(NEXUS, orwrite(0, 0), None))


def test_orwrite_errors(lu):
    before = file_bytes(lu)
    check(lu.execute(NEXUS, orwrite(BLOCKS + 1, 0), None), 5, 0x21)
    check(lu.execute(NEXUS, orwrite(BLOCKS - 1, 2), bytes(2 * BS)), 5, 0x21)
    check(lu.execute(NEXUS, orwrite(2**63, 1), bytes(BS)), 5, 0x21)
    for p in range(1, 8):
        check(lu.execute(NEXUS, orwrite(0, 1, b1=p << 5), b"\xFF" * BS), 5, 0x24)
    check(lu.execute(NEXUS, orwrite(0, 2), b"\xFF" * BS), 5, 0x0E, 0x03)
    assert file_bytes(lu) == before


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.sampled_from(["ws10", "ws16", "ndob", "or", "write"]),
    st.integers(0, 63), st.integers(1, 8), st.binary(min_size=1, max_size=8)),
    max_size=12))
def test_random_write_same_orwrite_against_model(tmp_path_factory, ops):
    path = make_image(tmp_path_factory.mktemp("m") / "m.img", 64)
    unit = LogicalUnit(RawImage(path), identity())
    ready(unit, NEXUS)
    model = bytearray(64 * BS)
    try:
        for kind, lba, n, seed in ops:
            pat = (seed * (n * BS // len(seed) + 1))[:n * BS]
            ok = lba + n <= 64
            if kind == "ws10":
                r = unit.execute(NEXUS, ws10(lba, n), pat[:BS].ljust(BS, b"\0"))
                new = pat[:BS].ljust(BS, b"\0") * n
            elif kind == "ws16":
                r = unit.execute(NEXUS, ws16(lba, n), pat[:BS].ljust(BS, b"\0"))
                new = pat[:BS].ljust(BS, b"\0") * n
            elif kind == "ndob":
                r = unit.execute(NEXUS, ws16(lba, n, b1=0x01), None)
                new = bytes(n * BS)
            elif kind == "or":
                r = unit.execute(NEXUS, orwrite(lba, n), pat)
                old = model[lba * BS:(lba + n) * BS]
                new = bytes(a | b for a, b in zip(old, pat, strict=False))
            else:
                r = unit.execute(NEXUS, rw16(0x8A, lba, n), pat)
                new = pat
            if ok:
                good(r)
                model[lba * BS:(lba + n) * BS] = new
            else:
                check(r, 5, 0x21)
        assert good(unit.execute(NEXUS, rw10(0x28, 0, 64), None)) == bytes(model)
    finally:
        unit.close()


# ---------------------------------------------------------- WRITE ATOMIC


def test_write_atomic(lu):
    good(lu.execute(NEXUS, watomic(7, 2, b1=0x18), b"\x42" * 2 * BS))
    assert file_bytes(lu)[7 * BS:9 * BS] == b"\x42" * 2 * BS
    good(lu.execute(NEXUS, watomic(0, 0), None))
    check(lu.execute(NEXUS, watomic(BLOCKS - 1, 2), bytes(2 * BS)), 5, 0x21)
    s = check(lu.execute(NEXUS, watomic(0, 1, boundary=1), bytes(BS)), 5, 0x24)
    assert s.field == 10
    check(lu.execute(NEXUS, watomic(0, 2), bytes(BS)), 5, 0x0E, 0x03)
    max_atomic, align, gran = struct.unpack_from(">III", vpd_b0(lu), 44)
    max_xfer = struct.unpack_from(">I", vpd_b0(lu), 8)[0]
    assert 0 < max_atomic <= max_xfer and align == 0 and gran == 0


# ------------------------------------------------------------- PRE-FETCH


@pytest.mark.parametrize("make", [prefetch10, prefetch16])
def test_prefetch(lu, make):
    for immed in (False, True):
        r = lu.execute(NEXUS, make(0, 8, immed), None)
        assert (r.status, r.data, r.sense) == (0x04, b"", b"")  # CONDITION MET
    assert lu.execute(NEXUS, make(BLOCKS - 1, 1), None).status == 0x04
    assert lu.execute(NEXUS, make(0, 0), None).status == 0x04  # to the end: 1 MiB
    check(lu.execute(NEXUS, make(BLOCKS - 1, 2), None), 5, 0x21)
    check(lu.execute(NEXUS, make(BLOCKS, 0), None), 5, 0x21)
    check(lu.execute(NEXUS, make(0xFFFFFFFF, 1), None), 5, 0x21)


def test_prefetch_too_big_for_cache_is_good(tmp_path):
    nblocks = 9 * 2048  # 9 MiB, above the 8 MiB prefetch cache
    unit = LogicalUnit(RawImage(make_image(tmp_path / "p.img", nblocks)), identity())
    ready(unit, NEXUS)
    try:
        good(unit.execute(NEXUS, prefetch16(0, 0), None))
        assert unit.execute(NEXUS, prefetch16(0, 16), None).status == 0x04
    finally:
        unit.close()


# -------------------------------------------------------- GET LBA STATUS


def descriptors(d: bytes):
    n = struct.unpack_from(">I", d)[0]
    assert n == len(d) - 4 and (n - 4) % 16 == 0
    return [struct.unpack_from(">QIB", d, p) for p in range(8, len(d), 16)]


def test_get_lba_status_dense(lu):
    # conftest images are fully written: one mapped extent to the end
    assert descriptors(good(lu.execute(NEXUS, get_lba_status(5), None))) == [
        (5, BLOCKS - 5, 0)]
    assert descriptors(good(lu.execute(NEXUS, get_lba_status(BLOCKS - 1), None))) == [
        (BLOCKS - 1, 1, 0)]
    assert good(lu.execute(NEXUS, get_lba_status(0, alloc=4), None)) == bytes.fromhex(
        "00000014")
    check(lu.execute(NEXUS, get_lba_status(BLOCKS), None), 5, 0x21)
    check(lu.execute(NEXUS, get_lba_status(2**63), None), 5, 0x21)
    check(lu.execute(NEXUS, get_lba_status(2**64 - 1), None), 5, 0x21)


def _holes_supported(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) > 0
    except OSError:
        return True  # ENXIO: all hole
    finally:
        os.close(fd)


def test_get_lba_status_sparse(tmp_path):
    path = str(tmp_path / "sparse.img")
    size = 4 * 1024 * 1024
    with open(path, "wb") as f:
        f.truncate(size)
    if not hasattr(os, "SEEK_DATA") or not _holes_supported(path):
        pytest.skip("no SEEK_DATA/sparse files here")
    unit = LogicalUnit(RawImage(path), identity())
    ready(unit, NEXUS)
    try:
        nb = size // BS
        d = good(unit.execute(NEXUS, get_lba_status(0, 1024), None))
        assert descriptors(d) == [(0, nb, 1)]
        good(unit.execute(NEXUS, rw10(0x2A, 4096, 8), b"x" * 8 * BS))  # 2 MiB in
        d = descriptors(good(unit.execute(NEXUS, get_lba_status(0, 1024), None)))
        assert [s for _, _, s in d] == [1, 0, 1]
        assert d[0][0] == 0 and d[0][0] + d[0][1] == d[1][0] <= 4096
        assert d[1][0] + d[1][1] == d[2][0] >= 4104 and d[2][0] + d[2][1] == nb
        # one descriptor when the allocation length has room for one
        one = descriptors(good(unit.execute(NEXUS, get_lba_status(4100, 24), None)))
        assert one[0][0] == 4100 and one[0][2] == 0 and len(one) == 1
    finally:
        unit.close()


# ------------------------------------------------------ READ DEFECT DATA


def test_read_defect_data(lu):
    assert good(lu.execute(NEXUS, rdd10(0x00), None)) == bytes(4)
    assert good(lu.execute(NEXUS, rdd10(0x18 | 0x05), None)) == bytes((0, 0x1D, 0, 0))
    assert good(lu.execute(NEXUS, rdd12(0x00), None)) == bytes(8)
    assert good(lu.execute(NEXUS, rdd12(0x08 | 0x03), None)) == bytes((0, 0x0B)) + bytes(6)
    assert good(lu.execute(NEXUS, rdd10(0, alloc=2), None)) == bytes(2)
    s = check(lu.execute(NEXUS, rdd10(0x07), None), 5, 0x24)
    assert (s.field, s.bit) == (2, 2)
    s = check(lu.execute(NEXUS, rdd12(0x07), None), 5, 0x24)
    assert (s.field, s.bit) == (1, 2)


# ------------------------------------------- REPORT TARGET PORT GROUPS


def test_report_target_port_groups(lu):
    d = good(lu.execute(NEXUS, rtpg(), None))
    assert d == struct.pack(">IBBHxBBB", 12, 0x80, 0x01, 1, 0, 0, 1) + struct.pack(">xxH", 1)
    ext = good(lu.execute(NEXUS, rtpg(1), None))
    assert struct.unpack_from(">I", ext)[0] == len(ext) - 4 == 16
    assert ext[4] == 0x10 and ext[8:] == d[4:]
    assert good(lu.execute(NEXUS, rtpg(alloc=4), None)) == d[:4]
    check(lu.execute(NEXUS, rtpg(2), None), 5, 0x24)
    std = good(lu.execute(NEXUS, inquiry(), None))
    assert std[5] & 0x30 == 0x10  # TPGS: implicit ALUA


# ------------------------------------ REPORT SUPPORTED OPERATION CODES


@pytest.mark.parametrize("op,sa,usage", [
    (0x41, None, (0x41, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0)),
    (0x93, None, (0x93, 0x01) + (0xFF,) * 12 + (0x1F, 0)),
    (0x89, None, (0x89, 0x18) + (0xFF,) * 8 + (0, 0, 0, 0xFF, 0x1F, 0)),
    (0x8B, None, (0x8B, 0x18) + (0xFF,) * 12 + (0x1F, 0)),
    (0x9C, None, (0x9C, 0x18) + (0xFF,) * 8 + (0, 0, 0xFF, 0xFF, 0x1F, 0)),
    (0x34, None, (0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0)),
    (0x90, None, (0x90, 0x02) + (0xFF,) * 12 + (0x1F, 0)),
    (0x37, None, (0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0)),
    (0xB7, None, (0xB7, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
    (0x9E, 0x12, (0x9E, 0x12) + (0xFF,) * 12 + (0, 0)),
    (0xA3, 0x0A, (0xA3, 0xEA, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
])
def test_rsoc_lists_new_commands(lu, op, sa, usage):
    d = good(lu.execute(NEXUS, rsoc(1 if sa is None else 2, op, sa or 0), None))
    assert d[1] & 0x07 == 0x03
    assert struct.unpack_from(">H", d, 2)[0] == len(usage)
    assert d[4:] == bytes(usage)


def test_target_routes_new_commands(target):
    ready(target.luns[3], NEXUS)
    r = target.execute(NEXUS, 3, prefetch10(0, 1), None)
    assert r.status == 0x04
    assert isinstance(target, ScsiTarget)
