# EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18; SPC-3
# 6.3, 6.17): ThirdPartyCopy, the copy manager part of a logical unit. Block-to-block segment descriptors (02h) move blocks between
# logical units of the same SCSI target, named by identification descriptor
# CSCD descriptors (E4h) carrying the NAA designator of their VPD page 83h.
# The data never leaves the target: it is read from one backend and written
# to the other in chunks, synchronously, inside the command.
#
# The copy manager finds the units a copy names among the `peers` of the
# command, the ScsiTarget (per-initiator view) that received it, never through
# state the newest view would overwrite; used alone, a logical unit copies
# only within itself.
"""ThirdPartyCopy: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS of a logical unit."""
from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Protocol

from .cdb import BE16, BE32, BE64
from .sense import (
    CHECK_CONDITION,
    COPY_ABORTED_NO_SENSE,
    COPY_TARGET_NOT_REACHABLE,
    GOOD,
    PARAM_LIST_LENGTH_ERROR,
    RESERVATION_CONFLICT,
    TOO_MANY_SEGMENT_DESCRIPTORS,
    TOO_MANY_TARGET_DESCRIPTORS,
    UNREACHABLE_COPY_TARGET,
    UNSUPPORTED_SEGMENT_DESCRIPTOR,
    UNSUPPORTED_TARGET_DESCRIPTOR,
    WRITE_PROTECTED,
    ScsiError,
    build_sense,
    cdb_error,
    param_error,
    short_data_out,
)
from .unit import ScsiResponse, Unit

log = logging.getLogger(__name__)


# Service actions.
SA_EXTENDED_COPY_LID1 = 0x00
SA_COPY_STATUS = 0x00
SA_RECEIVE_DATA = 0x01
SA_OPERATING_PARAMETERS = 0x03
SA_FAILED_SEGMENT_DETAILS = 0x04

# Parameter list (SPC-4 6.4.3 LID1 header): 16 bytes, then the CSCD
# descriptors, the segment descriptors and inline data.
_HEADER = 16
_TARGET_DESCRIPTOR = 32
SEG_BLOCK_TO_BLOCK = 0x02
CSCD_IDENTIFICATION = 0xE4
_B2B_LEN = 28  # block-to-block segment descriptor, header included
# LIST ID USAGE (byte 1 bits 4..3): 00b/01b hold results, 10b do not,
# 11b the list identifier is not used.
_LIST_ID_NONE = 0x3
_LIST_ID_NO_HOLD = 0x2

# Operating parameters this copy manager reports and enforces.
MAX_TARGET_DESCRIPTORS = 8
MAX_SEGMENT_DESCRIPTORS = 16
MAX_DESCRIPTOR_LIST_LENGTH = 1024
MAX_SEGMENT_BYTES = 0xFFFF * 4096  # the 16-bit block count at most
HELD_DATA_LIMIT = 0
TOTAL_CONCURRENT_COPIES = 1
IMPLEMENTED_DESCRIPTORS = bytes((SEG_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION))
# Bytes read and written at a time.
COPY_CHUNK_BYTES = 1 << 20
# Copy statuses held per I_T nexus at most (oldest dropped).
_MAX_HELD = 64

# COPY STATUS, COPY MANAGER STATUS values.
_STATUS_GOOD = 0x01
_STATUS_ERROR = 0x02

# Designator fields used to match an identification CSCD descriptor.
_DESIG_TYPE_NAA = 0x3
_ASSOC_LU = 0x0


class CopyPeers(Protocol):
    """Where a copy manager finds the logical units it may copy between."""

    def units(self) -> Iterable[Unit]:
        """Every logical unit of the target."""
        ...


class _CopyConflict(Exception):
    """A copy target is reserved by another I_T nexus."""


class _CopyAborted(Exception):
    def __init__(self, sense: bytes, segment: int, blocks: int) -> None:
        super().__init__("copy aborted")
        self.sense = sense
        self.segment = segment
        self.blocks = blocks


class ThirdPartyCopy:
    """The copy manager of one logical unit: EXTENDED COPY (LID1) and
    RECEIVE COPY RESULTS (handlers of commands.py), and the copy results
    it holds per I_T nexus."""

    def __init__(self, unit: Unit) -> None:
        """Copy manager of `unit`."""
        self._unit = unit
        self._held: dict[tuple[str, int], tuple[int, int, int, bytes]] = {}

    def drop_results(self, nexus: str | None = None) -> None:
        """Forget held copy results of `nexus` (all when None)."""
        held = self._held
        for key in [k for k in held if nexus is None or k[0] == nexus]:
            del held[key]

    # ------------------------------------------------- EXTENDED COPY

    def extended_copy(self, nexus: str, cdb: bytes, data: bytes | None,
                      peers: CopyPeers | None = None) -> ScsiResponse:
        """EXTENDED COPY (LID1) from `nexus`. Its CSCD descriptors name units
        of `peers`, the ScsiTarget (view) the command came through; without
        one, this unit alone."""
        plen = BE32.unpack_from(cdb, 10)[0]
        if not plen:  # SPC-4 6.4.1: not an error, nothing copied
            return ScsiResponse(GOOD)
        if data is None or len(data) < plen:
            raise short_data_out()
        if plen < _HEADER:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        p = bytes(data[:plen])
        list_id = p[0]
        # Byte 1 STR (sequential striped) and PRIORITY are hints: accepted.
        usage = (p[1] >> 3) & 0x3
        tgt_len = BE16.unpack_from(p, 2)[0]
        seg_len = BE32.unpack_from(p, 8)[0]
        inline_len = BE32.unpack_from(p, 12)[0]
        if tgt_len + seg_len > MAX_DESCRIPTOR_LIST_LENGTH:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        if _HEADER + tgt_len + seg_len + inline_len > plen:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        if inline_len:
            raise param_error(12)
        if usage == _LIST_ID_NONE and list_id:
            raise param_error(0)
        if tgt_len % _TARGET_DESCRIPTOR:
            raise param_error(2)
        n_targets = tgt_len // _TARGET_DESCRIPTOR
        if n_targets > MAX_TARGET_DESCRIPTORS:
            raise ScsiError(TOO_MANY_TARGET_DESCRIPTORS, field=(2, None), in_cdb=False)
        # Resolve CSCD descriptors: an unknown type code fails the command,
        # an unknown logical unit only the segments that use it.
        units = list(peers.units()) if peers is not None else [self._unit]
        targets: list[Unit | None] = []
        for i in range(n_targets):
            off = _HEADER + i * _TARGET_DESCRIPTOR
            d = p[off:off + _TARGET_DESCRIPTOR]
            if d[0] != CSCD_IDENTIFICATION:
                raise ScsiError(UNSUPPORTED_TARGET_DESCRIPTOR, field=(off, None), in_cdb=False)
            # Byte 1: LU ID TYPE (ignored in SPC-4), NUL (obsolete),
            # PERIPHERAL DEVICE TYPE (block devices only).
            if d[1] & 0x1F != 0x00:
                raise ScsiError(UNSUPPORTED_TARGET_DESCRIPTOR, field=(off + 1, 4), in_cdb=False)
            targets.append(_find_copy_target(d, units))
        segments: list[tuple[int, int, int, int, int, int]] = []
        pos = _HEADER + tgt_len
        end = pos + seg_len
        while pos < end:
            if pos + 4 > end:
                raise ScsiError(PARAM_LIST_LENGTH_ERROR)
            kind = p[pos]
            length = BE16.unpack_from(p, pos + 2)[0] + 4
            if kind != SEG_BLOCK_TO_BLOCK:
                raise ScsiError(UNSUPPORTED_SEGMENT_DESCRIPTOR, field=(pos, None), in_cdb=False)
            if length != _B2B_LEN or pos + length > end:
                raise param_error(pos + 2)
            if len(segments) == MAX_SEGMENT_DESCRIPTORS:
                raise ScsiError(TOO_MANY_SEGMENT_DESCRIPTORS, field=(8, None), in_cdb=False)
            flags = p[pos + 1]
            src = BE16.unpack_from(p, pos + 4)[0]
            dst = BE16.unpack_from(p, pos + 6)[0]
            blocks = BE16.unpack_from(p, pos + 10)[0]
            src_lba = BE64.unpack_from(p, pos + 12)[0]
            dst_lba = BE64.unpack_from(p, pos + 20)[0]
            segments.append((flags, src, dst, blocks, src_lba, dst_lba))
            pos += length
        done_segments = 0
        copied = 0
        try:
            for i, (_flags, src, dst, blocks, src_lba, dst_lba) in enumerate(segments):
                copied += self._copy_segment(nexus, targets, i, src, dst, blocks, src_lba,
                                             dst_lba)
                done_segments += 1
        except _CopyAborted as e:
            self._hold(nexus, list_id, usage, _STATUS_ERROR, done_segments, copied + e.blocks,
                       e.sense)
            return ScsiResponse(CHECK_CONDITION, b"", e.sense)
        except _CopyConflict:
            self._hold(nexus, list_id, usage, _STATUS_ERROR, done_segments, copied, b"")
            return ScsiResponse(RESERVATION_CONFLICT)
        self._hold(nexus, list_id, usage, _STATUS_GOOD, done_segments, copied, b"")
        return ScsiResponse(GOOD)

    def _hold(self, nexus: str, list_id: int, usage: int, status: int, segments: int,
              blocks: int, sense: bytes) -> None:
        if usage in (_LIST_ID_NONE, _LIST_ID_NO_HOLD):
            return
        held = self._held
        held.pop((nexus, list_id), None)
        if len(held) >= _MAX_HELD:
            del held[next(iter(held))]
        held[(nexus, list_id)] = (status, segments, blocks * self._unit.block_size, sense)

    def _copy_segment(self, nexus: str, targets: list, index: int, src: int, dst: int,
                      blocks: int, src_lba: int, dst_lba: int) -> int:
        """Copy one block-to-block segment; returns the blocks copied."""
        if src >= len(targets) or dst >= len(targets) \
                or targets[src] is None or targets[dst] is None:
            raise _CopyAborted(build_sense(UNREACHABLE_COPY_TARGET, information=index),
                               index, 0)
        s: Unit = targets[src]
        t: Unit = targets[dst]
        for lu in (s, t):
            if not lu.medium_loaded or lu.device_type != 0 or not lu.accessible:
                raise _CopyAborted(build_sense(COPY_TARGET_NOT_REACHABLE, information=index),
                                   index, 0)
        # Reservations of the copy's logical units, as a READ of the source
        # and a WRITE of the destination from this nexus would meet them.
        if s.conflicts(nexus, _READ16):
            raise _CopyConflict
        if t.conflicts(nexus, _WRITE16):
            raise _CopyConflict
        if not blocks:
            return 0
        if s.block_size != t.block_size:
            raise _CopyAborted(build_sense(COPY_ABORTED_NO_SENSE, information=index), index, 0)
        if src_lba + blocks > s.num_blocks or dst_lba + blocks > t.num_blocks:
            raise _CopyAborted(build_sense(COPY_ABORTED_NO_SENSE, information=index), index, 0)
        if t.read_only:
            raise _CopyAborted(build_sense(WRITE_PROTECTED, information=index), index, 0)
        bs = s.block_size
        per = max(1, COPY_CHUNK_BYTES // bs)
        done = 0
        # Overlapping ranges on one unit copy backwards when the destination
        # is above the source, so each block is read before it is overwritten.
        backwards = s is t and src_lba < dst_lba < src_lba + blocks
        try:
            while done < blocks:
                k = min(per, blocks - done)
                off = blocks - done - k if backwards else done
                chunk = s.backend.pread((src_lba + off) * bs, k * bs)
                t.backend.pwrite((dst_lba + off) * bs, chunk)
                done += k
            if not t.write_cache:
                t.backend.flush()
        except OSError:
            log.exception("EXTENDED COPY failed in segment %d", index)
            raise _CopyAborted(build_sense(COPY_ABORTED_NO_SENSE, information=index),
                               index, done) from None
        return blocks

    # --------------------------------------------- RECEIVE COPY RESULTS

    def receive_copy_results(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        sa = cdb[1] & 0x1F
        list_id = cdb[2]
        alloc = BE32.unpack_from(cdb, 10)[0]
        if sa == SA_OPERATING_PARAMETERS:
            body = struct.pack(
                ">BxxxHHIIIIIxxHBBBBxxxB",
                0x01,  # SNLID: LIST ID USAGE 11b is supported
                MAX_TARGET_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST_LENGTH,
                MAX_SEGMENT_BYTES, 0, HELD_DATA_LIMIT, 0, TOTAL_CONCURRENT_COPIES,
                TOTAL_CONCURRENT_COPIES, (COPY_CHUNK_BYTES // 512).bit_length() - 1 + 9, 0, 0,
                len(IMPLEMENTED_DESCRIPTORS),
            ) + IMPLEMENTED_DESCRIPTORS
            payload = BE32.pack(len(body)) + body
            return ScsiResponse(GOOD, payload[:alloc])
        if sa not in (SA_COPY_STATUS, SA_RECEIVE_DATA, SA_FAILED_SEGMENT_DETAILS):
            raise cdb_error(1, 4)
        held = self._held
        entry = held.get((nexus, list_id))
        if entry is None:
            raise cdb_error(2, 7)
        status, segments, nbytes, sense = entry
        if sa == SA_COPY_STATUS:
            # Transfer count in bytes (units 00h); the copy is never in
            # progress here, so the data is delivered once and discarded.
            payload = struct.pack(">IBHBI", 8, status, segments, 0x00, nbytes & 0xFFFFFFFF)
            if status == _STATUS_GOOD:
                del held[(nexus, list_id)]
        elif sa == SA_RECEIVE_DATA:
            payload = BE32.pack(0)  # block-to-block segments hold no data
        else:
            if not sense:
                payload = BE32.pack(0)
            else:
                body = bytes(52) + struct.pack(">BxH", 0x02, len(sense)) + sense
                payload = BE32.pack(len(body)) + body
            del held[(nexus, list_id)]
        return ScsiResponse(GOOD, payload[:alloc])


def _find_copy_target(d: bytes, units: list[Unit]) -> Unit | None:
    """The unit of `units` an identification CSCD descriptor names."""
    code_set = d[4] & 0x0F
    assoc = (d[5] >> 4) & 0x3
    dtype = d[5] & 0x0F
    dlen = d[7]
    value = bytes(d[8:8 + min(dlen, 20)])
    if code_set != 0x1 or dtype != _DESIG_TYPE_NAA or assoc != _ASSOC_LU:
        return None
    for lu in units:
        if lu.identity.naa == value:
            return lu
    return None


# Fake CDBs for the reservation checks of a copy's source and destination.
_READ16 = bytes((0x88,)) + bytes(15)
_WRITE16 = bytes((0x8A,)) + bytes(15)
