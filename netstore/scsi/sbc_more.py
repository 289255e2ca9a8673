# More SBC-3/SBC-4 and SPC-4 commands of the logical unit, as a mixin of
# LogicalUnit (the opcode table in opcodes.py names these methods): WRITE SAME
# 10/16, COMPARE AND WRITE, PRE-FETCH 10/16, ORWRITE(16), WRITE ATOMIC(16),
# GET LBA STATUS, READ DEFECT DATA 10/12 and REPORT TARGET PORT GROUPS.
#
# Every handler checks everything before touching the medium, so a command
# that fails changes nothing. The logical unit runs one command at a time, so
# COMPARE AND WRITE's read, compare and write are atomic with respect to every
# other command of the logical unit.
from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .limits import (
    MAX_COMPARE_AND_WRITE_BLOCKS,
    MAX_UNMAP_BLOCKS,
    MAX_UNMAP_DESCRIPTORS,
    MAX_WRITE_SAME_BYTES,
    PREFETCH_CACHE_BYTES,
)
from .sense import (
    CONDITION_MET,
    GOOD,
    INVALID_FIELD_IN_IU,
    LBA_OUT_OF_RANGE,
    MISCOMPARE_DURING_VERIFY,
    PARAM_LIST_LENGTH_ERROR,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
    cdb_error,
    param_error,
)

if TYPE_CHECKING:
    from .backend import BlockBackend
    from .lun import LunIdentity, ScsiResponse

log = logging.getLogger(__name__)

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_U10 = struct.Struct(">IxH")  # CDB bytes 2..8: LBA, group, length
_U12 = struct.Struct(">II")  # CDB bytes 2..9: LBA, length
_U16 = struct.Struct(">QI")  # CDB bytes 2..13: LBA, length

_PROTECT_MASK = 0xE0  # RDPROTECT/WRPROTECT/ORPROTECT: byte 1 bits 7..5
_FUA = 0x08
# WRITE SAME byte 1 (SBC-4 5.49, 5.50).
_WS_ANCHOR = 0x10
_WS_UNMAP = 0x08
_WS_OBSOLETE = 0x06  # PBDATA, LBDATA (SBC-2); not supported
_WS_NDOB = 0x01  # WRITE SAME(16) only
# Chunk WRITE SAME writes at a time.
_WS_CHUNK_BYTES = 1024 * 1024
# UNMAP parameter list (SBC-4 5.32.2): 8-byte header, 16-byte descriptors.
_UNMAP_HEADER = 8
_UNMAP_DESCRIPTOR = 16
_UNMAP_ANCHOR = 0x01
# SANITIZE (SBC-4 5.30): service actions and the OVERWRITE parameter header.
_SANITIZE_OVERWRITE = 0x01
_SANITIZE_BLOCK_ERASE = 0x02
_SANITIZE_HEADER = 4

# GET LBA STATUS (SBC-4 5.7): provisioning status of a descriptor.
LBA_MAPPED = 0x0
LBA_DEALLOCATED = 0x1
_LBA_STATUS_HEADER = 8
_LBA_STATUS_DESCRIPTOR = 16
_MAX_EXTENT_BLOCKS = 0xFFFFFFFF
# Descriptors one GET LBA STATUS returns at most (bounds the lseek calls).
_MAX_LBA_STATUS_DESCRIPTORS = 256

# READ DEFECT DATA: defect list format 111b is reserved (SBC-4 table 14).
_DEFECT_FORMAT_RESERVED = 0x7
_DEFECT_FLAGS = 0x1F  # REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT

# REPORT TARGET PORT GROUPS (SPC-4 6.36).
_RTPG_FORMAT_LENGTH_ONLY = 0
_RTPG_FORMAT_EXTENDED = 1
_RTPG_EXTENDED_HEADER = 0x10  # FORMAT TYPE 001b
_TPG_PREF = 0x80
_TPG_ACTIVE_OPTIMIZED = 0x0
_TPG_AO_SUP = 0x01


def short_data_out() -> ScsiError:
    """Less Data-Out than the CDB asks for (EDTL < SPDTL): the command
    transfers nothing (FCP-4 9.4.2 b, used by iSCSI targets alike)."""
    return ScsiError(INVALID_FIELD_IN_IU)


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


# ------------------------------------------------------------- commands


class SbcMoreCommands:
    """LogicalUnit mixin: the commands listed at the top of this module."""

    if TYPE_CHECKING:
        backend: BlockBackend
        identity: LunIdentity
        _bs: int
        _num_blocks: int
        _read_only: bool
        _max_blocks: int
        _wce: bool
        _pread: Callable[[int, int], bytes]
        _pwrite: Callable[[int, bytes | memoryview], None]
        _flush: Callable[[], None]
        _thin: bool
        _discard: Callable[[int, int], None] | None

    def _write_short(
        self, lba: int, data: bytes | memoryview | None, sync: bool
    ) -> ScsiResponse:
        """WRITE with less Data-Out than its transfer length (EDTL < SPDTL):
        FCP-4 9.4.2 a) "process the command normally except that data beyond
        the expected length is not transferred": the bytes that came are
        written, the rest of the range is left as it was, and the transport
        reports the overflow residual. (libiscsi 1.19's iSCSIResiduals wants
        this; later versions also accept CHECK CONDITION 0E/03, which the
        commands that cannot apply part of their data answer.)"""
        if data:
            self._store(lba, data, sync)
        return self._resp()

    # helpers

    def _resp(self, status: int = GOOD, data: bytes = b"") -> ScsiResponse:
        from .lun import ScsiResponse  # lun imports this module

        return ScsiResponse(status, data)

    def _check_writable(self, lba: int, n: int) -> None:
        if self._read_only:
            raise ScsiError(WRITE_PROTECTED)
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)

    def _store(self, lba: int, data: bytes | memoryview, sync: bool) -> None:
        try:
            self._pwrite(lba * self._bs, data)
            if sync or not self._wce:
                self._flush()
        except OSError:
            log.exception("write error at LBA %d", lba)
            raise ScsiError(WRITE_ERROR, information=lba) from None

    def _load(self, lba: int, n: int) -> bytes:
        try:
            return self._pread(lba * self._bs, n * self._bs)
        except OSError:
            log.exception("read error at LBA %d", lba)
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None

    # ------------------------------------------------------- WRITE SAME

    def _write_same(
        self, cdb: bytes, lba: int, n: int, data: bytes | memoryview | None, len_byte: int,
    ) -> ScsiResponse:
        b1 = cdb[1]
        if b1 & _PROTECT_MASK:
            raise cdb_error(1, 7)
        if b1 & _WS_ANCHOR:  # ANC_SUP is 0
            raise cdb_error(1, 4)
        unmap = bool(b1 & _WS_UNMAP)
        if unmap and not self._thin:  # LBPWS/LBPWS10 are 0 when fully provisioned
            raise cdb_error(1, 3)
        if b1 & _WS_OBSOLETE:
            raise cdb_error(1, 2)
        if lba > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if not n:
            if not self._thin:  # WSNZ=1: 0 does not mean "to the last LBA"
                raise cdb_error(len_byte, 7)
            # WSNZ=0 (thin units, where unmapping to the end is the use):
            # through the last LBA (SBC-4 5.49).
            n = self._num_blocks - lba
            if not n:
                if self._read_only:
                    raise ScsiError(WRITE_PROTECTED)
                return self._resp()
        self._check_writable(lba, n)
        bs = self._bs
        if n * bs > MAX_WRITE_SAME_BYTES:
            raise cdb_error(len_byte, 7)
        if b1 & _WS_NDOB:
            block = bytes(bs)
        else:
            if data is None or len(data) < bs:
                raise short_data_out()
            block = bytes(data[:bs])
        if unmap:
            # SBC-4 5.50: with UNMAP set a thin unit unmaps the range; its
            # blocks then read as zeros (LBPRZ=1), as LIO and libiscsi have it.
            self._deallocate(lba, n)
            return self._resp()
        per_chunk = max(1, min(n, _WS_CHUNK_BYTES // bs))
        chunk = block * per_chunk
        done = 0
        try:
            while done < n:
                k = min(per_chunk, n - done)
                self._pwrite((lba + done) * bs, chunk if k == per_chunk else chunk[:k * bs])
                done += k
            if not self._wce:
                self._flush()
        except OSError:
            log.exception("write error at LBA %d", lba + done)
            raise ScsiError(WRITE_ERROR, information=lba + done) from None
        return self._resp()

    def _deallocate(self, lba: int, n: int) -> None:
        """Discard `n` blocks at `lba` (they read back as zeros)."""
        assert self._discard is not None
        try:
            off, length = lba * self._bs, n * self._bs
            self._discard(off, length)
            # A backend deallocating whole units of `discard_granularity`
            # bytes only (qcow2 clusters) leaves the partial ones at the
            # ends: they are written with zeros, as LBPRZ=1 promises.
            gran = getattr(self.backend, "discard_granularity", 0)
            if gran > self._bs:
                end = off + length
                head_end = min(end, -(-off // gran) * gran)
                tail_start = max(head_end, end // gran * gran)
                if end >= self._num_blocks * self._bs:
                    tail_start = end  # the last, partial cluster is discarded whole
                for a, b in ((off, head_end), (tail_start, end)):
                    if b > a:
                        self._pwrite(a, bytes(b - a))
            if not self._wce:
                self._flush()
        except OSError:
            log.exception("discard failed at LBA %d", lba)
            raise ScsiError(WRITE_ERROR, information=lba) from None

    # --------------------------------------------------------- SANITIZE

    def _sanitize(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        # Reached through the opcode table for the service actions it lists.
        # SBC-4 5.30: OVERWRITE writes a pattern over every block, BLOCK
        # ERASE deallocates every block (thin units), EXIT FAILURE MODE is a
        # no-op (a sanitize here cannot fail half way and stay failed).
        sa = cdb[1] & 0x1F
        if cdb[1] & 0x40:
            raise cdb_error(1, 6)
        for i in range(2, 7):
            if cdb[i]:
                raise cdb_error(i, 7)
        plen = _BE16.unpack_from(cdb, 7)[0]
        if self._read_only:
            raise ScsiError(WRITE_PROTECTED)
        if sa != _SANITIZE_OVERWRITE:
            if plen:  # BLOCK ERASE, EXIT FAILURE MODE: no parameter list
                raise cdb_error(7, 7)
            if sa == _SANITIZE_BLOCK_ERASE:
                self._deallocate(0, self._num_blocks)
            return self._resp()
        bs = self._bs
        if plen < _SANITIZE_HEADER + 1 or plen > bs + _SANITIZE_HEADER:
            raise cdb_error(7, 7)
        if data is None or len(data) < plen:
            raise short_data_out()
        p = bytes(data[:plen])
        count = p[0] & 0x1F
        ip_len = _BE16.unpack_from(p, 2)[0]
        if p[0] & 0x60:  # TEST must be 0
            raise param_error(0, 5)
        if not count:
            raise param_error(0, 4)
        if not ip_len or ip_len > bs or ip_len + _SANITIZE_HEADER != plen:
            raise param_error(2, 7)
        pattern = p[_SANITIZE_HEADER:]
        block = (pattern * -(-bs // ip_len))[:bs]
        per_chunk = max(1, _WS_CHUNK_BYTES // bs)
        chunk = block * per_chunk
        done = 0
        try:
            while done < self._num_blocks:
                k = min(per_chunk, self._num_blocks - done)
                self._pwrite(done * bs, chunk if k == per_chunk else chunk[:k * bs])
                done += k
            self._flush()
        except OSError:
            log.exception("sanitize write error at LBA %d", done)
            raise ScsiError(WRITE_ERROR, information=done) from None
        return self._resp()

    # ------------------------------------------------------------ UNMAP

    def _unmap(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _UNMAP_ANCHOR:  # ANC_SUP is 0
            raise cdb_error(1, 0)
        plen = _BE16.unpack_from(cdb, 7)[0]
        if self._read_only:
            raise ScsiError(WRITE_PROTECTED)
        if not plen:  # SBC-4 5.32.1: not an error, nothing unmapped
            return self._resp()
        if plen < _UNMAP_HEADER:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        if data is None or len(data) < plen:
            raise short_data_out()
        p = memoryview(data)[:plen]
        bd_len = _BE16.unpack_from(p, 2)[0]
        # Descriptors past the parameter list length are ignored (SBC-4 5.32.2).
        count = min(bd_len, plen - _UNMAP_HEADER) // _UNMAP_DESCRIPTOR
        if count > MAX_UNMAP_DESCRIPTORS:
            raise param_error(2)
        ranges: list[tuple[int, int]] = []
        total = 0
        for i in range(count):
            off = _UNMAP_HEADER + i * _UNMAP_DESCRIPTOR
            lba = _BE64.unpack_from(p, off)[0]
            n = _BE32.unpack_from(p, off + 8)[0]
            if lba + n > self._num_blocks:
                raise ScsiError(LBA_OUT_OF_RANGE)
            total += n
            if total > MAX_UNMAP_BLOCKS:
                raise param_error(off + 8)
            if n:
                ranges.append((lba, n))
        for lba, n in ranges:
            self._deallocate(lba, n)
        return self._resp()

    def _write_same10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _WS_NDOB:  # reserved in WRITE SAME(10)
            raise cdb_error(1, 0)
        lba, n = _U10.unpack_from(cdb, 2)
        return self._write_same(cdb, lba, n, data, 7)

    def _write_same16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U16.unpack_from(cdb, 2)
        return self._write_same(cdb, lba, n, data, 10)

    # ------------------------------------------------ COMPARE AND WRITE

    def _compare_and_write(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba = _BE64.unpack_from(cdb, 2)[0]
        n = cdb[13]
        if n > MAX_COMPARE_AND_WRITE_BLOCKS:
            raise cdb_error(13, 7)
        self._check_writable(lba, n)
        nbytes = n * self._bs
        if data is not None and len(data) > 2 * nbytes:
            # More Data-Out than the verify and write instances of NUMBER OF
            # LOGICAL BLOCKS (e.g. a length that overflowed the byte).
            raise cdb_error(13, 7)
        if not n:  # SBC-4 5.3: not an error, nothing compared or written
            return self._resp()
        if data is None or len(data) < 2 * nbytes:
            raise short_data_out()
        view = memoryview(data)
        stored = self._load(lba, n)
        if stored != view[:nbytes]:
            expected = bytes(view[:nbytes])
            raise ScsiError(MISCOMPARE_DURING_VERIFY,
                            information=_first_difference(stored, expected))
        self._store(lba, view[nbytes:], bool(cdb[1] & _FUA))
        return self._resp()

    # ---------------------------------------------------------- ORWRITE

    def _orwrite16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:  # ORPROTECT
            raise cdb_error(1, 7)
        lba, n = _U16.unpack_from(cdb, 2)
        self._check_writable(lba, n)
        if n > self._max_blocks:
            raise cdb_error(10, 7)
        if not n:
            return self._resp()
        nbytes = n * self._bs
        if data is None or len(data) < nbytes:
            raise short_data_out()
        old = self._load(lba, n)
        mask = memoryview(data)[:nbytes]
        merged = (int.from_bytes(old, "big") | int.from_bytes(mask, "big")).to_bytes(
            nbytes, "big"
        )
        self._store(lba, merged, bool(cdb[1] & _FUA))
        return self._resp()

    # ---------------------------------------------------- WRITE ATOMIC

    def _write_atomic16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        # One pwrite of the whole range while no other command of the LU runs.
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        if _BE16.unpack_from(cdb, 10)[0]:  # ATOMIC BOUNDARY: no boundaries
            raise cdb_error(10, 7)
        lba = _BE64.unpack_from(cdb, 2)[0]
        n = _BE16.unpack_from(cdb, 12)[0]
        self._check_writable(lba, n)
        if n > self._max_blocks:
            raise cdb_error(12, 7)
        if not n:
            return self._resp()
        nbytes = n * self._bs
        if data is None or len(data) < nbytes:
            raise short_data_out()
        self._store(lba, memoryview(data)[:nbytes], bool(cdb[1] & _FUA))
        return self._resp()

    # -------------------------------------------------------- PRE-FETCH

    def _prefetch(self, lba: int, n: int) -> ScsiResponse:
        # NUMBER OF LOGICAL BLOCKS 0: through the last LBA (SBC-4 5.9).
        if lba + max(n, 1) > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        count = n or self._num_blocks - lba
        nbytes = count * self._bs
        if nbytes > PREFETCH_CACHE_BYTES:
            return self._resp(GOOD)  # would not fit in the cache
        fd = getattr(self.backend, "fd", None)
        if isinstance(fd, int) and hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, lba * self._bs, nbytes, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
        # IMMED or not: the range fits in the (page) cache.
        return self._resp(CONDITION_MET)

    def _prefetch10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = _U10.unpack_from(cdb, 2)
        return self._prefetch(lba, n)

    def _prefetch16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = _U16.unpack_from(cdb, 2)
        return self._prefetch(lba, n)

    # -------------------------------------------------- GET LBA STATUS

    def _get_lba_status(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = _BE64.unpack_from(cdb, 2)[0]
        alloc = _BE32.unpack_from(cdb, 10)[0]
        if lba >= self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        room = (alloc - _LBA_STATUS_HEADER) // _LBA_STATUS_DESCRIPTOR
        limit = max(1, min(room, _MAX_LBA_STATUS_DESCRIPTORS))
        body = b"".join(
            struct.pack(">QIB3x", start, count, status)
            for start, count, status in self.lba_extents(lba, limit)
        )
        payload = struct.pack(">I4x", len(body) + 4) + body
        return self._resp(GOOD, payload[:alloc])

    def lba_extents(self, lba: int, limit: int) -> list[tuple[int, int, int]]:
        """Up to `limit` (start, blocks, provisioning status) extents from
        `lba` on: holes of a sparse file (SEEK_HOLE) are deallocated, the
        rest mapped; without a file descriptor everything is mapped."""
        end = self._num_blocks
        image_extents = getattr(self.backend, "extents", None)
        if callable(image_extents):
            return self._image_extents(image_extents, lba, limit)
        fd = getattr(self.backend, "fd", None)
        runs: list[tuple[int, int, int]] = []
        pos = lba
        while pos < end and len(runs) < limit:
            status, nxt = self._extent_at(fd, pos, end)
            nxt = min(nxt, pos + _MAX_EXTENT_BLOCKS)
            if runs and runs[-1][2] == status and runs[-1][0] + runs[-1][1] == pos \
                    and runs[-1][1] + nxt - pos <= _MAX_EXTENT_BLOCKS:
                s, c, _ = runs[-1]
                runs[-1] = (s, c + nxt - pos, status)
            else:
                runs.append((pos, nxt - pos, status))
            pos = nxt
        return runs

    def _image_extents(self, image_extents: Callable[[], Iterable], lba: int,
                       limit: int) -> list[tuple[int, int, int]]:
        """Extents of an image format that keeps an allocation map (qcow2):
        unallocated and zero clusters are deallocated, the rest mapped. A
        block partly in an allocated run is mapped."""
        bs = self._bs
        end = self._num_blocks
        runs: list[tuple[int, int, int]] = []
        for e in image_extents():
            first = e.offset // bs if e.allocated else -(-e.offset // bs)
            last = -(-(e.offset + e.length) // bs) if e.allocated \
                else (e.offset + e.length) // bs
            first, last = max(first, lba), min(last, end)
            if runs:
                first = max(first, runs[-1][0] + runs[-1][1])
            if first >= last:
                continue
            status = LBA_MAPPED if e.allocated else LBA_DEALLOCATED
            while first < last:
                n = min(last - first, _MAX_EXTENT_BLOCKS)
                if runs and runs[-1][2] == status and runs[-1][0] + runs[-1][1] == first \
                        and runs[-1][1] + n <= _MAX_EXTENT_BLOCKS:
                    runs[-1] = (runs[-1][0], runs[-1][1] + n, status)
                elif len(runs) >= limit:
                    return runs
                else:
                    runs.append((first, n, status))
                first += n
        if not runs or runs[-1][0] + runs[-1][1] < end:
            # Past the image's runs (should not happen): mapped.
            start = runs[-1][0] + runs[-1][1] if runs else lba
            if len(runs) < limit and start < end:
                runs.append((start, min(end - start, _MAX_EXTENT_BLOCKS), LBA_MAPPED))
        return runs

    def _extent_at(self, fd: object, pos: int, end: int) -> tuple[int, int]:
        """(status, first block after the extent starting at block `pos`)."""
        bs = self._bs
        if not isinstance(fd, int) or not hasattr(os, "SEEK_DATA"):
            return LBA_MAPPED, end
        off = pos * bs
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # nothing but a hole up to EOF
                return LBA_DEALLOCATED, end
            return LBA_MAPPED, end  # SEEK_DATA unsupported here
        if data >= off + bs:  # a hole covering whole blocks
            return LBA_DEALLOCATED, min(end, data // bs)
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            return LBA_MAPPED, end
        # A block with any data in it is mapped: round the hole start up.
        return LBA_MAPPED, min(end, max(pos + 1, -(-hole // bs)))

    # ------------------------------------------------ READ DEFECT DATA

    def _defect_header(self, flags: int, flags_byte: int) -> int:
        if flags & 0x07 == _DEFECT_FORMAT_RESERVED:
            raise cdb_error(flags_byte, 2)
        # PLISTV/GLISTV echo REQ_PLIST/REQ_GLIST: both lists exist, empty.
        return flags & _DEFECT_FLAGS

    def _read_defect_data10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = _BE16.unpack_from(cdb, 7)[0]
        flags = self._defect_header(cdb[2], 2)
        return self._resp(GOOD, struct.pack(">xBH", flags, 0)[:alloc])

    def _read_defect_data12(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = _BE32.unpack_from(cdb, 6)[0]
        flags = self._defect_header(cdb[1], 1)
        return self._resp(GOOD, struct.pack(">xBHI", flags, 0, 0)[:alloc])

    # ----------------------------------------- REPORT TARGET PORT GROUPS

    def _report_target_port_groups(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        fmt = cdb[1] >> 5
        if fmt not in (_RTPG_FORMAT_LENGTH_ONLY, _RTPG_FORMAT_EXTENDED):
            raise cdb_error(1, 7)
        alloc = _BE32.unpack_from(cdb, 6)[0]
        ident = self.identity
        group = struct.pack(
            ">BBHxBBB", _TPG_PREF | _TPG_ACTIVE_OPTIMIZED, _TPG_AO_SUP,
            ident.port_group, 0, 0, 1,
        ) + struct.pack(">xxH", ident.relative_port)
        if fmt == _RTPG_FORMAT_EXTENDED:
            # IMPLICIT TRANSITION TIME 0: the one state never changes.
            body = struct.pack(">BBxx", _RTPG_EXTENDED_HEADER, 0) + group
        else:
            body = group
        # RETURN DATA LENGTH counts every byte after itself (as Linux and
        # sg3_utils read it, in both formats).
        return self._resp(GOOD, (_BE32.pack(len(body)) + body)[:alloc])
