# VirtualBox Disk Image (VDI) version 1.1: the pre-header, the header, the
# block map and 1 MiB data blocks.  "normal" images allocate blocks on first
# write (map entry = index of the block in the data area, ~0 = unallocated,
# ~1 = discarded/zero); "fixed" images have every block allocated in order.
# Layout as in VirtualBox's VDICore.h (VDIHEADER1PLUS), checked against
# images made by qemu-img and VirtualBox.
"""VDI reader (normal and fixed) and writer."""

from __future__ import annotations

import os
import struct

from netstore.disk.api import SECTOR, DiskError, ImageFormatError, Progress, UnsupportedImageError
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

SIGNATURE = 0xBEDA107F
SIGNATURE_OFFSET = 0x40
VERSION_1_1 = 0x00010001
PRE_HEADER_TEXT = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
TYPE_NORMAL, TYPE_FIXED = 1, 2
BLOCK_UNALLOCATED = 0xFFFFFFFF
BLOCK_ZERO = 0xFFFFFFFE  # "discarded": reads as zeros
DEFAULT_BLOCK = 1 << 20
# The header ends with the parent UUID at 0x1c8; LCHS geometry follows in 1.1+.
HEADER_MIN = 0x1C8 - 0x48
HEADER_SIZE_WRITTEN = 0x190  # sizeof(VDIHEADER1PLUS), what VirtualBox writes
OFF_BMAP = 0x200  # where VirtualBox and qemu put the block map
DATA_ALIGN = 4096
UUID_IMAGE_OFFSET = 0x188
# A block map larger than this would be a disk beyond what VirtualBox allows.
MAX_BLOCKS = 1 << 31

# offset 0x40: signature, version, header size, type, flags
_PRE = struct.Struct("<IIIII")
# offset 0x154: offset_bmap, offset_data, cyl, heads, sectors, sector_size,
# unused, disk_size, block_size, block_extra, blocks_in_image, blocks_allocated
_GEOM = struct.Struct("<IIIIIIIQIIII")
GEOM_OFFSET = 0x154


class VdiImage(BlockMappedImage):
    """A VDI file opened read-only."""

    format = "vdi"

    def _parse(self) -> None:
        head = self._read(0, 0x200, "VDI header")
        sig, version, header_size, itype, _flags = _PRE.unpack_from(head, SIGNATURE_OFFSET)
        if sig != SIGNATURE:
            raise self._fail("not a VDI image (no signature 0xbeda107f at offset 0x40)")
        if version >> 16 != 1:
            raise UnsupportedImageError(f"{self.path}: VDI version {version >> 16}.{version & 0xFFFF} is not supported (1.x is)")
        if header_size < HEADER_MIN:
            raise self._fail(f"VDI header size {header_size} is too small (at least {HEADER_MIN})")
        (off_bmap, off_data, _c, _h, _s, sector_size, _u, disk_size, block_size, block_extra,
         blocks, allocated) = _GEOM.unpack_from(head, GEOM_OFFSET)
        if itype not in (TYPE_NORMAL, TYPE_FIXED):
            kind = {3: "undo", 4: "differencing"}.get(itype, f"type {itype}")
            raise UnsupportedImageError(f"{self.path}: VDI {kind} images are not supported")
        if sector_size != SECTOR:
            raise UnsupportedImageError(f"{self.path}: VDI sector size {sector_size} (only 512)")
        if block_extra != 0:
            raise UnsupportedImageError(f"{self.path}: VDI blocks with {block_extra} extra bytes")
        if block_size == 0 or block_size % SECTOR or block_size > (256 << 20):
            raise self._fail(f"VDI block size {block_size} is invalid")
        if blocks > MAX_BLOCKS or blocks * block_size < disk_size:
            raise self._fail(
                f"VDI header says {blocks} blocks of {block_size} bytes for a {disk_size}-byte disk"
            )
        if allocated > blocks:
            raise self._fail(f"VDI header says {allocated} of {blocks} blocks are allocated")
        if off_bmap < 0x48 + HEADER_MIN or off_data < off_bmap + 4 * blocks:
            raise self._fail(
                f"VDI block map ({off_bmap}) and data ({off_data}) offsets overlap the header or each other"
            )
        raw = self._read(off_bmap, 4 * blocks, "VDI block map")
        self._bmap = struct.unpack_from(f"<{blocks}I", raw)
        used = [e for e in self._bmap if e < BLOCK_ZERO]
        if used:
            top = max(used)
            if top >= blocks:
                i = self._bmap.index(top)
                raise self._fail(f"block map entry {i} names block {top} of a {blocks}-block disk")
            if off_data + top * block_size >= self._file_size:
                i = self._bmap.index(top)
                raise self._fail(f"block map entry {i} points past the end of the file")
        self._block_bytes = block_size
        self._off_data = off_data
        self.virtual_size = disk_size
        self.variant = "fixed" if itype == TYPE_FIXED else "dynamic"
        self.uuid = guid_le(head[UUID_IMAGE_OFFSET : UUID_IMAGE_OFFSET + 16])

    def _block_allocated(self, index: int) -> bool:
        return self._bmap[index] < BLOCK_ZERO

    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        entry = self._bmap[index]
        if entry >= BLOCK_ZERO:
            return None
        return self._read(self._off_data + entry * self._block_bytes + within, length, f"VDI block {index}")


def _header(size: int, fixed: bool, uuid: str, blocks: int, allocated: int, off_data: int) -> bytes:
    head = bytearray(0x200)
    head[: len(PRE_HEADER_TEXT)] = PRE_HEADER_TEXT
    _PRE.pack_into(head, SIGNATURE_OFFSET, SIGNATURE, VERSION_1_1, HEADER_SIZE_WRITTEN,
                   TYPE_FIXED if fixed else TYPE_NORMAL, 0)
    _GEOM.pack_into(head, GEOM_OFFSET, OFF_BMAP, off_data, 0, 0, 0, SECTOR, 0, size,
                    DEFAULT_BLOCK, 0, blocks, allocated)
    head[UUID_IMAGE_OFFSET : UUID_IMAGE_OFFSET + 16] = guid_le_bytes(uuid)
    head[0x198:0x1A8] = guid_le_bytes(new_uuid())  # uuid_last_snap, as VirtualBox sets it
    struct.pack_into("<IIII", head, 0x1C8, 0, 0, 0, SECTOR)  # LCHS: let the reader choose
    return bytes(head)


class VdiWriter(StreamingBlockWriter):
    """Writes a new VDI file; data must come in increasing offsets."""

    _block_bytes = DEFAULT_BLOCK

    def __init__(self, path: str, size: int, *, variant: str = "dynamic", uuid: str | None = None,
                 progress: Progress | None = None) -> None:
        if variant not in ("dynamic", "fixed"):
            raise DiskError(f"VDI variants are dynamic and fixed, not {variant!r}")
        size = -(-size // SECTOR) * SECTOR
        super().__init__(path, size)
        self.uuid = check_uuid(uuid) if uuid else new_uuid()
        self.fixed = variant == "fixed"
        self.keep_zero = False
        self._blocks = -(-size // DEFAULT_BLOCK)
        bmap_bytes = 4 * self._blocks
        self._off_data = -(-(OFF_BMAP + bmap_bytes) // DATA_ALIGN) * DATA_ALIGN
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        if self.fixed:
            self._bmap = list(range(self._blocks))
            preallocate(self._fd, self._off_data, self._blocks * DEFAULT_BLOCK, progress)
        else:
            self._bmap = [BLOCK_UNALLOCATED] * self._blocks
        self._allocated = self._blocks if self.fixed else 0

    def _emit_block(self, index: int, data: bytes) -> None:
        if self._bmap[index] == BLOCK_UNALLOCATED:
            self._bmap[index] = self._allocated
            self._allocated += 1
        os.pwrite(self._fd, data, self._off_data + self._bmap[index] * DEFAULT_BLOCK)

    def _finish(self) -> None:
        try:
            head = _header(self.virtual_size, self.fixed, self.uuid, self._blocks, self._allocated,
                           self._off_data)
            os.pwrite(self._fd, head, 0)
            os.pwrite(self._fd, struct.pack(f"<{self._blocks}I", *self._bmap), OFF_BMAP)
            end = self._off_data + self._allocated * DEFAULT_BLOCK
            if os.fstat(self._fd).st_size < end:
                os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)


def set_uuid(path: str, uuid: str) -> None:
    """Write `uuid` as the image UUID of the VDI at `path`."""
    with VdiImage(path):
        pass  # validates
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, guid_le_bytes(check_uuid(uuid)), UUID_IMAGE_OFFSET)
        os.fsync(fd)
    finally:
        os.close(fd)


def resize(path: str, new_size: int) -> None:
    """Grow a dynamic VDI whose block map has room for the new blocks."""
    with VdiImage(path) as img:
        if img.variant != "dynamic":
            raise UnsupportedImageError(f"{path}: growing a fixed VDI is not supported")
        if new_size < img.virtual_size:
            raise DiskError(f"{path}: shrinking is not supported ({img.virtual_size} -> {new_size})")
        bs = img._block_bytes
        old_blocks = len(img._bmap)
        off_data = img._off_data
    new_size = -(-new_size // SECTOR) * SECTOR
    blocks = -(-new_size // bs)
    fd, _ = open_for_reading(path)
    try:
        head = read_exact(fd, path, 0, 0x200, "VDI header", 1 << 62)
    finally:
        os.close(fd)
    off_bmap = struct.unpack_from("<I", head, GEOM_OFFSET)[0]
    if off_bmap + 4 * blocks > off_data:
        raise UnsupportedImageError(
            f"{path}: the block map has no room for {blocks} blocks (the data area would have to move)"
        )
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack(f"<{blocks - old_blocks}I", *([BLOCK_UNALLOCATED] * (blocks - old_blocks))),
                  off_bmap + 4 * old_blocks)
        os.pwrite(fd, struct.pack("<Q", new_size), GEOM_OFFSET + 28)
        os.pwrite(fd, struct.pack("<I", blocks), GEOM_OFFSET + 44)
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_bytes_match(head: bytes) -> bool:
    return len(head) >= SIGNATURE_OFFSET + 4 and struct.unpack_from("<I", head, SIGNATURE_OFFSET)[0] == SIGNATURE


__all__ = ["VdiImage", "VdiWriter", "set_uuid", "resize", "probe_bytes_match", "ImageFormatError"]
