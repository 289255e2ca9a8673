# Logical block provisioning (SBC-4 4.7) and the commands that write or
# deallocate many blocks at once: WRITE SAME 10/16 (with UNMAP on thin
# units), UNMAP, SANITIZE (BLOCK ERASE, EXIT FAILURE MODE) and GET LBA
# STATUS, whose extents come from the image's allocation map or the sparse
# file's holes. `Provisioning` is the logical unit's part that runs them.
"""WRITE SAME, UNMAP, SANITIZE and GET LBA STATUS of a logical unit."""
from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable, Iterable

from .cdb import BE16, BE32, BE64, U10, U16
from .limits import MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BYTES
from .opcodes import SA_SANITIZE_BLOCK_ERASE
from .sense import (
    GOOD,
    LBA_OUT_OF_RANGE,
    PARAM_LIST_LENGTH_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
    cdb_error,
    param_error,
    short_data_out,
)
from .unit import ScsiResponse, Unit

log = logging.getLogger(__name__)


_PROTECT_MASK = 0xE0  # WRPROTECT: byte 1 bits 7..5
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

# GET LBA STATUS (SBC-4 5.7): provisioning status of a descriptor.
LBA_MAPPED = 0x0
LBA_DEALLOCATED = 0x1
_LBA_STATUS_HEADER = 8
_LBA_STATUS_DESCRIPTOR = 16
_MAX_EXTENT_BLOCKS = 0xFFFFFFFF
# Descriptors one GET LBA STATUS returns at most (bounds the lseek calls).
_MAX_LBA_STATUS_DESCRIPTORS = 256


class Provisioning:
    """The provisioning commands of one logical unit (handlers of commands.py)."""

    def __init__(self, unit: Unit) -> None:
        """Run the commands on `unit`."""
        self._unit = unit

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
        if unmap and not self._unit.thin:  # LBPWS/LBPWS10 are 0 when fully provisioned
            raise cdb_error(1, 3)
        if b1 & _WS_OBSOLETE:
            raise cdb_error(1, 2)
        if lba > self._unit.num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if not n:
            if not self._unit.thin:  # WSNZ=1: 0 does not mean "to the last LBA"
                raise cdb_error(len_byte, 7)
            # WSNZ=0 (thin units, where unmapping to the end is the use):
            # through the last LBA (SBC-4 5.49).
            n = self._unit.num_blocks - lba
            if not n:
                if self._unit.read_only:
                    raise ScsiError(WRITE_PROTECTED)
                return ScsiResponse(GOOD)
        self._unit.check_writable(lba, n)
        bs = self._unit.block_size
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
            self.deallocate(lba, n)
            return ScsiResponse(GOOD)
        per_chunk = max(1, min(n, _WS_CHUNK_BYTES // bs))
        chunk = block * per_chunk
        done = 0
        try:
            while done < n:
                k = min(per_chunk, n - done)
                self._unit.backend.pwrite((lba + done) * bs, chunk if k == per_chunk else chunk[:k * bs])
                done += k
            if not self._unit.write_cache:
                self._unit.backend.flush()
        except OSError:
            log.exception("write error at LBA %d", lba + done)
            raise ScsiError(WRITE_ERROR, information=lba + done) from None
        return ScsiResponse(GOOD)

    def deallocate(self, lba: int, n: int) -> None:
        """Discard `n` blocks at `lba` (they read back as zeros)."""
        assert self._unit.thin
        try:
            off, length = lba * self._unit.block_size, n * self._unit.block_size
            self._unit.backend.discard(off, length)
            # A backend deallocating whole units of `discard_granularity`
            # bytes only (qcow2 clusters) leaves the partial ones at the
            # ends: they are written with zeros, as LBPRZ=1 promises.
            gran = getattr(self._unit.backend, "discard_granularity", 0)
            if gran > self._unit.block_size:
                end = off + length
                head_end = min(end, -(-off // gran) * gran)
                tail_start = max(head_end, end // gran * gran)
                if end >= self._unit.num_blocks * self._unit.block_size:
                    tail_start = end  # the last, partial cluster is discarded whole
                for a, b in ((off, head_end), (tail_start, end)):
                    if b > a:
                        self._unit.backend.pwrite(a, bytes(b - a))
            if not self._unit.write_cache:
                self._unit.backend.flush()
        except OSError:
            log.exception("discard failed at LBA %d", lba)
            raise ScsiError(WRITE_ERROR, information=lba) from None

    # --------------------------------------------------------- SANITIZE

    def sanitize(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        # Reached for the service actions the command table lists (SBC-4
        # 5.30): BLOCK ERASE deallocates every block (thin units), EXIT
        # FAILURE MODE is a no-op (a sanitize here cannot fail half way and
        # stay failed). Neither takes a parameter list.
        if cdb[1] & 0x40:
            raise cdb_error(1, 6)
        for i in range(2, 7):
            if cdb[i]:
                raise cdb_error(i, 7)
        plen = BE16.unpack_from(cdb, 7)[0]
        if self._unit.read_only:
            raise ScsiError(WRITE_PROTECTED)
        if plen:
            raise cdb_error(7, 7)
        if cdb[1] & 0x1F == SA_SANITIZE_BLOCK_ERASE:
            self.deallocate(0, self._unit.num_blocks)
        return ScsiResponse(GOOD)

    # ------------------------------------------------------------ UNMAP

    def unmap(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _UNMAP_ANCHOR:  # ANC_SUP is 0
            raise cdb_error(1, 0)
        plen = BE16.unpack_from(cdb, 7)[0]
        if self._unit.read_only:
            raise ScsiError(WRITE_PROTECTED)
        if not plen:  # SBC-4 5.32.1: not an error, nothing unmapped
            return ScsiResponse(GOOD)
        if plen < _UNMAP_HEADER:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        if data is None or len(data) < plen:
            raise short_data_out()
        p = memoryview(data)[:plen]
        bd_len = BE16.unpack_from(p, 2)[0]
        # Descriptors past the parameter list length are ignored (SBC-4 5.32.2).
        count = min(bd_len, plen - _UNMAP_HEADER) // _UNMAP_DESCRIPTOR
        if count > MAX_UNMAP_DESCRIPTORS:
            raise param_error(2)
        ranges: list[tuple[int, int]] = []
        total = 0
        for i in range(count):
            off = _UNMAP_HEADER + i * _UNMAP_DESCRIPTOR
            lba = BE64.unpack_from(p, off)[0]
            n = BE32.unpack_from(p, off + 8)[0]
            if lba + n > self._unit.num_blocks:
                raise ScsiError(LBA_OUT_OF_RANGE)
            total += n
            if total > MAX_UNMAP_BLOCKS:
                raise param_error(off + 8)
            if n:
                ranges.append((lba, n))
        for lba, n in ranges:
            self.deallocate(lba, n)
        return ScsiResponse(GOOD)

    def write_same10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _WS_NDOB:  # reserved in WRITE SAME(10)
            raise cdb_error(1, 0)
        lba, n = U10.unpack_from(cdb, 2)
        return self._write_same(cdb, lba, n, data, 7)

    def write_same16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = U16.unpack_from(cdb, 2)
        return self._write_same(cdb, lba, n, data, 10)

    # -------------------------------------------------- GET LBA STATUS

    def get_lba_status(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = BE64.unpack_from(cdb, 2)[0]
        alloc = BE32.unpack_from(cdb, 10)[0]
        if lba >= self._unit.num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        room = (alloc - _LBA_STATUS_HEADER) // _LBA_STATUS_DESCRIPTOR
        limit = max(1, min(room, _MAX_LBA_STATUS_DESCRIPTORS))
        body = b"".join(
            struct.pack(">QIB3x", start, count, status)
            for start, count, status in self.lba_extents(lba, limit)
        )
        payload = struct.pack(">I4x", len(body) + 4) + body
        return ScsiResponse(GOOD, payload[:alloc])

    def lba_extents(self, lba: int, limit: int) -> list[tuple[int, int, int]]:
        """Up to `limit` (start, blocks, provisioning status) extents from
        `lba` on: holes of a sparse file (SEEK_HOLE) are deallocated, the
        rest mapped; without a file descriptor everything is mapped."""
        end = self._unit.num_blocks
        image_extents = getattr(self._unit.backend, "extents", None)
        if callable(image_extents):
            return self._image_extents(image_extents, lba, limit)
        fd = getattr(self._unit.backend, "fd", None)
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
        bs = self._unit.block_size
        end = self._unit.num_blocks
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
        bs = self._unit.block_size
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
