# Thin provisioning on raw files: UNMAP punches holes, WRITE SAME with UNMAP
# deallocates zero data, READ CAPACITY(16) and VPD B0h/B2h report it, and GET
# LBA STATUS sees the holes. A fully provisioned unit reports none of it.
from __future__ import annotations

import os
import struct

import pytest

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit
from tests.scsi.scsi_cdb import NEXUS, check, good, inquiry, read_capacity16, rsoc, rw10, rw16
from tests.scsi.units import identity, ready

BS = 512
BLOCKS = 4096  # 2 MiB


def unmap_cdb(plen: int, anchor: bool = False) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, 1 if anchor else 0, 0, plen, 0)


def unmap_params(*ranges: tuple[int, int]) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    return struct.pack(">HH4x", 6 + len(body), len(body)) + body


def ws16(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x93, b1, lba, n, 0, 0)


def ws10(lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x41, b1, lba, 0, n, 0)


def lba_status(lba: int, alloc: int = 4096) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


@pytest.fixture
def sparse(tmp_path) -> str:
    path = tmp_path / "thin.img"
    with open(path, "wb") as f:
        f.truncate(BLOCKS * BS)
    return str(path)


@pytest.fixture
def thin(sparse):
    unit = LogicalUnit(RawImage(sparse), identity(), thin=True)
    ready(unit, NEXUS)
    yield unit
    unit.close()


def write(lu, lba: int, n: int, byte: int = 0xAB) -> None:
    good(lu.execute(NEXUS, rw10(0x2A, lba, n), bytes([byte]) * (n * BS)))


def read(lu, lba: int, n: int) -> bytes:
    return good(lu.execute(NEXUS, rw10(0x28, lba, n), None))


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def test_discard_punches_a_hole(sparse):
    be = RawImage(sparse)
    be.pwrite(0, b"x" * 65536)
    before = allocated(sparse)
    be.discard(4096, 32768)
    assert be.pread(4096, 32768) == bytes(32768)
    assert be.pread(0, 4096) == b"x" * 4096
    assert allocated(sparse) <= before - 32768
    be.close()


def test_thin_needs_discard(sparse):
    be = RawImage(sparse, read_only=True)
    with pytest.raises(ValueError):
        LogicalUnit(be, identity(), thin=True)
    be.close()


def test_read_capacity16_and_vpd(thin):
    d = good(thin.execute(NEXUS, read_capacity16(), None))
    assert d[14] & 0xC0 == 0xC0  # LBPME, LBPRZ
    b0 = good(thin.execute(NEXUS, inquiry(1, 0xB0), None))
    assert b0[4] & 1 == 0  # WSNZ 0
    max_lba, max_bdc, gran = struct.unpack_from(">III", b0, 20)
    assert 0 < max_lba <= 1 << 20 and 0 < max_bdc <= 1 << 20 and gran == 8
    b2 = good(thin.execute(NEXUS, inquiry(1, 0xB2), None))
    assert b2[5] & 0xE4 == 0xE4  # LBPU, LBPWS, LBPWS10, LBPRZ
    assert b2[6] & 0x07 == 2  # thin
    good(thin.execute(NEXUS, rsoc(1, 0x42), None))


def test_fully_provisioned_reports_nothing(lu):
    assert good(lu.execute(NEXUS, read_capacity16(), None))[14] & 0xC0 == 0
    b2 = good(lu.execute(NEXUS, inquiry(1, 0xB2), None))
    assert b2[5] == 0 and b2[6] & 7 == 0
    check(lu.execute(NEXUS, unmap_cdb(24), unmap_params((0, 8))), 5, 0x20)
    assert good(lu.execute(NEXUS, rsoc(1, 0x42), None))[1] & 7 == 1  # not supported
    check(lu.execute(NEXUS, ws16(0, 8, 0x08), bytes(BS)), 5, 0x24)


def test_unmap_deallocates_and_reads_zero(thin, sparse):
    write(thin, 0, 256)
    good(thin.execute(NEXUS, unmap_cdb(40), unmap_params((0, 64), (128, 64))))
    data = read(thin, 0, 256)
    assert data[: 64 * BS] == bytes(64 * BS)
    assert data[64 * BS : 128 * BS] == b"\xab" * (64 * BS)
    assert data[128 * BS : 192 * BS] == bytes(64 * BS)
    d = good(thin.execute(NEXUS, lba_status(0), None))
    first = struct.unpack_from(">QIB", d, 8)
    assert first == (0, 64, 1)  # deallocated
    second = struct.unpack_from(">QIB", d, 24)
    assert second[0] == 64 and second[2] == 0  # mapped


def test_unmap_edge_cases(thin):
    good(thin.execute(NEXUS, unmap_cdb(0), None))
    good(thin.execute(NEXUS, unmap_cdb(8), unmap_params()))
    good(thin.execute(NEXUS, unmap_cdb(24), unmap_params((BLOCKS, 0))))
    check(thin.execute(NEXUS, unmap_cdb(24), unmap_params((BLOCKS - 1, 2))), 5, 0x21)
    check(thin.execute(NEXUS, unmap_cdb(4), b"\0" * 4), 5, 0x1A)
    check(thin.execute(NEXUS, unmap_cdb(24, anchor=True), unmap_params((0, 1))), 5, 0x24)
    many = unmap_params(*[(i, 1) for i in range(257)])
    check(thin.execute(NEXUS, unmap_cdb(len(many)), many), 5, 0x26)


def test_write_same_unmap(thin):
    write(thin, 0, 64)
    good(thin.execute(NEXUS, ws16(0, 32, 0x08), bytes(BS)))
    assert read(thin, 0, 32) == bytes(32 * BS)
    # UNMAP unmaps whatever the data (libiscsi's UnmapUntilEnd sends 0xFF).
    good(thin.execute(NEXUS, ws10(32, 8, 0x08), b"\x5a" * BS))
    assert read(thin, 32, 8) == bytes(8 * BS)
    good(thin.execute(NEXUS, ws10(32, 8), b"\x5a" * BS))
    assert read(thin, 32, 8) == b"\x5a" * (8 * BS)


def test_write_same_zero_blocks_runs_to_the_end(thin):
    write(thin, BLOCKS - 16, 16)
    good(thin.execute(NEXUS, ws16(BLOCKS - 16, 0, 0x08), bytes(BS)))
    assert read(thin, BLOCKS - 16, 16) == bytes(16 * BS)
    check(thin.execute(NEXUS, ws16(BLOCKS + 1, 0, 0x08), bytes(BS)), 5, 0x21)
    good(thin.execute(NEXUS, ws16(BLOCKS - 4, 0), b"\x11" * BS))
    assert read(thin, BLOCKS - 4, 4) == b"\x11" * (4 * BS)
    d = good(thin.execute(NEXUS, rw16(0x88, BLOCKS - 4, 4), None))
    assert d == b"\x11" * (4 * BS)


def sanitize(sa: int, plen: int = 0) -> bytes:
    return struct.pack(">BB5xHB", 0x48, sa, plen, 0)


def test_sanitize_overwrite_block_erase_exit(thin, sparse):
    write(thin, 0, 16)
    # OVERWRITE runs synchronously, so it is not offered (SANITIZE IN PROGRESS).
    param = struct.pack(">BxH", 1, 4) + b"\xde\xad\xbe\xef"
    check(thin.execute(NEXUS, sanitize(1, len(param)), param), 5, 0x24)
    assert good(thin.execute(NEXUS, rsoc(2, 0x48, 1), None))[1] & 7 == 1
    good(thin.execute(NEXUS, sanitize(2), None))
    assert read(thin, 0, 16) == bytes(16 * BS)
    assert allocated(sparse) == 0
    check(thin.execute(NEXUS, sanitize(2, 8), bytes(8)), 5, 0x24)
    good(thin.execute(NEXUS, sanitize(0x1F), None))
    for sa in (0, 3, 4, 0x1E):
        check(thin.execute(NEXUS, sanitize(sa), None), 5, 0x24)


def test_block_erase_only_on_thin_units(lu):
    check(lu.execute(NEXUS, sanitize(2), None), 5, 0x24)
    assert good(lu.execute(NEXUS, rsoc(2, 0x48, 2), None))[1] & 7 == 1
    assert good(lu.execute(NEXUS, rsoc(2, 0x48, 0x1F), None))[1] & 7 == 3
