# READ/WRITE/VERIFY/WRITE AND VERIFY/SYNCHRONIZE CACHE/READ CAPACITY on a raw
# image: data lands where SBC-3 says, failures write nothing.
from __future__ import annotations

import struct
from unittest import mock

import pytest

from tests.scsi.scsi_cdb import (
    NEXUS,
    check,
    good,
    read_capacity16,
    rw6,
    rw10,
    rw12,
    rw16,
    sync_cache10,
    sync_cache16,
)
from tests.scsi.units import BLOCKS

BS = 512
READS = {6: (0x08, rw6), 10: (0x28, rw10), 12: (0xA8, rw12), 16: (0x88, rw16)}
WRITES = {6: (0x0A, rw6), 10: (0x2A, rw10), 12: (0xAA, rw12), 16: (0x8A, rw16)}


def pattern(n_blocks: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n_blocks * BS))


def file_bytes(lu) -> bytes:
    return open(lu.backend.path, "rb").read()


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read_back(lu, size):
    wop, wcdb = WRITES[size]
    rop, rcdb = READS[size]
    data = pattern(3, size)
    good(lu.execute(NEXUS, wcdb(wop, 17, 3), data))
    assert good(lu.execute(NEXUS, rcdb(rop, 17, 3), None)) == data
    assert file_bytes(lu)[17 * BS:20 * BS] == data
    assert file_bytes(lu)[:17 * BS] == bytes(17 * BS)


@pytest.mark.parametrize("size", [10, 12, 16])
def test_zero_length_is_legal(lu, size):
    rop, rcdb = READS[size]
    wop, wcdb = WRITES[size]
    assert good(lu.execute(NEXUS, rcdb(rop, 5, 0), None)) == b""
    assert good(lu.execute(NEXUS, wcdb(wop, 5, 0), None)) == b""
    # LBA checks still apply with 0 blocks at the very end
    good(lu.execute(NEXUS, rcdb(rop, BLOCKS, 0), None))
    check(lu.execute(NEXUS, rcdb(rop, BLOCKS + 1, 0), None), 5, 0x21)


def test_six_byte_zero_means_256(lu):
    d = good(lu.execute(NEXUS, rw6(0x08, 0, 0), None))
    assert len(d) == 256 * BS
    data = pattern(256, 1)
    good(lu.execute(NEXUS, rw6(0x0A, 100, 0), data))
    assert file_bytes(lu)[100 * BS:356 * BS] == data


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_out_of_range_writes_nothing(lu, size):
    wop, wcdb = WRITES[size]
    rop, rcdb = READS[size]
    before = file_bytes(lu)
    check(lu.execute(NEXUS, wcdb(wop, BLOCKS - 1, 2), pattern(2, 3)), 5, 0x21)
    check(lu.execute(NEXUS, rcdb(rop, BLOCKS - 1, 2), None), 5, 0x21)
    check(lu.execute(NEXUS, rcdb(rop, BLOCKS, 1), None), 5, 0x21)
    assert file_bytes(lu) == before
    # the last block itself is fine
    assert len(good(lu.execute(NEXUS, rcdb(rop, BLOCKS - 1, 1), None))) == BS


def test_huge_lba16(lu):
    check(lu.execute(NEXUS, rw16(0x88, 2**64 - 1, 1), None), 5, 0x21)
    check(lu.execute(NEXUS, rw16(0x8A, 2**63, 1), bytes(BS)), 5, 0x21)


def test_short_data_out_writes_what_came(lu):
    # EDTL < SPDTL (FCP-4 9.4.2 a): GOOD, only the bytes sent are written
    before = file_bytes(lu)
    good(lu.execute(NEXUS, rw10(0x2A, 0, 1), None))
    assert file_bytes(lu) == before
    good(lu.execute(NEXUS, rw10(0x2A, 0, 4), b"\x01" * (3 * BS + 7)))
    assert file_bytes(lu)[:4 * BS] == b"\x01" * (3 * BS + 7) + bytes(BS - 7)


def test_extra_data_out_ignored(lu):
    good(lu.execute(NEXUS, rw10(0x2A, 0, 1), b"\x11" * BS + b"\x22" * BS))
    assert file_bytes(lu)[:2 * BS] == b"\x11" * BS + bytes(BS)


@pytest.mark.parametrize("op", [0x28, 0x2A, 0x2E, 0x2F])
def test_protect_field_refused(lu, op):
    s = check(lu.execute(NEXUS, rw10(op, 0, 1, b1=0x20), bytes(BS)), 5, 0x24)
    assert (s.field, s.bpv, s.bit) == (1, True, 7)


def test_transfer_length_above_limit(lu):
    limit = 8 * 1024 * 1024 // BS
    with mock.patch.object(lu, "_num_blocks", limit * 4):
        check(lu.execute(NEXUS, rw16(0x88, 0, limit + 1), None), 5, 0x24)


def test_group_number_dpo_fua_accepted(lu):
    cdb = bytearray(rw10(0x2A, 2, 1, b1=0x18))
    cdb[6] = 0x1F
    with mock.patch.object(lu, "_flush", wraps=lu.backend.flush) as fl:
        good(lu.execute(NEXUS, bytes(cdb), b"f" * BS))
        assert fl.call_count == 1  # FUA: flushed before GOOD
        good(lu.execute(NEXUS, rw10(0x2A, 3, 1), b"g" * BS))
        assert fl.call_count == 1  # write-back cache: no flush
    assert file_bytes(lu)[2 * BS:4 * BS] == b"f" * BS + b"g" * BS


@pytest.mark.parametrize("op", [0x2E, 0xAE, 0x8E])
def test_write_and_verify(lu, op):
    cdb = {0x2E: rw10, 0xAE: rw12, 0x8E: rw16}[op](op, 9, 2, b1=0x02)
    data = pattern(2, 9)
    good(lu.execute(NEXUS, cdb, data))
    assert file_bytes(lu)[9 * BS:11 * BS] == data
    cdb = {0x2E: rw10, 0xAE: rw12, 0x8E: rw16}[op](op, BLOCKS, 1)
    check(lu.execute(NEXUS, cdb, bytes(BS)), 5, 0x21)


@pytest.mark.parametrize("op,builder", [(0x2F, rw10), (0xAF, rw12), (0x8F, rw16)])
def test_verify(lu, op, builder):
    data = pattern(2, 4)
    good(lu.execute(NEXUS, rw10(0x2A, 40, 2), data))
    good(lu.execute(NEXUS, builder(op, 40, 2, b1=0x02), data))  # BYTCHK 1, equal
    bad = bytearray(data)
    bad[700] ^= 0xFF
    s = check(lu.execute(NEXUS, builder(op, 40, 2, b1=0x02), bytes(bad)), 0x0E, 0x1D)
    assert s.valid and s.info == 700
    good(lu.execute(NEXUS, builder(op, 40, 2), bytes(bad)))  # BYTCHK 0: no compare
    check(lu.execute(NEXUS, builder(op, BLOCKS - 1, 2), None), 5, 0x21)
    check(lu.execute(NEXUS, builder(op, 40, 2, b1=0x04), data), 5, 0x24)  # BYTCHK 2


def test_verify_bytchk3_one_block_against_all(lu):
    good(lu.execute(NEXUS, rw10(0x2A, 0, 3), b"\x5a" * 3 * BS))
    good(lu.execute(NEXUS, rw10(0x2F, 0, 3, b1=0x06), b"\x5a" * BS))
    s = check(lu.execute(NEXUS, rw10(0x2F, 0, 4, b1=0x06), b"\x5a" * BS), 0x0E, 0x1D)
    assert s.info == 0


@pytest.mark.parametrize("builder", [sync_cache10, sync_cache16])
def test_synchronize_cache(lu, builder):
    with mock.patch.object(lu, "_flush") as fl:
        good(lu.execute(NEXUS, builder(0, 0), None))
        good(lu.execute(NEXUS, builder(BLOCKS - 10, 10), None))
        assert fl.call_count == 2
        check(lu.execute(NEXUS, builder(BLOCKS - 10, 11), None), 5, 0x21)
        check(lu.execute(NEXUS, builder(BLOCKS, 0), None), 5, 0x21)
        assert fl.call_count == 2


def test_read_capacity10(lu):
    d = good(lu.execute(NEXUS, bytes((0x25,) + (0,) * 9), None))
    assert struct.unpack(">II", d) == (BLOCKS - 1, BS)
    cdb = bytearray(10)
    cdb[0], cdb[5] = 0x25, 1  # LBA without PMI
    check(lu.execute(NEXUS, bytes(cdb), None), 5, 0x24)


def test_read_capacity10_saturates(lu):
    with mock.patch.object(lu, "_num_blocks", 2**33):
        d = good(lu.execute(NEXUS, bytes((0x25,) + (0,) * 9), None))
        assert struct.unpack(">II", d) == (0xFFFFFFFF, BS)
        d = good(lu.execute(NEXUS, read_capacity16(), None))
        assert struct.unpack_from(">Q", d)[0] == 2**33 - 1


def test_read_capacity16(lu):
    d = good(lu.execute(NEXUS, read_capacity16(32), None))
    assert len(d) == 32
    last, bs = struct.unpack_from(">QI", d)
    assert (last, bs) == (BLOCKS - 1, BS)
    assert d[12:] == bytes(20)  # no protection, no LBPME, 1 block per physical
    assert good(lu.execute(NEXUS, read_capacity16(12), None)) == d[:12]


def test_unknown_service_action_in(lu):
    cdb = bytearray(read_capacity16())
    cdb[1] = 0x11  # READ LONG(16): not implemented
    s = check(lu.execute(NEXUS, bytes(cdb), None), 5, 0x24)
    assert s.field == 1


def test_readonly_refuses_writes(ro_lu):
    before = file_bytes(ro_lu)
    for cdb in (rw6(0x0A, 0, 1), rw10(0x2A, 0, 1), rw12(0xAA, 0, 1), rw16(0x8A, 0, 1),
                rw10(0x2E, 0, 1), rw12(0xAE, 0, 1), rw16(0x8E, 0, 1)):
        check(ro_lu.execute(NEXUS, cdb, b"x" * BS), 7, 0x27)
    assert file_bytes(ro_lu) == before
    good(ro_lu.execute(NEXUS, rw10(0x28, 0, 1), None))
    good(ro_lu.execute(NEXUS, rw10(0x2F, 0, 1), None))
    good(ro_lu.execute(NEXUS, sync_cache10(), None))


def test_backend_read_error_is_medium_error(lu):
    with mock.patch.object(lu, "_pread", side_effect=OSError(5, "EIO")):
        s = check(lu.execute(NEXUS, rw10(0x28, 33, 1), None), 3, 0x11)
        assert s.valid and s.info == 33


def test_backend_write_error_is_medium_error(lu):
    with mock.patch.object(lu, "_pwrite", side_effect=OSError(28, "ENOSPC")):
        check(lu.execute(NEXUS, rw10(0x2A, 1, 1), bytes(BS)), 3, 0x0C)


def test_write_through_when_cache_disabled(image):
    from netstore.disk.raw import RawImage
    from netstore.scsi import LogicalUnit
    from tests.scsi.units import identity

    unit = LogicalUnit(RawImage(image), identity(), write_cache=False)
    unit.execute(NEXUS, bytes(6), None)
    with mock.patch.object(unit, "_flush") as fl:
        good(unit.execute(NEXUS, rw10(0x2A, 0, 1), bytes(BS)))
        assert fl.call_count == 1
    d = good(unit.execute(NEXUS, bytes((0x1A, 0x08, 0x08, 0, 255, 0)), None))
    assert d[4 + 2] & 0x04 == 0  # WCE shows 0
    unit.close()
