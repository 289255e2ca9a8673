# Microsoft VHDX ([MS-VHDX] 2.2): the file type identifier, two headers
# (the valid one with the larger sequence number is current), two region
# tables naming the BAT and metadata regions, the metadata items (file
# parameters, virtual disk size, logical sector size, page 83 data = the disk's
# identity) and the BAT, whose payload entries interleave with one sector
# bitmap entry per chunk.  Every structure is CRC-32C protected.  A log with
# entries means the image was not closed cleanly: netstore refuses it rather
# than replay it.
"""VHDX reader (fixed and dynamic)."""

from __future__ import annotations

import struct
import uuid as uuidlib

import crc32c as _crc32c

from netstore.disk.api import SECTOR, UnsupportedImageError
from netstore.disk.formats import BlockMappedImage, guid_le

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


__all__ = ["VhdxImage", "SECTOR"]
