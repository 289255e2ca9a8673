# VMware Virtual Disk Format 1.1 (VMDK): a text descriptor naming extents,
# and the hosted sparse extent ("KDMV" header, grain directory -> grain tables
# -> grains).  monolithicSparse embeds the descriptor in the sparse extent;
# streamOptimized (the disk inside an OVA) compresses each grain with deflate
# behind a 12-byte grain header, writes grain tables and the directory after
# the data behind markers, and puts the real header in a footer (the header
# at 0 then says GD_AT_END); monolithicFlat is a descriptor plus a raw file.
"""VMDK reader (monolithicSparse, streamOptimized, flat and multi-extent
descriptors) and streamOptimized writer."""

from __future__ import annotations

import os
import random
import re
import struct
import uuid as uuidlib
import zlib
from collections.abc import Iterator

from netstore.disk.api import SECTOR, DiskError, Extent, ImageFormatError, UnsupportedImageError
from netstore.disk.formats import (
    BlockMappedImage,
    StreamingBlockWriter,
    check_uuid,
    new_uuid,
    open_for_reading,
    read_exact,
)

MAGIC = b"KDMV"
DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
FLAG_NL_TEST = 1 << 0
FLAG_REDUNDANT_GT = 1 << 1
FLAG_ZERO_GRAIN_GTE = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
COMPRESS_DEFLATE = 1
GTE_ZERO = 1  # a grain table entry of 1 is a grain of zeros
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
# magic, version, flags, capacity, grain size, descriptor offset, descriptor
# size, GTEs per GT, redundant GD offset, GD offset, overhead, unclean
# shutdown, the four newline-detection characters, compress algorithm
_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
_MARKER = struct.Struct("<QII")  # value (lba or sectors), size, type (if size == 0)
NL_CHARS = b"\n \r\n"
# A descriptor is a few hundred bytes; a "descriptor" much larger is not one.
MAX_DESCRIPTOR = 1 << 20
# A grain is at most 128 MiB here (qemu's bound is smaller still, 2 MiB x 64).
MAX_GRAIN_SECTORS = 1 << 18
MAX_CAPACITY_SECTORS = 1 << 41  # 1 PiB
GRAIN_SECTORS = 128  # 64 KiB: what VMware, VirtualBox and qemu write
GTES_PER_GT = 512
DESCRIPTOR_SECTORS = 20
STREAM_OVERHEAD_SECTORS = 128

SUPPORTED_CREATE_TYPES = (
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "vmfs",
)
_EXTENT_LINE = re.compile(
    r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$'
)
_KEY_LINE = re.compile(r'^([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?\s*$')


def parse_descriptor(text: str, where: str) -> tuple[dict[str, str], list[tuple[str, int, str, str | None, int]]]:
    """(keys, extents) of a descriptor: extents are (access, sectors, type, file, offset)."""
    keys: dict[str, str] = {}
    extents: list[tuple[str, int, str, str | None, int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT_LINE.match(line)
        if m:
            extents.append((m[1], int(m[2]), m[3].upper(), m[4], int(m[5] or 0)))
            continue
        m = _KEY_LINE.match(line)
        if m:
            keys[m[1]] = m[2]
            continue
        raise ImageFormatError(f"{where}: descriptor line not understood: {line[:80]!r}")
    return keys, extents


def _uuid_or_none(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(uuidlib.UUID(text.strip()))
    except ValueError:
        return None


class SparseExtent(BlockMappedImage):
    """One hosted sparse extent file ("KDMV"), plain or compressed."""

    format = "vmdk"

    def _parse(self) -> None:
        head = self._read(0, SECTOR, "VMDK sparse header")
        h = self._header = self._check_header(head, "header")
        if h["gd"] == GD_AT_END:
            if not h["flags"] & FLAG_MARKERS:
                raise self._fail("grain directory 'at end' in an extent without markers")
            foot = self._read(self._file_size - 2 * SECTOR, SECTOR, "VMDK footer")
            marker = self._read(self._file_size - 3 * SECTOR, SECTOR, "VMDK footer marker")
            _v, size, mtype = _MARKER.unpack_from(marker)
            if size != 0 or mtype != MARKER_FOOTER:
                raise self._fail("streamOptimized footer marker missing before the footer")
            h = self._header = self._check_header(foot, "footer")
            if h["gd"] == GD_AT_END:
                raise self._fail("the footer too says the grain directory is at the end")
        self.virtual_size = h["capacity"] * SECTOR
        grain = h["grain"]
        self._block_bytes = grain * SECTOR
        self._gtes = h["gtes"]
        self._compressed = bool(h["flags"] & FLAG_COMPRESSED)
        self._markers = bool(h["flags"] & FLAG_MARKERS)
        grains = -(-h["capacity"] // grain)
        ngd = -(-grains // self._gtes)
        gd_raw = self._read(h["gd"] * SECTOR, 4 * ngd, "VMDK grain directory")
        self._gd = struct.unpack_from(f"<{ngd}I", gd_raw)
        self._grains = grains
        for i, sector in enumerate(self._gd):
            if sector and (sector * SECTOR + 4 * self._gtes > self._file_size):
                raise self._fail(f"grain directory entry {i} points past the end of the file")
        # grain tables are read when first needed: a directory of mostly empty
        # tables must not cost memory in proportion to the disk
        self._gt_cache: dict[int, tuple[int, ...]] = {}
        self._cache: tuple[int, bytes] | None = None
        self.descriptor = ""
        if h["desc_off"] and h["desc_size"]:
            if h["desc_size"] * SECTOR > MAX_DESCRIPTOR:
                raise self._fail(f"embedded descriptor of {h['desc_size']} sectors is too large")
            raw = self._read(h["desc_off"] * SECTOR, h["desc_size"] * SECTOR, "VMDK embedded descriptor")
            self.descriptor = raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _check_header(self, raw: bytes, what: str) -> dict[str, int]:
        (magic, version, flags, capacity, grain, desc_off, desc_size, gtes, rgd, gd, overhead,
         _unclean, nl, compress) = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise self._fail(f"not a VMDK sparse extent (no 'KDMV' magic in the {what})")
        if version not in (1, 2, 3):
            raise UnsupportedImageError(f"{self.path}: VMDK sparse extent version {version}")
        if flags & FLAG_NL_TEST and nl != NL_CHARS:
            raise self._fail("newline detection characters are damaged (file transferred as text?)")
        if flags & FLAG_COMPRESSED and compress != COMPRESS_DEFLATE:
            raise UnsupportedImageError(f"{self.path}: VMDK compression algorithm {compress}")
        if grain < 1 or grain > MAX_GRAIN_SECTORS or grain & (grain - 1):
            raise self._fail(f"grain size of {grain} sectors is not a power of two up to {MAX_GRAIN_SECTORS}")
        if not 1 <= gtes <= 1 << 16:
            raise self._fail(f"{gtes} entries per grain table is invalid")
        if capacity > MAX_CAPACITY_SECTORS:
            raise self._fail(f"capacity of {capacity} sectors is impossibly large")
        return {"version": version, "flags": flags, "capacity": capacity, "grain": grain,
                "desc_off": desc_off, "desc_size": desc_size, "gtes": gtes, "rgd": rgd, "gd": gd,
                "overhead": overhead}

    def _grain_table(self, gt: int) -> tuple[int, ...] | None:
        if self._gd[gt] == 0:
            return None
        table = self._gt_cache.get(gt)
        if table is None:
            raw = self._read(self._gd[gt] * SECTOR, 4 * self._gtes, f"VMDK grain table {gt}")
            table = struct.unpack_from(f"<{self._gtes}I", raw)
            last = max(table)
            if last > GTE_ZERO and last * SECTOR >= self._file_size:
                i = gt * self._gtes + table.index(last)
                raise self._fail(f"grain table entry for grain {i} points past the end of the file")
            if len(self._gt_cache) >= 256:
                self._gt_cache.clear()
            self._gt_cache[gt] = table
        return table

    def _entry(self, index: int) -> int:
        gt, slot = divmod(index, self._gtes)
        table = self._grain_table(gt)
        return 0 if table is None else table[slot]

    def _block_allocated(self, index: int) -> bool:
        return self._entry(index) > GTE_ZERO

    def extents(self) -> Iterator[Extent]:
        gbytes = self._block_bytes
        start, state = 0, None
        pos = 0  # grain index
        while pos < self._grains:
            gt, slot = divmod(pos, self._gtes)
            table = self._grain_table(gt)
            span = min(self._gtes - slot, self._grains - pos)
            if table is None:
                allocs = [(pos, False)]
            else:
                allocs = [(pos + i, table[slot + i] > GTE_ZERO) for i in range(span)]
            for first, alloc in allocs:
                if state is None:
                    state = alloc
                elif alloc != state:
                    yield Extent(start, first * gbytes - start, state)
                    start, state = first * gbytes, alloc
            pos += span
        if state is not None and self.virtual_size > start:
            yield Extent(start, self.virtual_size - start, state)

    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        entry = self._entry(index)
        if entry <= GTE_ZERO:
            return None
        if not self._compressed:
            return self._read(entry * SECTOR + within, length, f"VMDK grain {index}")
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, self._inflate(index, entry * SECTOR))
        data = self._cache[1]
        if within + length > len(data):
            raise self._fail(f"compressed grain {index} holds only {len(data)} bytes")
        return data[within : within + length]

    def _inflate(self, index: int, offset: int) -> bytes:
        grain_bytes = self._block_bytes
        if self._markers:
            lba, size = struct.unpack_from("<QI", self._read(offset, 12, f"VMDK grain {index} header"))
            if lba != index * (grain_bytes // SECTOR):
                raise self._fail(f"compressed grain {index} says it is at sector {lba}")
            if size == 0 or size > 2 * grain_bytes + 1024:
                raise self._fail(f"compressed grain {index} has an implausible size {size}")
            comp = self._read(offset + 12, size, f"VMDK grain {index}")
        else:
            comp = os.pread(self._fd, 2 * grain_bytes + 1024, offset)
        for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
            try:
                d = zlib.decompressobj(wbits)
                out = d.decompress(comp, grain_bytes)
                if len(out) < grain_bytes:
                    out += bytes(grain_bytes - len(out))  # a short last grain
                return out
            except zlib.error:
                continue
        raise self._fail(f"compressed grain {index} does not inflate")


class _FlatPart:
    def __init__(self, path: str, offset: int, sectors: int, desc: str) -> None:
        self.fd, size = open_for_reading(path)
        self.path, self.offset = path, offset * SECTOR
        self.virtual_size = sectors * SECTOR
        if self.offset + self.virtual_size > size:
            os.close(self.fd)
            raise ImageFormatError(
                f"{desc}: flat extent {path} holds {size} bytes, the descriptor needs "
                f"{self.offset + self.virtual_size}"
            )
        self.file_size = size

    def pread(self, offset: int, length: int) -> bytes:
        return read_exact(self.fd, self.path, self.offset + offset, length, "VMDK flat extent", self.file_size)

    def extents(self) -> Iterator[Extent]:
        yield Extent(0, self.virtual_size, True)

    def close(self) -> None:
        os.close(self.fd)


class _ZeroPart:
    def __init__(self, sectors: int) -> None:
        self.virtual_size = sectors * SECTOR

    def pread(self, offset: int, length: int) -> bytes:
        return bytes(length)

    def extents(self) -> Iterator[Extent]:
        yield Extent(0, self.virtual_size, False)

    def close(self) -> None:
        pass


class VmdkImage:
    """A VMDK (descriptor file or monolithic sparse extent) opened read-only."""

    format = "vmdk"
    block_size = SECTOR
    read_only = True

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._parts: list = []
        fd, size = open_for_reading(self.path)
        try:
            head = os.pread(fd, min(size, MAX_DESCRIPTOR + 1), 0) if size <= MAX_DESCRIPTOR else os.pread(fd, 512, 0)
        finally:
            os.close(fd)
        self.file_size = size
        try:
            if head[:4] == MAGIC:
                part = SparseExtent(self.path)
                self._parts = [part]
                keys: dict[str, str] = {}
                if part.descriptor:
                    keys, _ext = parse_descriptor(part.descriptor, self.path)
                default = "streamOptimized" if part._compressed else "monolithicSparse"
                self.variant = keys.get("createType", default)
                if self.variant not in SUPPORTED_CREATE_TYPES:
                    raise UnsupportedImageError(f"{self.path}: VMDK create type {self.variant!r} is not supported")
                self.uuid = _uuid_or_none(keys.get("ddb.uuid.image"))
            elif head.lstrip().startswith(DESCRIPTOR_MAGIC) or b"createType" in head[:4096]:
                if size > MAX_DESCRIPTOR:
                    raise ImageFormatError(f"{self.path}: a {size}-byte VMDK descriptor is too large")
                try:
                    text = head.split(b"\0", 1)[0].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ImageFormatError(f"{self.path}: VMDK descriptor is not text ({e})") from e
                self._open_descriptor(text)
            else:
                raise ImageFormatError(f"{self.path}: not a VMDK (no 'KDMV' magic, no descriptor)")
        except BaseException:
            self.close()
            raise
        self.virtual_size = sum(p.virtual_size for p in self._parts)
        self.num_blocks = self.virtual_size // SECTOR

    def _open_descriptor(self, text: str) -> None:
        keys, extents = parse_descriptor(text, self.path)
        ctype = keys.get("createType")
        if ctype is None:
            raise ImageFormatError(f"{self.path}: VMDK descriptor has no createType")
        if ctype not in SUPPORTED_CREATE_TYPES:
            raise UnsupportedImageError(f"{self.path}: VMDK create type {ctype!r} is not supported")
        if keys.get("parentCID", "ffffffff").lower() != "ffffffff":
            raise UnsupportedImageError(f"{self.path}: VMDK with a parent (differencing) is not supported")
        if not extents:
            raise ImageFormatError(f"{self.path}: VMDK descriptor lists no extents")
        self.variant = ctype
        self.uuid = _uuid_or_none(keys.get("ddb.uuid.image"))
        base = os.path.dirname(os.path.abspath(self.path))
        for _access, sectors, etype, fname, offset in extents:
            if etype == "ZERO":
                self._parts.append(_ZeroPart(sectors))
                continue
            if not fname:
                raise ImageFormatError(f"{self.path}: {etype} extent without a file name")
            fpath = os.path.join(base, fname)
            if etype in ("FLAT", "VMFS"):
                self._parts.append(_FlatPart(fpath, offset, sectors, self.path))
            elif etype == "SPARSE":
                part = SparseExtent(fpath)
                self._parts.append(part)
                if part.virtual_size != sectors * SECTOR:
                    raise ImageFormatError(
                        f"{self.path}: extent {fname} has {part.virtual_size // SECTOR} sectors, "
                        f"the descriptor says {sectors}"
                    )
            else:
                raise UnsupportedImageError(f"{self.path}: VMDK extent type {etype} is not supported")

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise DiskError(f"{self.path}: read of {length} bytes at {offset} is outside the disk")
        out = bytearray()
        start = 0
        for part in self._parts:
            end = start + part.virtual_size
            if offset < end and offset + length > start:
                a = max(offset, start)
                b = min(offset + length, end)
                out += part.pread(a - start, b - a)
            start = end
        return bytes(out)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        raise DiskError(f"{self.path}: vmdk images are read-only in netstore")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        for p in self._parts:
            p.close()
        self._parts = []

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extents(self) -> Iterator[Extent]:
        start = 0
        run: Extent | None = None
        for part in self._parts:
            for e in part.extents():
                e = Extent(e.offset + start, e.length, e.allocated)
                if run is not None and run.allocated == e.allocated:
                    run = Extent(run.offset, run.length + e.length, run.allocated)
                else:
                    if run is not None:
                        yield run
                    run = e
            start += part.virtual_size
        if run is not None:
            yield run


def _descriptor(name: str, sectors: int, uuid: str, create_type: str = "streamOptimized") -> bytes:
    cyl = min(sectors // (16 * 63), 16383)
    text = (
        "# Disk DescriptorFile\n"
        "version=1\n"
        f"CID={random.getrandbits(32):08x}\n"
        "parentCID=ffffffff\n"
        f'createType="{create_type}"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} SPARSE "{name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.virtualHWVersion = "4"\n'
        f'ddb.geometry.cylinders = "{cyl}"\n'
        'ddb.geometry.heads = "16"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.adapterType = "ide"\n'
        f'ddb.uuid.image = "{uuid}"\n'
        'ddb.uuid.parent = "00000000-0000-0000-0000-000000000000"\n'
        'ddb.uuid.modification = "00000000-0000-0000-0000-000000000000"\n'
        'ddb.uuid.parentmodification = "00000000-0000-0000-0000-000000000000"\n'
    )
    return text.encode()


def _marker(value: int, mtype: int) -> bytes:
    return _MARKER.pack(value, 0, mtype) + bytes(SECTOR - _MARKER.size)


class StreamOptimizedWriter(StreamingBlockWriter):
    """Writes a streamOptimized VMDK (the OVA disk format) front to back:
    header (GD_AT_END), descriptor, compressed grains, each grain table after
    its grains, the grain directory, the footer and the end-of-stream marker.
    """

    _block_bytes = GRAIN_SECTORS * SECTOR

    def __init__(self, path: str, size: int, *, variant: str = "streamOptimized",
                 uuid: str | None = None, progress=None) -> None:  # type: ignore[no-untyped-def]
        if variant not in ("streamOptimized", "dynamic"):
            raise DiskError(f"netstore writes VMDK as streamOptimized only, not {variant!r}")
        size = -(-size // SECTOR) * SECTOR
        super().__init__(path, size)
        self.uuid = check_uuid(uuid) if uuid else new_uuid()
        self._sectors = size // SECTOR
        grains = -(-self._sectors // GRAIN_SECTORS)
        self._ngt = -(-grains // GTES_PER_GT)
        self._gd = [0] * self._ngt
        self._gt_index: int | None = None
        self._gt = [0] * GTES_PER_GT
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._pos = STREAM_OVERHEAD_SECTORS * SECTOR
        desc = _descriptor(os.path.basename(self.path), self._sectors, self.uuid)
        if len(desc) > DESCRIPTOR_SECTORS * SECTOR:
            raise DiskError(f"{path}: file name too long for the descriptor")
        os.pwrite(self._fd, self._header(GD_AT_END) + desc, 0)

    def _header(self, gd: int) -> bytes:
        raw = _HEADER.pack(MAGIC, 3, FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS, self._sectors,
                           GRAIN_SECTORS, 1, DESCRIPTOR_SECTORS, GTES_PER_GT, 0, gd,
                           STREAM_OVERHEAD_SECTORS, 0, NL_CHARS, COMPRESS_DEFLATE)
        return raw + bytes(SECTOR - len(raw))

    def _append(self, data: bytes) -> int:
        """Write `data` padded to whole sectors at the end; its sector."""
        sector = self._pos // SECTOR
        pad = -len(data) % SECTOR
        os.pwrite(self._fd, data + bytes(pad), self._pos)
        self._pos += len(data) + pad
        return sector

    def _close_gt(self) -> None:
        if self._gt_index is None:
            return
        self._append(_marker(GTES_PER_GT * 4 // SECTOR, MARKER_GT))
        self._gd[self._gt_index] = self._append(struct.pack(f"<{GTES_PER_GT}I", *self._gt))
        self._gt_index = None
        self._gt = [0] * GTES_PER_GT

    def _emit_block(self, index: int, data: bytes) -> None:
        gt, slot = divmod(index, GTES_PER_GT)
        if gt != self._gt_index:
            self._close_gt()
            self._gt_index = gt
        comp = zlib.compress(data, 6)
        lba = index * GRAIN_SECTORS
        self._gt[slot] = self._append(struct.pack("<QI", lba, len(comp)) + comp)

    def _finish(self) -> None:
        try:
            self._close_gt()
            self._append(_marker(-(-self._ngt * 4 // SECTOR), MARKER_GD))
            gd_sector = self._append(struct.pack(f"<{self._ngt}I", *self._gd))
            self._append(_marker(1, MARKER_FOOTER))
            self._append(self._header(gd_sector))
            self._append(bytes(SECTOR))  # end-of-stream marker
            os.ftruncate(self._fd, self._pos)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)


def set_uuid(path: str, uuid: str) -> None:
    """Store `uuid` as ddb.uuid.image in the VMDK's descriptor (embedded or its own file)."""
    uuid = check_uuid(uuid)
    with VmdkImage(path):
        pass
    fd, size = open_for_reading(path)
    try:
        head = os.pread(fd, SECTOR, 0)
        if head[:4] == MAGIC:
            h = _HEADER.unpack_from(head)
            off, n = h[5] * SECTOR, h[6] * SECTOR
            if not off or not n:
                raise UnsupportedImageError(f"{path}: the sparse extent has no descriptor to hold a UUID")
            text = os.pread(fd, n, off).split(b"\0", 1)[0].decode("utf-8")
        else:
            off, n = 0, MAX_DESCRIPTOR
            text = os.pread(fd, size, 0).decode("utf-8")
    finally:
        os.close(fd)
    line = f'ddb.uuid.image = "{uuid}"'
    new, count = re.subn(r"(?m)^ddb\.uuid\.image\s*=.*$", line, text)
    if not count:
        new = text.rstrip("\n") + "\n" + line + "\n"
    raw = new.encode()
    if len(raw) > n:
        raise UnsupportedImageError(f"{path}: no room in the embedded descriptor for a UUID")
    fd = os.open(path, os.O_RDWR)
    try:
        if off:
            os.pwrite(fd, raw + bytes(n - len(raw)), off)
        else:
            os.pwrite(fd, raw, 0)
            os.ftruncate(fd, len(raw))
        os.fsync(fd)
    finally:
        os.close(fd)
