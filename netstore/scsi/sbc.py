# The SBC-3/SBC-4 commands of a direct-access logical unit beyond READ and
# WRITE: READ CAPACITY 10/16, WRITE AND VERIFY 10/12/16, VERIFY 10/12/16, COMPARE AND WRITE, ORWRITE(16), WRITE ATOMIC(16),
# PRE-FETCH 10/16 and READ DEFECT DATA 10/12 (REPORT TARGET PORT GROUPS:
# alua.py).
# `BlockCommands` is the logical unit's part that runs them.
#
# Every handler checks everything before touching the medium, so a command
# that fails changes nothing. The logical unit runs one command at a time, so
# COMPARE AND WRITE's read, compare and write are atomic with respect to every
# other command of the logical unit.
"""READ CAPACITY, (WRITE AND) VERIFY, COMPARE AND WRITE, ORWRITE, WRITE ATOMIC, PRE-FETCH, READ DEFECT DATA."""
from __future__ import annotations

import logging
import os
import struct

from .cdb import BE16, BE32, BE64, FUA, PROTECT_MASK, U10, U12, U16
from .limits import MAX_COMPARE_AND_WRITE_BLOCKS, PREFETCH_CACHE_BYTES
from .sense import (
    CONDITION_MET,
    GOOD,
    LBA_OUT_OF_RANGE,
    MISCOMPARE_DURING_VERIFY,
    UNRECOVERED_READ_ERROR,
    ScsiError,
    cdb_error,
    short_data_out,
)
from .unit import ScsiResponse, Unit

log = logging.getLogger(__name__)


# READ CAPACITY(16) byte 14 (SBC-4 5.20.2).
_LBPME = 0x80
_LBPRZ = 0x40

# READ DEFECT DATA: defect list format 111b is reserved (SBC-4 table 14).
_DEFECT_FORMAT_RESERVED = 0x7
_DEFECT_FLAGS = 0x1F  # REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT

def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where `a` and `b` differ (they do differ)."""
    lo, hi = 0, min(len(a), len(b))
    # Bisect on slice equality: C-speed compares, O(log n) of them.
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return hi


class BlockCommands:
    """More SBC commands of one logical unit (handlers of commands.py)."""

    def __init__(self, unit: Unit) -> None:
        """Run the commands on `unit`."""
        self._unit = unit

    # ----------------------------------------------------- READ CAPACITY

    def read_capacity10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = BE32.unpack_from(cdb, 2)[0]
        if not cdb[8] & 0x01 and lba:  # LBA must be 0 without PMI (SBC-3 5.15)
            raise cdb_error(2, 7)
        last = min(max(self._unit.num_blocks - 1, 0), 0xFFFFFFFF)
        return ScsiResponse(GOOD, struct.pack(">II", last, self._unit.block_size))

    def read_capacity16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = BE32.unpack_from(cdb, 10)[0]
        lba = BE64.unpack_from(cdb, 2)[0]
        if not cdb[14] & 0x01 and lba:
            raise cdb_error(2, 7)
        last = max(self._unit.num_blocks - 1, 0)
        # Byte 14: LBPME (thin) and LBPRZ (unmapped blocks read as zeros).
        lbp = _LBPME | _LBPRZ if self._unit.thin else 0
        return ScsiResponse(GOOD, struct.pack(">QIxxB17x", last, self._unit.block_size, lbp)[:alloc])

    # --------------------------------------------------- WRITE AND VERIFY

    def write_verify_blocks(
        self, cdb: bytes, lba: int, n: int, data: bytes | None, len_byte: int
    ) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        if cdb[1] & 0x04:  # only BYTCHK 0 and 1 (SBC-3 has a one-bit BYTCHK)
            raise cdb_error(1, 2)
        # Verify means the medium holds the data: write, then flush.
        return self._unit.write_range(lba, n, data, len_byte, True)

    def write_verify10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U10.unpack_from(cdb, 2)
        return self.write_verify_blocks(cdb, lba, n, data, 7)

    def write_verify12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U12.unpack_from(cdb, 2)
        return self.write_verify_blocks(cdb, lba, n, data, 6)

    def write_verify16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U16.unpack_from(cdb, 2)
        return self.write_verify_blocks(cdb, lba, n, data, 10)

    # ------------------------------------------------------------ VERIFY

    def verify_blocks(
        self, cdb: bytes, lba: int, n: int, data: bytes | None, len_byte: int
    ) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        bytchk = (cdb[1] >> 1) & 0x03
        if bytchk == 2:  # reserved (SBC-4 table 72)
            raise cdb_error(1, 2)
        if lba + n > self._unit.num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if n > self._unit.max_blocks:
            raise cdb_error(len_byte, 7)
        if not bytchk or not n:
            return ScsiResponse(GOOD)
        bs = self._unit.block_size
        want = n * bs if bytchk == 1 else bs
        if data is None or len(data) < want:
            raise short_data_out()
        ref = bytes(data[:want])
        if bytchk == 3:  # one block of Data-Out compared with every block
            ref = ref * n
        try:
            stored = self._unit.backend.pread(lba * bs, n * bs)
        except OSError:
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None
        if stored != ref:
            off = _first_difference(stored, ref)
            if bytchk == 3:
                off %= bs
            raise ScsiError(MISCOMPARE_DURING_VERIFY, information=off)
        return ScsiResponse(GOOD)

    def verify10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U10.unpack_from(cdb, 2)
        return self.verify_blocks(cdb, lba, n, data, 7)

    def verify12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U12.unpack_from(cdb, 2)
        return self.verify_blocks(cdb, lba, n, data, 6)

    def verify16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U16.unpack_from(cdb, 2)
        return self.verify_blocks(cdb, lba, n, data, 10)

    # ------------------------------------------------ COMPARE AND WRITE

    def compare_and_write(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba = BE64.unpack_from(cdb, 2)[0]
        n = cdb[13]
        if n > MAX_COMPARE_AND_WRITE_BLOCKS:
            raise cdb_error(13, 7)
        self._unit.check_writable(lba, n)
        nbytes = n * self._unit.block_size
        if data is not None and len(data) > 2 * nbytes:
            # More Data-Out than the verify and write instances of NUMBER OF
            # LOGICAL BLOCKS (e.g. a length that overflowed the byte).
            raise cdb_error(13, 7)
        if not n:  # SBC-4 5.3: not an error, nothing compared or written
            return ScsiResponse(GOOD)
        if data is None or len(data) < 2 * nbytes:
            raise short_data_out()
        view = memoryview(data)
        stored = self._unit.read_blocks(lba, n)
        if stored != view[:nbytes]:
            expected = bytes(view[:nbytes])
            raise ScsiError(MISCOMPARE_DURING_VERIFY,
                            information=_first_difference(stored, expected))
        self._unit.write_blocks(lba, view[nbytes:], bool(cdb[1] & FUA))
        return ScsiResponse(GOOD)

    # ---------------------------------------------------------- ORWRITE

    def orwrite16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:  # ORPROTECT
            raise cdb_error(1, 7)
        lba, n = U16.unpack_from(cdb, 2)
        self._unit.check_writable(lba, n)
        if n > self._unit.max_blocks:
            raise cdb_error(10, 7)
        if not n:
            return ScsiResponse(GOOD)
        nbytes = n * self._unit.block_size
        if data is None or len(data) < nbytes:
            raise short_data_out()
        old = self._unit.read_blocks(lba, n)
        mask = memoryview(data)[:nbytes]
        merged = (int.from_bytes(old, "big") | int.from_bytes(mask, "big")).to_bytes(
            nbytes, "big"
        )
        self._unit.write_blocks(lba, merged, bool(cdb[1] & FUA))
        return ScsiResponse(GOOD)

    # ---------------------------------------------------- WRITE ATOMIC

    def write_atomic16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        # One pwrite of the whole range while no other command of the LU runs.
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        if BE16.unpack_from(cdb, 10)[0]:  # ATOMIC BOUNDARY: no boundaries
            raise cdb_error(10, 7)
        lba = BE64.unpack_from(cdb, 2)[0]
        n = BE16.unpack_from(cdb, 12)[0]
        self._unit.check_writable(lba, n)
        if n > self._unit.max_blocks:
            raise cdb_error(12, 7)
        if not n:
            return ScsiResponse(GOOD)
        nbytes = n * self._unit.block_size
        if data is None or len(data) < nbytes:
            raise short_data_out()
        self._unit.write_blocks(lba, memoryview(data)[:nbytes], bool(cdb[1] & FUA))
        return ScsiResponse(GOOD)

    # -------------------------------------------------------- PRE-FETCH

    def _prefetch(self, lba: int, n: int) -> ScsiResponse:
        # NUMBER OF LOGICAL BLOCKS 0: through the last LBA (SBC-4 5.9).
        if lba + max(n, 1) > self._unit.num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        count = n or self._unit.num_blocks - lba
        nbytes = count * self._unit.block_size
        if nbytes > PREFETCH_CACHE_BYTES:
            return ScsiResponse(GOOD)  # would not fit in the cache
        fd = getattr(self._unit.backend, "fd", None)
        if isinstance(fd, int) and hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, lba * self._unit.block_size, nbytes, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
        # IMMED or not: the range fits in the (page) cache.
        return ScsiResponse(CONDITION_MET)

    def prefetch10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = U10.unpack_from(cdb, 2)
        return self._prefetch(lba, n)

    def prefetch16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = U16.unpack_from(cdb, 2)
        return self._prefetch(lba, n)

    # ------------------------------------------------ READ DEFECT DATA

    def _defect_header(self, flags: int, flags_byte: int) -> int:
        if flags & 0x07 == _DEFECT_FORMAT_RESERVED:
            raise cdb_error(flags_byte, 2)
        # PLISTV/GLISTV echo REQ_PLIST/REQ_GLIST: both lists exist, empty.
        return flags & _DEFECT_FLAGS

    def read_defect_data10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = BE16.unpack_from(cdb, 7)[0]
        flags = self._defect_header(cdb[2], 2)
        return ScsiResponse(GOOD, struct.pack(">xBH", flags, 0)[:alloc])

    def read_defect_data12(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = BE32.unpack_from(cdb, 6)[0]
        flags = self._defect_header(cdb[1], 1)
        return ScsiResponse(GOOD, struct.pack(">xBHI", flags, 0, 0)[:alloc])
