# Microsoft VHDX ([MS-VHDX] 2.2): the file type identifier, two headers
# (the valid one with the larger sequence number is current), two region
# tables naming the BAT and metadata regions, the metadata items (file
# parameters, virtual disk size, logical sector size, page 83 data = the disk's
# identity) and the BAT, whose payload entries interleave with one sector
# bitmap entry per chunk.  Every structure is CRC-32C protected.  A log with
# entries means the image was not closed cleanly: netstore refuses it rather
# than replay it.  The writer lays a new file out as QEMU and Hyper-V do:
# identifier, headers and region tables in the first MiB, an empty log in the
# second, the metadata region in the third, the BAT from the fourth, then the
# payload blocks (appended as written when dynamic, all in place when fixed).
"""VHDX reader (fixed and dynamic) and writer."""

from __future__ import annotations

import os
import struct
import uuid as uuidlib

import crc32c as _crc32c

from netstore.disk.api import SECTOR, DiskError, Progress, UnsupportedImageError
from netstore.disk.formats import (
    BlockMappedImage,
    StreamingBlockWriter,
    check_uuid,
    guid_le,
    guid_le_bytes,
    new_uuid,
    preallocate,
)

KiB, MiB = 1024, 1 << 20
FILE_SIGNATURE = b"vhdxfile"
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
REGION_OFFSETS = (192 * KiB, 256 * KiB)
REGION_SIZE = 64 * KiB
MAX_REGION_ENTRIES = 2047
MAX_METADATA_ENTRIES = 2047
METADATA_TABLE_SIZE = 64 * KiB

BAT_GUID = uuidlib.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuidlib.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuidlib.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuidlib.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83_DATA = uuidlib.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = uuidlib.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuidlib.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuidlib.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
KNOWN_METADATA = {FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA, LOGICAL_SECTOR_SIZE,
                  PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR}

# BAT payload block states ([MS-VHDX] 2.5.1.1)
PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO, PAYLOAD_UNMAPPED = 0, 1, 2, 3
PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT = 6, 7
ZERO_STATES = (PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO, PAYLOAD_UNMAPPED)
MAX_VIRTUAL_SIZE = 64 << 40  # the spec's 64 TiB

_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
_REGION_HEAD = struct.Struct("<4sIII")
_REGION_ENTRY = struct.Struct("<16sQII")
_META_HEAD = struct.Struct("<8sHH20s")
_META_ENTRY = struct.Struct("<16sIIII")
_LOG_ENTRY = struct.Struct("<4sIIIQII16s")

# Metadata entry flags ([MS-VHDX] 2.6.1.2)
META_IS_VIRTUAL_DISK, META_IS_REQUIRED = 2, 4
# Where the writer puts things (each region 1 MiB aligned, as the spec asks).
LOG_OFFSET = LOG_LENGTH = METADATA_LENGTH = MiB
METADATA_OFFSET = 2 * MiB
BAT_OFFSET = 3 * MiB
CREATOR = "netstore"


def crc32c_with_zeroed(data: bytes, at: int) -> int:
    """CRC-32C of `data` with its 4-byte checksum field at `at` taken as zero."""
    crc = _crc32c.crc32c(data[:at])
    crc = _crc32c.crc32c(b"\0\0\0\0", crc)
    return _crc32c.crc32c(data[at + 4 :], crc)


class VhdxImage(BlockMappedImage):
    """A VHDX file opened read-only."""

    format = "vhdx"

    def _parse(self) -> None:
        ident = self._read(0, 8, "VHDX file type identifier")
        if ident != FILE_SIGNATURE:
            raise self._fail("not a VHDX image (no 'vhdxfile' signature)")
        header = self._current_header()
        _sig, _c, _seq, _fw, _dw, log_guid, _lv, version, log_len, log_off = header
        if version != 1:
            raise UnsupportedImageError(f"{self.path}: VHDX version {version}")
        if log_guid != bytes(16):
            self._refuse_if_log_has_entries(log_guid, log_off, log_len)
        regions = self._region_table()
        if BAT_GUID not in regions or METADATA_GUID not in regions:
            raise self._fail("region table lacks the BAT or the metadata region")
        meta = self._metadata(*regions[METADATA_GUID])
        if FILE_PARAMETERS not in meta or VIRTUAL_DISK_SIZE not in meta or LOGICAL_SECTOR_SIZE not in meta:
            raise self._fail("metadata lacks file parameters, virtual disk size or logical sector size")
        block, flags = struct.unpack("<II", meta[FILE_PARAMETERS][:8])
        if flags & 2 or PARENT_LOCATOR in meta:
            raise UnsupportedImageError(f"{self.path}: differencing VHDX images are not supported")
        if block < MiB or block > 256 * MiB or block & (block - 1):
            raise self._fail(f"VHDX block size {block} is not a power of two of 1..256 MiB")
        (vsize,) = struct.unpack("<Q", meta[VIRTUAL_DISK_SIZE][:8])
        (lss,) = struct.unpack("<I", meta[LOGICAL_SECTOR_SIZE][:4])
        if lss not in (512, 4096):
            raise self._fail(f"VHDX logical sector size {lss} is not 512 or 4096")
        if vsize % lss or vsize > MAX_VIRTUAL_SIZE:
            raise self._fail(f"VHDX virtual size {vsize} is invalid")
        self.virtual_size = vsize
        self.variant = "fixed" if flags & 1 else "dynamic"
        page83 = meta.get(PAGE83_DATA)
        self.uuid = guid_le(page83[:16]) if page83 and len(page83) >= 16 else None
        self._block_bytes = block
        chunk_ratio = (1 << 23) * lss // block
        blocks = -(-vsize // block)
        entries = blocks + (blocks - 1) // chunk_ratio if blocks else 0
        bat_off, bat_len = regions[BAT_GUID]
        if entries * 8 > bat_len:
            raise self._fail(f"BAT region of {bat_len} bytes is too small for {entries} entries")
        raw = self._read(bat_off, entries * 8, "VHDX BAT")
        bat = struct.unpack_from(f"<{entries}Q", raw)
        # payload entries only: drop every (chunk_ratio+1)-th, the sector bitmap entries
        payload = [bat[i + i // chunk_ratio] for i in range(blocks)]
        self._states = [e & 7 for e in payload]
        self._offsets = [(e >> 20) << 20 for e in payload]
        for i, st in enumerate(self._states):
            if st == PAYLOAD_FULLY_PRESENT:
                if self._offsets[i] < MiB or self._offsets[i] + min(block, vsize - i * block) > self._file_size:
                    raise self._fail(f"BAT entry for block {i} points past the end of the file")
            elif st == PAYLOAD_PARTIALLY_PRESENT:
                raise UnsupportedImageError(f"{self.path}: partially present blocks (a differencing disk)")
            elif st not in ZERO_STATES:
                raise self._fail(f"BAT entry for block {i} has the invalid state {st}")

    def _current_header(self) -> tuple:
        best = None
        problems = []
        for off in HEADER_OFFSETS:
            raw = self._read(off, HEADER_SIZE, "VHDX header")
            h = _HEADER.unpack_from(raw)
            if h[0] != b"head":
                problems.append(f"no header signature at {off}")
                continue
            if crc32c_with_zeroed(raw, 4) != h[1]:
                problems.append(f"header checksum at {off} is wrong")
                continue
            if best is None or h[2] > best[2]:
                best = h
        if best is None:
            raise self._fail("no valid VHDX header (" + "; ".join(problems) + ")")
        return best

    def _refuse_if_log_has_entries(self, log_guid: bytes, log_off: int, log_len: int) -> None:
        if log_len % MiB or log_off % MiB or log_off + log_len > self._file_size:
            raise self._fail(f"VHDX log ({log_len} bytes at {log_off}) lies outside the file")
        raw = self._read(log_off, log_len, "VHDX log")
        pos = raw.find(b"loge")
        while pos != -1:
            if pos % (4 * KiB) == 0 and pos + _LOG_ENTRY.size <= len(raw):
                entry = _LOG_ENTRY.unpack_from(raw, pos)
                if entry[7] == log_guid:
                    raise UnsupportedImageError(
                        f"{self.path}: the VHDX log holds entries (the image was not closed "
                        "cleanly); open it once in Hyper-V or run 'qemu-img check -r all' to replay it"
                    )
            pos = raw.find(b"loge", pos + 1)

    def _region_table(self) -> dict[uuidlib.UUID, tuple[int, int]]:
        problems = []
        for off in REGION_OFFSETS:
            raw = self._read(off, REGION_SIZE, "VHDX region table")
            sig, csum, count, _r = _REGION_HEAD.unpack_from(raw)
            if sig != b"regi":
                problems.append(f"no region table signature at {off}")
                continue
            if crc32c_with_zeroed(raw, 4) != csum:
                problems.append(f"region table checksum at {off} is wrong")
                continue
            if count > MAX_REGION_ENTRIES:
                raise self._fail(f"region table has {count} entries (at most {MAX_REGION_ENTRIES})")
            regions: dict[uuidlib.UUID, tuple[int, int]] = {}
            for i in range(count):
                g, foff, length, required = _REGION_ENTRY.unpack_from(raw, _REGION_HEAD.size + 32 * i)
                guid = uuidlib.UUID(bytes_le=g)
                if guid not in (BAT_GUID, METADATA_GUID):
                    if required & 1:
                        raise UnsupportedImageError(f"{self.path}: required VHDX region {guid} is unknown")
                    continue
                if foff % MiB or foff < MiB or foff + length > self._file_size:
                    raise self._fail(f"region {guid} ({length} bytes at {foff}) lies outside the file")
                regions[guid] = (foff, length)
            return regions
        raise self._fail("no valid VHDX region table (" + "; ".join(problems) + ")")

    def _metadata(self, off: int, length: int) -> dict[uuidlib.UUID, bytes]:
        if length < METADATA_TABLE_SIZE:
            raise self._fail(f"metadata region of {length} bytes is smaller than its table")
        raw = self._read(off, METADATA_TABLE_SIZE, "VHDX metadata table")
        sig, _r, count, _r2 = _META_HEAD.unpack_from(raw)
        if sig != b"metadata":
            raise self._fail("no metadata table signature")
        if count > MAX_METADATA_ENTRIES:
            raise self._fail(f"metadata table has {count} entries (at most {MAX_METADATA_ENTRIES})")
        items: dict[uuidlib.UUID, bytes] = {}
        for i in range(count):
            g, ioff, ilen, flags, _r = _META_ENTRY.unpack_from(raw, _META_HEAD.size + 32 * i)
            guid = uuidlib.UUID(bytes_le=g)
            if guid not in KNOWN_METADATA:
                if flags & 4:
                    raise UnsupportedImageError(f"{self.path}: required VHDX metadata item {guid} is unknown")
                continue
            if ioff < METADATA_TABLE_SIZE or ioff + ilen > length or ilen > MiB:
                raise self._fail(f"metadata item {guid} ({ilen} bytes at {ioff}) lies outside its region")
            items[guid] = self._read(off + ioff, ilen, f"VHDX metadata item {guid}")
        for need, size in ((FILE_PARAMETERS, 8), (VIRTUAL_DISK_SIZE, 8), (LOGICAL_SECTOR_SIZE, 4)):
            if need in items and len(items[need]) < size:
                raise self._fail(f"metadata item {need} is only {len(items[need])} bytes")
        return items

    def _block_allocated(self, index: int) -> bool:
        return self._states[index] == PAYLOAD_FULLY_PRESENT

    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        if self._states[index] != PAYLOAD_FULLY_PRESENT:
            return None
        return self._read(self._offsets[index] + within, length, f"VHDX block {index}")


def chunk_ratio(block: int, logical_sector: int = SECTOR) -> int:
    """Payload blocks per sector bitmap block: 2^23 sectors over the block size."""
    return (1 << 23) * logical_sector // block


def _with_crc(data: bytearray) -> bytes:
    """`data` (its checksum field at 4 zero) with its CRC-32C stored there."""
    struct.pack_into("<I", data, 4, _crc32c.crc32c(bytes(data)))
    return bytes(data)


class VhdxWriter(StreamingBlockWriter):
    """Writes a new VHDX (dynamic or fixed); data must come in increasing offsets."""

    def __init__(self, path: str, size: int, *, variant: str = "dynamic", uuid: str | None = None,
                 progress: Progress | None = None) -> None:
        if variant not in ("dynamic", "fixed"):
            raise DiskError(f"VHDX variants are dynamic and fixed, not {variant!r}")
        size = -(-size // SECTOR) * SECTOR
        if size > MAX_VIRTUAL_SIZE:
            raise DiskError(f"{path}: a VHDX holds at most 64 TiB")
        if size == 0:  # qemu cannot open one (its BAT size underflows)
            raise DiskError(f"{path}: a VHDX holds at least one sector")
        # small blocks keep a sparse disk small; large disks take Hyper-V's 32 MiB
        self._block_bytes = 2 * MiB if size <= (1 << 40) else 32 * MiB
        super().__init__(path, size)
        self.uuid = check_uuid(uuid) if uuid else new_uuid()
        self.fixed = variant == "fixed"
        blocks = -(-size // self._block_bytes)
        ratio = chunk_ratio(self._block_bytes)
        self._entries = blocks + (blocks - 1) // ratio if blocks else 0
        self._ratio = ratio
        self._bat = [PAYLOAD_NOT_PRESENT] * self._entries
        self._data = BAT_OFFSET + max(MiB, -(-self._entries * 8 // MiB) * MiB)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if self.fixed:
                preallocate(self._fd, self._data, blocks * self._block_bytes, progress)
                for i in range(blocks):
                    self._bat[i + i // ratio] = self._entry(i)
        except BaseException:
            os.close(self._fd)
            raise
        self._next = self._data + (blocks * self._block_bytes if self.fixed else 0)

    def _entry(self, index: int) -> int:
        return (self._data + index * self._block_bytes) | PAYLOAD_FULLY_PRESENT

    def _emit_block(self, index: int, data: bytes) -> None:
        slot = index + index // self._ratio
        if self.fixed:
            os.pwrite(self._fd, data, self._bat[slot] & ~7)
            return
        self._bat[slot] = self._next | PAYLOAD_FULLY_PRESENT
        os.pwrite(self._fd, data, self._next)
        self._next += self._block_bytes

    def _metadata(self) -> bytes:
        items = [
            (FILE_PARAMETERS, struct.pack("<II", self._block_bytes, 1 if self.fixed else 0),
             META_IS_REQUIRED),
            (VIRTUAL_DISK_SIZE, struct.pack("<Q", self.virtual_size),
             META_IS_VIRTUAL_DISK | META_IS_REQUIRED),
            (PAGE83_DATA, guid_le_bytes(self.uuid), META_IS_VIRTUAL_DISK | META_IS_REQUIRED),
            (LOGICAL_SECTOR_SIZE, struct.pack("<I", SECTOR), META_IS_VIRTUAL_DISK | META_IS_REQUIRED),
            (PHYSICAL_SECTOR_SIZE, struct.pack("<I", 4096), META_IS_VIRTUAL_DISK | META_IS_REQUIRED),
        ]
        table = bytearray(METADATA_TABLE_SIZE)
        _META_HEAD.pack_into(table, 0, b"metadata", 0, len(items), bytes(20))
        body = bytearray()
        for i, (guid, value, flags) in enumerate(items):
            off = METADATA_TABLE_SIZE + len(body)
            _META_ENTRY.pack_into(table, _META_HEAD.size + 32 * i, guid.bytes_le, off, len(value),
                                  flags, 0)
            body += value + bytes(-len(value) % 8)
        return bytes(table + body)

    def _regions(self) -> bytes:
        table = bytearray(REGION_SIZE)
        _REGION_HEAD.pack_into(table, 0, b"regi", 0, 2, 0)
        bat_len = self._data - BAT_OFFSET
        for i, (guid, off, length) in enumerate(((BAT_GUID, BAT_OFFSET, bat_len),
                                                 (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH))):
            _REGION_ENTRY.pack_into(table, _REGION_HEAD.size + 32 * i, guid.bytes_le, off, length, 1)
        return _with_crc(table)

    def _header(self, sequence: int, file_write: bytes, data_write: bytes) -> bytes:
        raw = bytearray(HEADER_SIZE)
        _HEADER.pack_into(raw, 0, b"head", 0, sequence, file_write, data_write, bytes(16), 0, 1,
                          LOG_LENGTH, LOG_OFFSET)
        return _with_crc(raw)

    def _finish(self) -> None:
        try:
            ident = FILE_SIGNATURE + CREATOR.encode("utf-16-le")
            file_write, data_write = uuidlib.uuid4().bytes_le, uuidlib.uuid4().bytes_le
            regions = self._regions()
            writes = [(ident, 0), (regions, REGION_OFFSETS[0]), (regions, REGION_OFFSETS[1]),
                      (self._metadata(), METADATA_OFFSET),
                      (struct.pack(f"<{self._entries}Q", *self._bat), BAT_OFFSET)]
            for data, off in writes:
                os.pwrite(self._fd, data, off)
            os.ftruncate(self._fd, max(self._next, self._data))  # the empty log: a hole
            os.fsync(self._fd)
            # the headers last: until they are there, the file is no VHDX
            for seq, off in enumerate(HEADER_OFFSETS):
                os.pwrite(self._fd, self._header(seq, file_write, data_write), off)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)


__all__ = ["VhdxImage", "VhdxWriter", "SECTOR"]
