# Microsoft Virtual Hard Disk (VHD, "vpc" in qemu), Virtual Hard Disk Image
# Format Specification 1.0: a 512-byte big-endian footer at the end of the
# file ("conectix"); fixed disks are raw data followed by the footer, dynamic
# disks have a footer copy at 0, a dynamic header ("cxsparse") with the BAT
# offset, and blocks (a sector bitmap, then data) the BAT points to in sectors.
# Checksums are the one's complement of the byte sum without the field.
"""VHD reader (fixed, dynamic) and writer."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator

from netstore.disk.api import SECTOR, DiskError, Extent, Progress, UnsupportedImageError
from netstore.disk.formats import (
    BlockMappedImage,
    StreamingBlockWriter,
    check_uuid,
    guid_le,
    guid_le_bytes,
    new_uuid,
    open_for_reading,
    preallocate,
    read_exact,
)

FOOTER_COOKIE = b"conectix"
DYN_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYN_HEADER_SIZE = 1024
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
BAT_UNUSED = 0xFFFFFFFF
DEFAULT_BLOCK = 2 << 20  # what Virtual PC, Hyper-V and qemu use
# VHD epoch: 2000-01-01 00:00:00 UTC.
EPOCH_2000 = 946684800
CREATOR_APP = b"nets"
CREATOR_VERSION = 0x00010000
CREATOR_OS = b"Wi2k"  # the spec's value for Windows; qemu writes it too
# The largest geometry the CHS fields hold (spec, appendix: CHS calculation).
MAX_CHS_SECTORS = 65535 * 16 * 255
# A dynamic disk's block map is bounded by the spec's 2040 GiB limit.
MAX_SIZE = 2040 << 30

# cookie, features, version, data offset, timestamp, creator app, creator
# version, creator OS, original size, current size, cylinders, heads,
# sectors per track, disk type, checksum, unique id, saved state
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
# cookie, data offset, table offset, header version, max table entries, block
# size, checksum, parent unique id, parent timestamp
_DYN = struct.Struct(">8sQQIIII16sI")
CHECKSUM_AT_FOOTER = 64
CHECKSUM_AT_DYN = 36
UUID_AT_FOOTER = 68


def checksum(block: bytes | bytearray, at: int) -> int:
    """One's complement of the sum of all bytes, the 4-byte field at `at` taken as zero."""
    total = sum(block) - sum(block[at : at + 4])
    return (~total) & 0xFFFFFFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for a disk of `size` bytes, as the
    VHD specification's appendix computes it."""
    total = min(size // SECTOR, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def geometry_size(size: int) -> int:
    """The size a VHD of at least `size` bytes gets: the next size its CHS
    geometry describes exactly (as Virtual PC and qemu round), so that readers
    going by geometry and readers going by the footer's size agree.  Above the
    largest geometry the footer's size is used by everyone; it is kept."""
    size = -(-size // SECTOR) * SECTOR
    if size // SECTOR >= MAX_CHS_SECTORS:
        return size
    want = size // SECTOR
    total = want
    while True:
        c, h, s = chs_geometry(total * SECTOR)
        if c * h * s >= want:
            return c * h * s * SECTOR
        # the spec's calculation rounds down; step up by one track of this geometry
        total = (c + 1) * h * s


class VhdImage(BlockMappedImage):
    """A VHD file (fixed or dynamic) opened read-only."""

    format = "vhd"

    def _parse(self) -> None:
        size = self._file_size
        if size < FOOTER_SIZE:
            raise self._fail(f"too small for a VHD ({size} bytes)")
        footer = self._read(size - FOOTER_SIZE, FOOTER_SIZE, "VHD footer")
        if footer[:8] != FOOTER_COOKIE:
            head = self._read(0, FOOTER_SIZE, "VHD footer copy")
            if head[:8] != FOOTER_COOKIE:
                raise self._fail("not a VHD image (no 'conectix' footer at the end or the start)")
            footer = head  # the end was damaged; the copy at 0 serves (as the spec allows)
        self._footer = footer
        f = _FOOTER.unpack_from(footer)
        (_c, _feat, _ver, data_off, _ts, _app, _cv, _os, _orig, cur, _cyl, _h, _s, dtype, csum,
         uid, _saved) = f
        if checksum(footer, CHECKSUM_AT_FOOTER) != csum:
            raise self._fail(f"VHD footer checksum {csum:#x} is wrong")
        if cur % SECTOR:
            raise self._fail(f"VHD size {cur} is not a multiple of 512")
        self.virtual_size = cur
        self.uuid = guid_le(uid)
        if dtype == DISK_FIXED:
            if cur + FOOTER_SIZE > size:
                raise self._fail(f"fixed VHD of {cur} bytes but the file holds only {size - FOOTER_SIZE}")
            self.variant = "fixed"
            self._block_bytes = 1 << 20
            self._fixed = True
            return
        if dtype == DISK_DIFFERENCING:
            raise UnsupportedImageError(f"{self.path}: differencing VHD images are not supported")
        if dtype != DISK_DYNAMIC:
            raise self._fail(f"VHD disk type {dtype} is not fixed (2) or dynamic (3)")
        self._fixed = False
        self.variant = "dynamic"
        dyn = self._read(data_off, DYN_HEADER_SIZE, "VHD dynamic header")
        cookie, _d, table_off, _hv, entries, block, dcsum, _puid, _pts = _DYN.unpack_from(dyn)
        if cookie != DYN_COOKIE:
            raise self._fail(f"no 'cxsparse' dynamic header at offset {data_off}")
        if checksum(dyn, CHECKSUM_AT_DYN) != dcsum:
            raise self._fail(f"VHD dynamic header checksum {dcsum:#x} is wrong")
        if block == 0 or block % SECTOR or block & (block - 1):
            raise self._fail(f"VHD block size {block} is not a power of two multiple of 512")
        if entries * block < cur:
            raise self._fail(f"VHD BAT has {entries} blocks of {block} bytes for a {cur}-byte disk")
        if entries > MAX_SIZE // SECTOR:
            raise self._fail(f"VHD BAT of {entries} entries is impossibly large")
        raw = self._read(table_off, 4 * entries, "VHD block allocation table")
        self._bat = struct.unpack_from(f">{entries}I", raw)
        self._bitmap_bytes = -(-(block // SECTOR // 8) // SECTOR) * SECTOR
        used = [e for e in self._bat if e != BAT_UNUSED]
        if used and max(used) * SECTOR + self._bitmap_bytes >= size:
            i = self._bat.index(max(used))
            raise self._fail(f"BAT entry {i} points past the end of the file")
        self._block_bytes = block

    def extents(self) -> Iterator[Extent]:
        if self._fixed:
            if self.virtual_size:
                yield Extent(0, self.virtual_size, True)
            return
        yield from super().extents()

    def _block_allocated(self, index: int) -> bool:
        return self._fixed or self._bat[index] != BAT_UNUSED

    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        if self._fixed:
            return self._read(index * self._block_bytes + within, length, "VHD data")
        entry = self._bat[index]
        if entry == BAT_UNUSED:
            return None
        # Sectors whose bitmap bit is clear read as zeros in a dynamic disk.
        base = entry * SECTOR
        data = self._read(base + self._bitmap_bytes + within, length, f"VHD block {index}")
        bitmap = self._read(base, self._bitmap_bytes, f"VHD block {index} bitmap")
        first, last = within // SECTOR, (within + length - 1) // SECTOR
        if all(b == 0xFF for b in bitmap[first // 8 : last // 8 + 1]):
            return data
        out = bytearray(data)
        for s in range(first, last + 1):
            if not bitmap[s // 8] & (0x80 >> (s % 8)):
                a = max(s * SECTOR - within, 0)
                b = min((s + 1) * SECTOR - within, length)
                out[a:b] = bytes(b - a)
        return bytes(out)


def _footer(size: int, dtype: int, uuid: str, data_offset: int) -> bytes:
    c, h, s = chs_geometry(size)
    ts = max(int(time.time()) - EPOCH_2000, 0) & 0xFFFFFFFF
    raw = bytearray(FOOTER_SIZE)
    _FOOTER.pack_into(raw, 0, FOOTER_COOKIE, 2, 0x00010000, data_offset, ts, CREATOR_APP,
                      CREATOR_VERSION, CREATOR_OS, size, size, c, h, s, dtype, 0,
                      guid_le_bytes(uuid), 0)
    struct.pack_into(">I", raw, CHECKSUM_AT_FOOTER, checksum(raw, CHECKSUM_AT_FOOTER))
    return bytes(raw)


class VhdWriter(StreamingBlockWriter):
    """Writes a new VHD (fixed or dynamic); data must come in increasing offsets.

    The size is rounded up to a whole CHS geometry (see geometry_size)."""

    _block_bytes = DEFAULT_BLOCK

    def __init__(self, path: str, size: int, *, variant: str = "dynamic", uuid: str | None = None,
                 progress: Progress | None = None) -> None:
        if variant not in ("dynamic", "fixed"):
            raise DiskError(f"VHD variants are dynamic and fixed, not {variant!r}")
        size = geometry_size(size)
        if size > MAX_SIZE:
            raise DiskError(f"{path}: a VHD holds at most 2040 GiB")
        super().__init__(path, size)
        self.uuid = check_uuid(uuid) if uuid else new_uuid()
        self.fixed = variant == "fixed"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._entries = -(-size // DEFAULT_BLOCK)
        if self.fixed:
            preallocate(self._fd, 0, size, progress)
            return
        self._bat = [BAT_UNUSED] * self._entries
        self._bat_off = FOOTER_SIZE + DYN_HEADER_SIZE
        bat_bytes = -(-4 * self._entries // SECTOR) * SECTOR
        self._next = self._bat_off + bat_bytes  # where the next block goes
        self._bitmap = b"\xff" * SECTOR  # DEFAULT_BLOCK / 512 sectors / 8 bits = 512 bytes

    def _emit_block(self, index: int, data: bytes) -> None:
        if self.fixed:
            end = min(len(data), self.virtual_size - index * DEFAULT_BLOCK)
            os.pwrite(self._fd, data[:end], index * DEFAULT_BLOCK)
            return
        if self._bat[index] == BAT_UNUSED:
            self._bat[index] = self._next // SECTOR
            self._next += SECTOR + DEFAULT_BLOCK
        base = self._bat[index] * SECTOR
        os.pwrite(self._fd, self._bitmap + data, base)

    def _finish(self) -> None:
        try:
            if self.fixed:
                os.pwrite(self._fd, _footer(self.virtual_size, DISK_FIXED, self.uuid, NO_OFFSET),
                          self.virtual_size)
            else:
                footer = _footer(self.virtual_size, DISK_DYNAMIC, self.uuid, FOOTER_SIZE)
                dyn = bytearray(DYN_HEADER_SIZE)
                _DYN.pack_into(dyn, 0, DYN_COOKIE, NO_OFFSET, self._bat_off, 0x00010000,
                               self._entries, DEFAULT_BLOCK, 0, bytes(16), 0)
                struct.pack_into(">I", dyn, CHECKSUM_AT_DYN, checksum(dyn, CHECKSUM_AT_DYN))
                bat = struct.pack(f">{self._entries}I", *self._bat)
                bat += b"\xff" * (-len(bat) % SECTOR)
                os.pwrite(self._fd, footer + bytes(dyn) + bat, 0)
                os.pwrite(self._fd, footer, self._next)
                os.ftruncate(self._fd, self._next + FOOTER_SIZE)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)


def _rewrite_footers(path: str, mutate) -> None:  # type: ignore[no-untyped-def]
    """Apply `mutate(bytearray footer)` to the footer (and its copy at 0) and fix the checksums."""
    with VhdImage(path) as img:
        dynamic = img.variant == "dynamic"
        size = img.file_size
    fd, _ = open_for_reading(path)
    try:
        footer = bytearray(read_exact(fd, path, size - FOOTER_SIZE, FOOTER_SIZE, "VHD footer", size))
    finally:
        os.close(fd)
    mutate(footer)
    struct.pack_into(">I", footer, CHECKSUM_AT_FOOTER, 0)
    struct.pack_into(">I", footer, CHECKSUM_AT_FOOTER, checksum(footer, CHECKSUM_AT_FOOTER))
    return footer, dynamic, size


def set_uuid(path: str, uuid: str) -> None:
    """Store `uuid` as the VHD's unique id (footer and its copy)."""
    raw = guid_le_bytes(check_uuid(uuid))

    def put(footer: bytearray) -> None:
        footer[UUID_AT_FOOTER : UUID_AT_FOOTER + 16] = raw

    footer, dynamic, size = _rewrite_footers(path, put)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(footer), size - FOOTER_SIZE)
        if dynamic:
            os.pwrite(fd, bytes(footer), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def resize(path: str, new_size: int) -> None:
    """Grow a fixed VHD (the footer moves to the new end)."""
    with VhdImage(path) as img:
        if img.variant != "fixed":
            raise UnsupportedImageError(f"{path}: growing a dynamic VHD is not supported")
        old = img.virtual_size
    new_size = geometry_size(new_size)
    if new_size < old:
        raise DiskError(f"{path}: shrinking is not supported ({old} -> {new_size})")
    c, h, s = chs_geometry(new_size)

    def grow(footer: bytearray) -> None:
        struct.pack_into(">QHBB", footer, 48, new_size, c, h, s)

    footer, _dyn, _size = _rewrite_footers(path, grow)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, old)
        os.ftruncate(fd, new_size)
        os.pwrite(fd, bytes(footer), new_size)
        os.fsync(fd)
    finally:
        os.close(fd)
