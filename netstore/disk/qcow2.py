# qcow2 (version 3, reading version 2 too): create, read and write images and
# their backing chains, as QEMU's docs/interop/qcow2.txt describes the format.
# Pure Python on os.pread/os.pwrite.  Crash safety comes from the order of
# writes (a kill -9 keeps every completed pwrite): a cluster's refcount is on
# disk before anything points to it, data before the L2 entry that maps it,
# a new L2 table before the L1 entry, a new table before the header switch.
# Metadata caches are write-through; the dirty bit is never set.
"""qcow2 images: :func:`create_qcow2`, :class:`Qcow2Image`, :func:`probe_qcow2`."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from netstore.disk.api import (
    SECTOR,
    DiskError,
    Extent,
    ImageFormatError,
    ImageInfo,
    Progress,
    UnsupportedImageError,
)

MAGIC = b"QFI\xfb"
# Header fields up to byte 72 (version 2 and later) and 72..104 (version 3).
HDR_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
HDR_V3 = struct.Struct(">QQQII")
# We write a 112-byte header: the 104 of version 3, compression_type (0 =
# zlib) and padding to a multiple of 8, as qemu does.
HEADER_LENGTH = 112
EXT_HDR = struct.Struct(">II")

EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_NAMES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)
COMPAT_LAZY_REFCOUNTS = 1 << 0

# The feature name table we write (type, bit, name): lets older tools name
# what they refuse.
FEATURE_NAMES = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

# L1/L2 entry bits (qcow2.txt "Cluster mapping").
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63  # refcount is exactly one: write in place
COMPRESSED = 1 << 62
ZERO = 1  # standard cluster descriptor bit 0 (v3): reads as zeros

MIN_CLUSTER_BITS = 9
# qemu cannot open clusters above 2 MiB; neither do we.
MAX_CLUSTER_BITS = 21
# qemu's implementation limits: L1 table 32 MiB, refcount table 8 MiB.  A
# header asking for more is damaged (or hostile); we refuse to allocate it.
MAX_L1_BYTES = 32 << 20
MAX_REFTABLE_BYTES = 8 << 20
MAX_BACKING_NAME = 1023
# A backing chain deeper than this is almost certainly a loop we missed.
MAX_CHAIN_DEPTH = 256

# L2 tables kept in memory (LRU).  64 tables of 64 KiB clusters map 32 GiB.
DEFAULT_L2_CACHE_TABLES = 64
REFBLOCK_CACHE_BLOCKS = 16

_Q = struct.Struct(">Q")
_unpack_q = _Q.unpack_from
# An L2 entry readable in place: COPIED set, not compressed, no zero flag.
_FAST_MASK = COPIED | COMPRESSED | ZERO
_REFCOUNT_FMT = {3: "B", 4: "H", 5: "I", 6: "Q"}


@dataclass
class Qcow2Header:
    """The fields of a qcow2 header and its extensions."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    refcount_order: int = 4
    header_length: int = 72
    compression_type: int = 0
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    feature_names: dict[tuple[int, int], str] = field(default_factory=dict)
    # Extensions other than backing format and end, kept verbatim for rewrites.
    other_extensions: list[tuple[int, bytes]] = field(default_factory=list)
    extensions_end: int = 0  # offset just after the end-of-extensions marker


def _bad(path: str, msg: str) -> ImageFormatError:
    return ImageFormatError(f"{path}: {msg}")


def _parse_header(path: str, fd: int, file_size: int) -> Qcow2Header:
    """Read and validate the header and extensions of the qcow2 file `fd`.

    Raises:
        ImageFormatError: not qcow2, or a header field is impossible.
    """
    if file_size < HDR_V2.size:
        raise _bad(path, f"file too short for a qcow2 header ({file_size} bytes)")
    head = os.pread(fd, 4096, 0)
    if head[:4] != MAGIC:
        raise _bad(path, "not a qcow2 image (wrong magic)")
    f = HDR_V2.unpack_from(head, 0)
    h = Qcow2Header(*f[1:])
    if h.version not in (2, 3):
        raise UnsupportedImageError(f"{path}: qcow2 version {h.version} (only 2 and 3)")
    if not MIN_CLUSTER_BITS <= h.cluster_bits <= MAX_CLUSTER_BITS:
        raise _bad(path, f"cluster_bits {h.cluster_bits} outside 9..21")
    cs = 1 << h.cluster_bits
    if len(head) < cs:
        head = os.pread(fd, cs, 0)
    if h.version == 3:
        if len(head) < 104:
            raise _bad(path, "file too short for a version 3 header")
        (h.incompatible, h.compatible, h.autoclear, h.refcount_order, h.header_length) = (
            HDR_V3.unpack_from(head, 72)
        )
        if h.header_length < 104 or h.header_length % 8 or h.header_length > cs:
            raise _bad(path, f"header_length {h.header_length} invalid")
        if h.header_length > 104:
            h.compression_type = head[104]
    if h.refcount_order > 6:
        raise _bad(path, f"refcount_order {h.refcount_order} above 6")
    # Extensions (version 3 header_length; version 2 straight after 72 bytes).
    pos = h.header_length
    limit = min(cs, len(head))
    if h.backing_file_offset:
        limit = min(limit, h.backing_file_offset)
    while True:
        if pos + 8 > limit:
            if h.version == 2 and pos + 8 > len(head):
                break
            raise _bad(path, f"header extension at byte {pos} runs past the header cluster")
        etype, elen = EXT_HDR.unpack_from(head, pos)
        if etype == EXT_END:
            pos += 8
            break
        data_end = pos + 8 + elen
        if data_end > limit:
            raise _bad(path, f"header extension 0x{etype:08x} runs past the header cluster")
        data = bytes(head[pos + 8 : data_end])
        if etype == EXT_BACKING_FORMAT:
            h.backing_format = data.decode("utf-8", "replace")
        elif etype == EXT_FEATURE_NAMES:
            for i in range(0, len(data) - 47, 48):
                name = data[i + 2 : i + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
                h.feature_names[(data[i], data[i + 1])] = name
            h.other_extensions.append((etype, data))
        elif etype == EXT_DATA_FILE:
            h.data_file = data.decode("utf-8", "replace")
            h.other_extensions.append((etype, data))
        else:
            h.other_extensions.append((etype, data))
        pos = data_end + (-elen % 8)
    h.extensions_end = pos
    if h.backing_file_offset:
        if h.backing_file_size > MAX_BACKING_NAME or h.backing_file_size == 0:
            raise _bad(path, f"backing file name length {h.backing_file_size} invalid")
        end = h.backing_file_offset + h.backing_file_size
        if end > cs or h.backing_file_offset < h.extensions_end:
            raise _bad(path, "backing file name lies outside the header cluster")
        if end > file_size:
            raise _bad(path, "backing file name lies past the end of the file")
        raw = os.pread(fd, h.backing_file_size, h.backing_file_offset)
        if b"\0" in raw:
            raise _bad(path, "backing file name contains NUL bytes")
        try:
            h.backing_file = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(path, "backing file name is not UTF-8") from None
    return h


def _feature_list(h: Qcow2Header, kind: int, bits: int) -> str:
    names = []
    for b in range(64):
        if bits >> b & 1:
            names.append(h.feature_names.get((kind, b), f"bit {b}"))
    return ", ".join(names)


def _check_features(path: str, h: Qcow2Header, read_only: bool) -> None:
    """Refuse images using what we do not implement, naming the feature."""
    if h.crypt_method:
        kind = {1: "AES", 2: "LUKS"}.get(h.crypt_method, str(h.crypt_method))
        raise UnsupportedImageError(f"{path}: encrypted qcow2 ({kind} encryption) not supported")
    unknown = h.incompatible & ~INCOMPAT_KNOWN
    if unknown:
        raise UnsupportedImageError(
            f"{path}: unknown incompatible qcow2 features: {_feature_list(h, 0, unknown)}"
        )
    if h.incompatible & INCOMPAT_DATA_FILE:
        raise UnsupportedImageError(f"{path}: qcow2 external data file not supported")
    if h.incompatible & INCOMPAT_EXTL2:
        raise UnsupportedImageError(f"{path}: qcow2 extended L2 entries not supported")
    if h.incompatible & INCOMPAT_COMPRESSION and h.compression_type != 0:
        kind = {1: "zstd"}.get(h.compression_type, str(h.compression_type))
        raise UnsupportedImageError(f"{path}: qcow2 compression type {kind} not supported")
    if read_only:
        return
    if h.incompatible & INCOMPAT_CORRUPT:
        raise DiskError(
            f"{path}: image is marked corrupt; open it read-only or repair it "
            f"with `qemu-img check -r all {path}`"
        )
    if h.incompatible & INCOMPAT_DIRTY:
        raise DiskError(
            f"{path}: image is marked dirty (lazy refcounts not written back); "
            f"run `qemu-img check -r all {path}` before writing to it"
        )
    if h.nb_snapshots:
        raise UnsupportedImageError(
            f"{path}: writing to a qcow2 with internal snapshots is not supported"
        )
    if h.refcount_order not in _REFCOUNT_FMT:
        raise UnsupportedImageError(
            f"{path}: writing with {1 << h.refcount_order}-bit refcounts is not supported"
        )


def _build_header_cluster(h: Qcow2Header, cluster_size: int, *, feature_table: bool) -> bytes:
    """Header + extensions + backing name, as the bytes of cluster 0's used part.

    Sets h.backing_file_offset/size.  Raises DiskError if it does not fit.
    """
    exts = bytearray()

    def add(etype: int, data: bytes) -> None:
        exts.extend(EXT_HDR.pack(etype, len(data)))
        exts.extend(data)
        exts.extend(bytes(-len(data) % 8))

    if h.backing_file is not None:
        add(EXT_BACKING_FORMAT, (h.backing_format or "raw").encode())
    have_names = False
    for etype, data in h.other_extensions:
        if etype == EXT_FEATURE_NAMES:
            have_names = True
        add(etype, data)
    if feature_table and not have_names:
        table = b"".join(bytes([t, b]) + n.encode().ljust(46, b"\0") for t, b, n in FEATURE_NAMES)
        add(EXT_FEATURE_NAMES, table)
    exts.extend(EXT_HDR.pack(EXT_END, 0))
    header_length = max(h.header_length, HEADER_LENGTH) if h.version == 3 else 72
    name = h.backing_file.encode() if h.backing_file is not None else b""
    if len(name) > MAX_BACKING_NAME:
        raise DiskError(f"backing file name longer than {MAX_BACKING_NAME} bytes: {h.backing_file}")
    total = header_length + len(exts) + len(name)
    if total > cluster_size:
        raise DiskError(
            f"header, extensions and backing file name ({total} bytes) do not fit in "
            f"one {cluster_size}-byte cluster"
        )
    h.backing_file_offset = header_length + len(exts) if name else 0
    h.backing_file_size = len(name)
    out = bytearray(total)
    HDR_V2.pack_into(
        out, 0, MAGIC, h.version, h.backing_file_offset, h.backing_file_size, h.cluster_bits,
        h.size, h.crypt_method, h.l1_size, h.l1_table_offset, h.refcount_table_offset,
        h.refcount_table_clusters, h.nb_snapshots, h.snapshots_offset,
    )  # fmt: skip
    if h.version == 3:
        HDR_V3.pack_into(
            out, 72, h.incompatible, h.compatible, h.autoclear, h.refcount_order, header_length
        )
        if header_length > 104:
            out[104] = h.compression_type
    h.header_length = header_length
    out[header_length : header_length + len(exts)] = exts
    out[header_length + len(exts) :] = name
    return bytes(out)


def _resolve_backing(image_path: str, backing: str) -> str:
    """Where a backing name points: relative names are relative to the image's directory."""
    if os.path.isabs(backing):
        return backing
    return os.path.join(os.path.dirname(os.path.abspath(image_path)), backing)


def probe_format(path: str) -> str:
    """ "qcow2" if `path` starts with the qcow2 magic, else "raw"."""
    try:
        with open(path, "rb") as f:
            return "qcow2" if f.read(4) == MAGIC else "raw"
    except OSError as e:
        raise DiskError(f"{path}: cannot open: {e.strerror or e}") from e


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _l1_entries_for(size: int, cluster_bits: int) -> int:
    l2_entries = (1 << cluster_bits) // 8
    clusters = -(-size // (1 << cluster_bits))
    return -(-clusters // l2_entries)


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    view = memoryview(data)[n:]
    offset += n
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError("short write")
        view = view[n:]
        offset += n


def _cluster_bits_of(cluster_size: int) -> int:
    bits = cluster_size.bit_length() - 1
    if cluster_size <= 0 or 1 << bits != cluster_size:
        raise DiskError(f"cluster size {cluster_size} is not a power of two")
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        raise DiskError(f"cluster size {cluster_size} outside 512 bytes .. 2 MiB")
    return bits


def create_qcow2(
    path: str,
    size: int | None,
    *,
    backing: str | None = None,
    backing_format: str | None = None,
    cluster_size: int = 65536,
    fixed: bool = False,
    progress: Progress | None = None,
) -> None:
    """Create a qcow2 v3 image.

    Args:
        path: the new file; it must not exist.
        size: virtual size in bytes; None takes the backing file's size.
        backing: backing file name, stored as given (relative names resolve
            against the directory of `path`, as qemu does).
        backing_format: "raw" or "qcow2"; probed from the backing file when None.
            Always recorded in the backing-format header extension.
        cluster_size: a power of two from 512 to 2 MiB.
        fixed: preallocate every L2 table and data cluster (zero-filled, like
            qemu-img's preallocation=falloc); not with a backing file.
        progress: (bytes done, bytes total) while a fixed image fills.

    Raises:
        DiskError: the file exists, the backing file is missing or of an
            unknown format, or the parameters are impossible.
    """
    cbits = _cluster_bits_of(cluster_size)
    cs = cluster_size
    if backing is not None:
        target = _resolve_backing(path, backing)
        if not os.path.exists(target):
            raise DiskError(f"{path}: backing file {backing} not found (looked at {target})")
        if backing_format is None:
            backing_format = probe_format(target)
        if backing_format not in ("raw", "qcow2"):
            raise DiskError(f"{path}: backing format {backing_format!r} not raw or qcow2")
        if size is None:
            if backing_format == "qcow2":
                size = probe_qcow2(target).virtual_size
            else:
                size = os.path.getsize(target)
        if fixed:
            raise DiskError(f"{path}: a fixed (preallocated) image cannot have a backing file")
    if size is None or size < 0:
        raise DiskError(f"{path}: a size is needed (got {size})")
    l1_size = _l1_entries_for(size, cbits)
    if l1_size * 8 > MAX_L1_BYTES:
        raise DiskError(f"{path}: {size} bytes need too large an L1 table with {cs}-byte clusters")
    l1_clusters = max(1, _round_up(l1_size * 8, cs) // cs)
    n_data = -(-size // cs) if fixed else 0
    n_l2 = l1_size if fixed else 0
    rbe = cs * 8 // 16  # refcount block entries at refcount_order 4
    # Layout: header | refcount table | refcount blocks | L1 | L2s | data.
    # Find the refcount sizes that cover everything including themselves.
    rt_clusters, rb_count = 1, 1
    while True:
        total = 1 + rt_clusters + rb_count + l1_clusters + n_l2 + n_data
        need_rb = -(-total // rbe)
        need_rt = max(1, _round_up(need_rb * 8, cs) // cs)
        if need_rb == rb_count and need_rt == rt_clusters:
            break
        rb_count, rt_clusters = max(rb_count, need_rb), max(rt_clusters, need_rt)
    if rt_clusters * cs > MAX_REFTABLE_BYTES:
        raise DiskError(f"{path}: {size} bytes need too large a refcount table")
    rt_off = cs
    rb_off = rt_off + rt_clusters * cs
    l1_off = rb_off + rb_count * cs
    l2_off = l1_off + l1_clusters * cs
    data_off = l2_off + n_l2 * cs
    total_clusters = 1 + rt_clusters + rb_count + l1_clusters + n_l2 + n_data

    h = Qcow2Header(
        version=3, backing_file_offset=0, backing_file_size=0, cluster_bits=cbits, size=size,
        crypt_method=0, l1_size=l1_size, l1_table_offset=l1_off, refcount_table_offset=rt_off,
        refcount_table_clusters=rt_clusters, nb_snapshots=0, snapshots_offset=0,
        refcount_order=4, header_length=HEADER_LENGTH, backing_file=backing,
        backing_format=backing_format,
    )  # fmt: skip
    try:
        header = _build_header_cluster(h, cs, feature_table=True)
    except DiskError:
        h.other_extensions = []
        header = _build_header_cluster(h, cs, feature_table=False)

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise DiskError(f"{path}: file already exists; refusing to overwrite it") from None
    except OSError as e:
        raise DiskError(f"{path}: cannot create: {e.strerror or e}") from e
    try:
        _pwrite_all(fd, header, 0)
        # Refcount table and blocks: every cluster of the layout has refcount 1.
        rt = bytearray(rt_clusters * cs)
        for i in range(rb_count):
            _Q.pack_into(rt, i * 8, rb_off + i * cs)
        _pwrite_all(fd, rt, rt_off)
        for i in range(rb_count):
            n = min(rbe, total_clusters - i * rbe)
            _pwrite_all(fd, b"\0\1" * n + bytes((rbe - n) * 2), rb_off + i * cs)
        l2e = cs // 8
        if fixed:
            # L1 -> consecutive L2 tables -> consecutive data clusters.
            l1 = struct.pack(f">{l1_size}Q", *(COPIED | (l2_off + i * cs) for i in range(l1_size)))
            _pwrite_all(fd, l1, l1_off)
            for t in range(n_l2):
                first = t * l2e
                n = min(l2e, n_data - first)
                tbl = struct.pack(
                    f">{n}Q", *(COPIED | (data_off + (first + j) * cs) for j in range(n))
                )
                _pwrite_all(fd, tbl + bytes(cs - len(tbl)), l2_off + t * cs)
        os.ftruncate(fd, l1_off + l1_clusters * cs + n_l2 * cs)
        if fixed and n_data:
            from netstore.disk.raw import _fill

            _fill(fd, data_off, n_data * cs, progress, n_data * cs)
        elif progress is not None:
            progress(size, size)
        os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        os.unlink(path)
        if isinstance(e, OSError):
            raise DiskError(f"{path}: cannot create: {e.strerror or e}") from e
        raise
    os.close(fd)


def probe_qcow2(path: str) -> ImageInfo:
    """What the header of the qcow2 image `path` says.

    Raises:
        ImageFormatError: not a valid qcow2 file.
        DiskError: the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DiskError(f"{path}: cannot open: {e.strerror or e}") from e
    try:
        file_size = os.fstat(fd).st_size
        h = _parse_header(path, fd, file_size)
    finally:
        os.close(fd)
    variant = "fixed" if h.backing_file is None and file_size >= h.size else "dynamic"
    return ImageInfo(
        path=path, format="qcow2", variant=variant, virtual_size=h.size, file_size=file_size,
        uuid=None, backing_file=h.backing_file, backing_format=h.backing_format,
    )  # fmt: skip


def open_backing(image_path: str, name: str, fmt: str | None, seen: list[str]):
    """Open the backing file `name` of `image_path` read-only, through its own chain."""
    target = _resolve_backing(image_path, name)
    if not os.path.exists(target):
        raise DiskError(f"{image_path}: backing file {name} not found (looked at {target})")
    real = os.path.realpath(target)
    if real in seen:
        raise ImageFormatError(f"{image_path}: backing chain loops: {' -> '.join([*seen, real])}")
    if len(seen) >= MAX_CHAIN_DEPTH:
        raise ImageFormatError(f"{image_path}: backing chain deeper than {MAX_CHAIN_DEPTH}")
    if fmt is None:
        fmt = probe_format(target)
    if fmt == "qcow2":
        return Qcow2Image(target, read_only=True, _seen=seen)
    if fmt == "raw":
        from netstore.disk.raw import RawImage

        return RawImage(target, read_only=True)
    raise UnsupportedImageError(
        f"{image_path}: backing file {name} has format {fmt!r}; only raw and qcow2 backing files"
    )


class Qcow2Image:
    """An opened qcow2 image and its backing chain (a DiskImage and a BlockBackend).

    Reads go through the chain; writes go to this layer only, copy-on-write
    by whole clusters.  Not safe for concurrent writers in several threads
    beyond what its internal lock serialises (writes, discards, resizes).
    """

    format = "qcow2"
    uuid = None
    block_size = SECTOR

    def __init__(
        self,
        path: str,
        *,
        read_only: bool = False,
        cache_clusters: int = DEFAULT_L2_CACHE_TABLES,
        _seen: list[str] | None = None,
    ) -> None:
        """Open `path` (and, read-only, its backing files).

        Args:
            path: the qcow2 file.
            read_only: refuse writes; the file is opened O_RDONLY.
            cache_clusters: how many L2 tables to keep in memory.

        Raises:
            ImageFormatError: the file is not valid qcow2 (message names the problem).
            UnsupportedImageError: a feature we do not implement (named).
            DiskError: the file or a backing file cannot be opened, or the
                image is dirty/corrupt and opened read-write.
        """
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise DiskError(f"{path}: cannot open: {e.strerror or e}") from e
        self._fd = fd
        self._closed = False
        self.backing = None
        try:
            self._open(path, read_only, max(1, cache_clusters), list(_seen or []))
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, read_only: bool, cache_tables: int, seen: list[str]) -> None:
        fd = self._fd
        self.path = path
        self.read_only = read_only
        file_size = os.fstat(fd).st_size
        h = _parse_header(path, fd, file_size)
        _check_features(path, h, read_only)
        self.header = h
        self.virtual_size = h.size
        self.num_blocks = h.size // SECTOR
        cbits = h.cluster_bits
        cs = 1 << cbits
        self.cluster_size = cs
        # discard() frees whole clusters only: the SCSI layer zeroes the
        # partial clusters at the ends of an UNMAP range.
        self.discard_granularity = cs
        self._cbits = cbits
        self._cs = cs
        self._cmask = cs - 1
        self._l2bits = cbits - 3
        self._l2mask = (1 << self._l2bits) - 1
        self._eof = file_size
        # Compressed cluster descriptor layout.
        self._csize_shift = 62 - (cbits - 8)
        self._coff_mask = (1 << self._csize_shift) - 1
        self._csize_mask = (1 << (cbits - 8)) - 1

        # L1 table.
        need_l1 = _l1_entries_for(h.size, cbits)
        if h.l1_size < need_l1:
            raise _bad(path, f"L1 table has {h.l1_size} entries, {need_l1} needed for the size")
        if h.l1_size * 8 > MAX_L1_BYTES:
            raise _bad(path, f"L1 table of {h.l1_size} entries is too large")
        if h.l1_table_offset & self._cmask or (h.l1_size and h.l1_table_offset == 0):
            raise _bad(path, f"L1 table offset {h.l1_table_offset} not cluster aligned")
        if h.l1_table_offset + h.l1_size * 8 > file_size:
            raise _bad(path, f"L1 table at {h.l1_table_offset} lies past the end of the file")
        raw = os.pread(fd, h.l1_size * 8, h.l1_table_offset)
        self._l1 = list(struct.unpack(f">{h.l1_size}Q", raw))
        for i, e in enumerate(self._l1):
            off = e & OFFSET_MASK
            if off and (off & self._cmask or off + cs > file_size):
                raise _bad(path, f"L1 entry {i} points to {off}, past the end or unaligned")

        # Refcount table (only needed to write, but validated always).
        rt_off, rt_cl = h.refcount_table_offset, h.refcount_table_clusters
        if rt_cl * cs > MAX_REFTABLE_BYTES or rt_cl == 0:
            raise _bad(path, f"refcount table of {rt_cl} clusters is invalid")
        if rt_off == 0 or rt_off & self._cmask:
            raise _bad(path, f"refcount table offset {rt_off} not cluster aligned")
        if rt_off + rt_cl * cs > file_size:
            raise _bad(path, f"refcount table at {rt_off} lies past the end of the file")
        raw = os.pread(fd, rt_cl * cs, rt_off)
        self._reftable = list(struct.unpack(f">{rt_cl * cs // 8}Q", raw))
        for i, e in enumerate(self._reftable):
            off = e & OFFSET_MASK
            if e and (e & ~OFFSET_MASK or off + cs > file_size):
                raise _bad(path, f"refcount table entry {i} points to {e}, past the end or invalid")
        self._rorder = h.refcount_order
        self._rb_entries = cs * 8 >> h.refcount_order
        fmt = _REFCOUNT_FMT.get(h.refcount_order)
        self._rfmt = fmt
        self._rwidth = (1 << h.refcount_order) // 8

        self._l2_cache: OrderedDict[int, bytearray] = OrderedDict()
        self._l2_cache_max = cache_tables
        self._rb_cache: OrderedDict[int, bytearray] = OrderedDict()
        # The last L2 lookup and the constants the read fast path needs, in
        # one tuple so a reader in another thread sees a consistent set.
        self._set_last(-1, bytearray())
        self._lock = threading.RLock()
        self._cursor = _round_up(file_size, cs)
        self._free: list[int] = []  # cluster offsets with refcount 0, safe to reuse
        self._pending_free: list[int] = []  # freed since the last flush

        # Backing chain.
        self._backing_size = 0
        if h.backing_file is not None:
            seen = [*seen, os.path.realpath(path)]
            self.backing = open_backing(path, h.backing_file, h.backing_format, seen)
            self._backing_size = self.backing.virtual_size
        if not read_only and h.autoclear:
            # We do not keep bitmaps (or other auto-clear data) up to date:
            # clearing the bits is how the spec lets us write anyway.
            h.autoclear = 0
            _pwrite_all(fd, _Q.pack(0), 88)

    # ---- context manager -------------------------------------------------

    def __enter__(self) -> Qcow2Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata access ---------------------------------------------------

    def _l2(self, l1i: int) -> bytearray | None:
        """The L2 table for L1 index `l1i` (cached), or None when unallocated."""
        tbl = self._l2_cache.get(l1i)
        if tbl is not None:
            self._l2_cache.move_to_end(l1i)
            return tbl
        off = self._l1[l1i] & OFFSET_MASK
        if not off:
            return None
        if off & self._cmask or off + self._cs > max(self._eof, self._cursor):
            raise _bad(self.path, f"L1 entry {l1i} points to {off}, past the end or unaligned")
        data = os.pread(self._fd, self._cs, off)
        if len(data) != self._cs:
            raise _bad(self.path, f"L2 table at {off} (L1 entry {l1i}) is cut short by EOF")
        tbl = bytearray(data)
        self._l2_cache[l1i] = tbl
        if len(self._l2_cache) > self._l2_cache_max:
            old, _ = self._l2_cache.popitem(last=False)
            if old == self._last[0]:
                self._set_last(-1, bytearray())
        return tbl

    def _set_last(self, l1i: int, tbl: bytearray) -> None:
        self._last = (
            l1i, tbl, self._cbits, self._l2bits, self._l2mask, self._cmask, self.virtual_size,
        )  # fmt: skip

    def _entry(self, vc: int) -> int:
        """The L2 entry of virtual cluster `vc` (0 when its L2 table is absent)."""
        l1i = vc >> self._l2bits
        last = self._last
        if l1i == last[0]:
            tbl = last[1]
        else:
            tbl = self._l2(l1i)
            if tbl is None:
                return 0
            self._set_last(l1i, tbl)
        return _unpack_q(tbl, (vc & self._l2mask) << 3)[0]

    def _refblock(self, rti: int, create: bool) -> tuple[int, bytearray] | None:
        """(offset, contents) of refcount block `rti`; allocated when `create`."""
        if rti < len(self._reftable) and self._reftable[rti]:
            off = self._reftable[rti] & OFFSET_MASK
            blk = self._rb_cache.get(off)
            if blk is None:
                data = os.pread(self._fd, self._cs, off)
                if len(data) != self._cs:
                    raise _bad(self.path, f"refcount block at {off} is cut short by EOF")
                blk = bytearray(data)
                self._rb_cache[off] = blk
                if len(self._rb_cache) > REFBLOCK_CACHE_BLOCKS:
                    self._rb_cache.popitem(last=False)
            else:
                self._rb_cache.move_to_end(off)
            return off, blk
        if not create:
            return None
        return self._new_refblock(rti)

    def _refcount(self, ci: int) -> int:
        """Refcount of host cluster index `ci`."""
        got = self._refblock(ci // self._rb_entries, False)
        if got is None:
            return 0
        _, blk = got
        i = ci % self._rb_entries
        if self._rfmt is None:  # sub-byte refcounts: read only
            bits = 1 << self._rorder
            byte = blk[i * bits // 8]
            return byte >> (i * bits % 8) & ((1 << bits) - 1)
        return struct.unpack_from(">" + self._rfmt, blk, i * self._rwidth)[0]

    def _set_refcounts(self, first: int, count: int, value: int) -> None:
        """Set the refcount of host clusters [first, first+count) to `value`, on disk now."""
        rbe = self._rb_entries
        w = self._rwidth
        i, end = first, first + count
        while i < end:
            rti, bi = divmod(i, rbe)
            n = min(end - i, rbe - bi)
            off, blk = self._refblock(rti, True)  # type: ignore[misc]
            blk[bi * w : (bi + n) * w] = struct.pack(f">{n}{self._rfmt}", *([value] * n))
            _pwrite_all(self._fd, blk[bi * w : (bi + n) * w], off + bi * w)
            i += n

    def _new_refblock(self, rti: int) -> tuple[int, bytearray]:
        """Allocate refcount block `rti`: its own refcount first, then the block, then the table entry."""
        if rti >= len(self._reftable):
            self._grow_reftable(rti)
            got = self._refblock(rti, False)
            if got is not None:
                return got
        cs, rbe = self._cs, self._rb_entries
        off = self._cursor
        self._cursor += cs
        ci = off // cs
        blk = bytearray(cs)
        if ci // rbe == rti:  # self-describing
            blk[(ci % rbe) * self._rwidth : (ci % rbe + 1) * self._rwidth] = struct.pack(
                ">" + self._rfmt, 1
            )
        else:
            self._set_refcounts(ci, 1, 1)
        _pwrite_all(self._fd, blk, off)
        _pwrite_all(self._fd, _Q.pack(off), self.header.refcount_table_offset + rti * 8)
        self._reftable[rti] = off
        self._eof = max(self._eof, off + cs)
        self._rb_cache[off] = blk
        if len(self._rb_cache) > REFBLOCK_CACHE_BLOCKS:
            self._rb_cache.popitem(last=False)
        return off, blk

    def _grow_reftable(self, need_rti: int) -> None:
        """Move the refcount table to a larger one at the end of the file.

        The new table, and refcount blocks for every range it and the needed
        one cover that has none yet, go in one region; their refcounts are set
        before the header switches to the new table; the old table is freed
        after.
        """
        cs, rbe = self._cs, self._rb_entries
        old = self._reftable
        old_n = len(old)
        s = self._cursor // cs
        t = max(_round_up(old_n * 8, cs) // cs * 2, _round_up((need_rti + 1) * 8, cs) // cs)
        b = 1
        while True:
            region_end = s + t + b
            ranges = {need_rti} | set(range(s // rbe, (region_end - 1) // rbe + 1))
            new_ranges = sorted(r for r in ranges if r >= old_n or not old[r])
            top = max(ranges)
            need_t = _round_up((top + 1) * 8, cs) // cs
            if len(new_ranges) == b and need_t <= t:
                break
            b = len(new_ranges)
            t = max(t, need_t)
        if t * cs > MAX_REFTABLE_BYTES:
            raise DiskError(f"{self.path}: the refcount table would exceed qemu's limit")
        tbl_off = s * cs
        blk_offs = {r: (s + t + k) * cs for k, r in enumerate(new_ranges)}
        region = range(s, s + t + b)
        # Refcounts of region clusters in ranges with an existing block.
        for ci in region:
            r = ci // rbe
            if r not in blk_offs:
                self._set_refcounts(ci, 1, 1)
        self._cursor = (s + t + b) * cs
        w = self._rwidth
        one = struct.pack(">" + self._rfmt, 1)
        for r, off in blk_offs.items():
            blk = bytearray(cs)
            for ci in region:
                if ci // rbe == r:
                    i = ci % rbe
                    blk[i * w : (i + 1) * w] = one
            _pwrite_all(self._fd, blk, off)
            self._rb_cache[off] = blk
        new = old + [0] * (t * cs // 8 - old_n)
        for r, off in blk_offs.items():
            new[r] = off
        _pwrite_all(self._fd, struct.pack(f">{len(new)}Q", *new), tbl_off)
        self._eof = max(self._eof, self._cursor)
        os.fsync(self._fd)  # the table is durable before the header names it
        _pwrite_all(self._fd, struct.pack(">QI", tbl_off, t), 48)
        os.fsync(self._fd)
        old_off = self.header.refcount_table_offset
        old_cl = self.header.refcount_table_clusters
        self.header.refcount_table_offset = tbl_off
        self.header.refcount_table_clusters = t
        self._reftable = new
        while len(self._rb_cache) > REFBLOCK_CACHE_BLOCKS:
            self._rb_cache.popitem(last=False)
        self._release(old_off, old_cl)

    def _release(self, off: int, count: int = 1) -> None:
        """Drop one reference to `count` host clusters at `off` (after nothing points there)."""
        ci = off >> self._cbits
        for c in range(ci, ci + count):
            rc = self._refcount(c)
            if rc:
                self._set_refcounts(c, 1, rc - 1)
                if rc == 1:
                    self._pending_free.append(c << self._cbits)

    def _alloc(self, count: int) -> int:
        """`count` contiguous new host clusters, refcount 1 on disk; returns the offset."""
        if count == 1 and self._free:
            off = self._free.pop()
            self._set_refcounts(off >> self._cbits, 1, 1)
            return off
        off = self._cursor
        self._cursor += count * self._cs
        self._set_refcounts(off >> self._cbits, count, 1)
        self._eof = max(self._eof, off + count * self._cs)
        return off

    def _l2_for_write(self, l1i: int) -> tuple[int, bytearray]:
        """(file offset, contents) of L2 table `l1i`, allocating a zeroed one if absent."""
        tbl = self._l2(l1i)
        if tbl is not None:
            return self._l1[l1i] & OFFSET_MASK, tbl
        off = self._alloc(1)
        tbl = bytearray(self._cs)
        _pwrite_all(self._fd, tbl, off)
        entry = off | COPIED
        _pwrite_all(self._fd, _Q.pack(entry), self.header.l1_table_offset + l1i * 8)
        self._l1[l1i] = entry
        self._l2_cache[l1i] = tbl
        if len(self._l2_cache) > self._l2_cache_max:
            old, _ = self._l2_cache.popitem(last=False)
            if old == self._last[0]:
                self._set_last(-1, bytearray())
        return off, tbl

    # ---- reading -----------------------------------------------------------

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the virtual disk, through the backing chain.

        Raises:
            DiskError: the range is outside the disk.
            ImageFormatError: metadata points outside the file.
        """
        last_l1i, tbl, cbits, l2bits, l2mask, cmask, vsize = self._last
        vc = offset >> cbits
        if (offset & cmask) + length <= cmask + 1 and 0 <= offset and offset + length <= vsize:
            # Fast path: inside one cluster.
            if vc >> l2bits == last_l1i:
                e = _unpack_q(tbl, (vc & l2mask) << 3)[0]
            else:
                with self._lock:
                    e = self._entry(vc)
            if e & _FAST_MASK == COPIED:  # allocated here, refcount 1, plain
                data = os.pread(self._fd, length, (e & OFFSET_MASK) + (offset & cmask))
                if len(data) == length:
                    return data
            elif not e:  # unallocated: the backing file's bytes, or zeros
                backing = self.backing
                if backing is None:
                    return bytes(length)
                if offset + length <= self._backing_size:
                    return backing.pread(offset, length)
        return self._pread_slow(offset, length)

    def _pread_slow(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise DiskError(
                f"{self.path}: read of {length} bytes at {offset} is outside the disk "
                f"({self.virtual_size} bytes)"
            )
        if length == 0:
            return b""
        with self._lock:
            runs = list(self._runs(offset, length))
        if len(runs) == 1:
            voff, n, kind, arg = runs[0]
            if kind == "data":
                data = os.pread(self._fd, n, arg)
                if len(data) == n:
                    return data
            elif kind == "zero":
                return bytes(n)
            elif kind == "backing" and offset + length <= self._backing_size:
                return self.backing.pread(offset, length)  # type: ignore[union-attr]
        # Each part is read once into a bytes object, then joined: two copies
        # in all (kernel -> part -> result), no intermediate buffer.
        parts: list[bytes] = []
        for voff, n, kind, arg in runs:
            if kind == "data":
                data = os.pread(self._fd, n, arg)
                if len(data) != n:
                    raise _bad(self.path, f"data cluster at {arg} lies past the end of the file")
                parts.append(data)
            elif kind == "backing":
                parts.append(self._backing_bytes(voff, n))
            elif kind == "compressed":
                with self._lock:
                    cl = self._decompress(arg)
                inoff = voff & self._cmask
                parts.append(cl[inoff : inoff + n])
            else:
                parts.append(bytes(n))
        return b"".join(parts)

    def _backing_bytes(self, voff: int, n: int) -> bytes:
        """The backing chain's `n` bytes at `voff` (zeros past its end, or without one)."""
        have = min(n, self._backing_size - voff) if self.backing is not None else 0
        if have <= 0:
            return bytes(n)
        data = self.backing.pread(voff, have)  # type: ignore[union-attr]
        return data if have == n else data + bytes(n - have)

    def _read_backing(self, dst: memoryview, voff: int) -> None:
        """Fill `dst` with the backing chain's bytes at `voff` (zeros past its end)."""
        if self.backing is None:
            return
        n = min(len(dst), self._backing_size - voff)
        if n > 0:
            dst[:n] = self.backing.pread(voff, n)

    def _decompress(self, e: int) -> bytes:
        """The cluster a compressed L2 entry describes."""
        coff = e & self._coff_mask
        nsect = (e >> self._csize_shift & self._csize_mask) + 1
        nbytes = nsect * SECTOR - (coff & (SECTOR - 1))
        raw = os.pread(self._fd, nbytes, coff)
        try:
            d = zlib.decompressobj(-15)
            out = d.decompress(raw, self._cs)
        except zlib.error as ex:
            raise _bad(self.path, f"compressed cluster at {coff} does not inflate: {ex}") from None
        if len(out) < self._cs:
            raise _bad(self.path, f"compressed cluster at {coff} inflates to {len(out)} bytes")
        return out

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, str, int]]:
        """(virtual offset, length, kind, arg) runs covering the range, merged.

        kind: "data" (arg = host offset), "zero", "backing", "compressed" (arg = L2 entry).
        """
        cs, cbits, cmask = self._cs, self._cbits, self._cmask
        pos, end = offset, offset + length
        cur = None  # [voff, n, kind, arg]
        while pos < end:
            vc = pos >> cbits
            inoff = pos & cmask
            n = min(cs - inoff, end - pos)
            e = self._entry(vc)
            if e & COMPRESSED:
                kind, arg = "compressed", e
            elif e & ZERO:
                kind, arg = "zero", 0
            elif e & OFFSET_MASK:
                kind, arg = "data", (e & OFFSET_MASK) + inoff
            else:
                kind, arg = ("backing" if self.backing is not None else "zero"), 0
            if (
                cur is not None
                and cur[2] == kind
                and kind != "compressed"
                and (kind != "data" or cur[3] + cur[1] == arg)
            ):
                cur[1] += n
            else:
                if cur is not None:
                    yield tuple(cur)  # type: ignore[misc]
                cur = [pos, n, kind, arg]
            pos += n
        if cur is not None:
            yield tuple(cur)  # type: ignore[misc]

    # ---- writing -----------------------------------------------------------

    def _check_write(self, offset: int, length: int) -> None:
        if self.read_only:
            raise DiskError(f"{self.path}: image is opened read-only")
        if self._closed:
            raise DiskError(f"{self.path}: image is closed")
        if offset < 0 or offset + length > self.virtual_size:
            raise DiskError(
                f"{self.path}: write of {length} bytes at {offset} is outside the disk "
                f"({self.virtual_size} bytes)"
            )

    def _cluster_content(self, vc: int, e: int) -> bytearray:
        """What virtual cluster `vc` (L2 entry `e`) reads as now: the base of a copy-on-write."""
        cs = self._cs
        if e & COMPRESSED:
            return bytearray(self._decompress(e))
        if e & ZERO:
            return bytearray(cs)
        if e & OFFSET_MASK:
            data = os.pread(self._fd, cs, e & OFFSET_MASK)
            return bytearray(data.ljust(cs, b"\0"))
        buf = bytearray(cs)
        voff = vc << self._cbits
        if self.backing is not None:
            n = min(cs, self.virtual_size - voff)
            self._read_backing(memoryview(buf)[:n], voff)
        return buf

    def _release_entry(self, e: int) -> None:
        """Drop the host clusters an old L2 entry held (after the entry was replaced)."""
        if e & COMPRESSED:
            coff = e & self._coff_mask
            nsect = (e >> self._csize_shift & self._csize_mask) + 1
            start = coff & ~(SECTOR - 1)
            last = start + nsect * SECTOR - 1
            first_c = start >> self._cbits
            self._release(first_c << self._cbits, (last >> self._cbits) - first_c + 1)
        elif e & OFFSET_MASK:
            self._release(e & OFFSET_MASK)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `offset` into this layer (copy-on-write by whole clusters).

        Raises:
            DiskError: read-only image, or the range is outside the disk.
        """
        length = len(data)
        self._check_write(offset, length)
        if not length:
            return
        src = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
        cs, cbits, cmask, l2mask = self._cs, self._cbits, self._cmask, self._l2mask
        fd = self._fd
        with self._lock:
            pos, end = offset, offset + length
            while pos < end:
                vc = pos >> cbits
                l1i = vc >> self._l2bits
                l2_off, tbl = self._l2_for_write(l1i)
                l2i = vc & l2mask
                e = _unpack_q(tbl, l2i << 3)[0]
                if e & COPIED and e & OFFSET_MASK and not e & (COMPRESSED | ZERO):
                    # In place; extend over following clusters contiguous on the host.
                    host = (e & OFFSET_MASK) + (pos & cmask)
                    n = min(cs - (pos & cmask), end - pos)
                    j = l2i + 1
                    nxt = (e & OFFSET_MASK) + cs
                    while pos + n < end and j <= l2mask:
                        f = _unpack_q(tbl, j << 3)[0]
                        if not (
                            f & COPIED and (f & OFFSET_MASK) == nxt and not f & (COMPRESSED | ZERO)
                        ):
                            break
                        n += min(cs, end - pos - n)
                        nxt += cs
                        j += 1
                    _pwrite_all(fd, src[pos - offset : pos - offset + n], host)
                    pos += n
                    continue
                # Allocate: this cluster and the following ones of this L2 table
                # that are not writable in place either.
                olds = [e]
                j = l2i + 1
                last_end = (vc + 1) << cbits
                while last_end < end and j <= l2mask:
                    f = _unpack_q(tbl, j << 3)[0]
                    if f & COPIED and f & OFFSET_MASK and not f & (COMPRESSED | ZERO):
                        break
                    olds.append(f)
                    last_end += cs
                    j += 1
                k = len(olds)
                first_v = vc << cbits
                head = pos - first_v
                run_end = min(end, first_v + k * cs)
                tail = first_v + k * cs - run_end
                host = self._alloc(k)
                if head == 0 and tail == 0:
                    _pwrite_all(fd, src[pos - offset : run_end - offset], host)
                else:
                    buf = bytearray(k * cs)
                    if head:
                        buf[:cs] = self._cluster_content(vc, olds[0])
                    if tail and (k > 1 or not head):
                        buf[(k - 1) * cs :] = self._cluster_content(vc + k - 1, olds[-1])
                    buf[head : head + run_end - pos] = src[pos - offset : run_end - offset]
                    _pwrite_all(fd, buf, host)
                new = struct.pack(f">{k}Q", *(COPIED | (host + i * cs) for i in range(k)))
                tbl[l2i * 8 : (l2i + k) * 8] = new
                _pwrite_all(fd, new, l2_off + l2i * 8)
                for old in olds:
                    if old & (OFFSET_MASK | COMPRESSED):
                        self._release_entry(old)
                pos = run_end

    def discard(self, offset: int, length: int) -> None:
        """Deallocate the whole clusters inside [offset, offset+length); they read as zeros.

        With a backing file the clusters get the "reads as zeros" flag, so the
        parent's data never shows through; without one they become
        unallocated and their host clusters are freed.  Partial clusters at
        the ends are left as they are (UNMAP allows that).
        """
        self._check_write(offset, length)
        cs = self._cs
        first = -(-offset // cs)
        end = offset + length
        last = end // cs if end < self.virtual_size else -(-end // cs)
        if first >= last:
            return
        with_backing = self.backing is not None
        if with_backing and self.header.version < 3:
            return  # v2 has no zero flag: cannot hide the parent's data
        new = ZERO if with_backing else 0
        with self._lock:
            vc = first
            while vc < last:
                l1i = vc >> self._l2bits
                l2i = vc & self._l2mask
                k = min(last - vc, self._l2mask + 1 - l2i)
                if self._l2(l1i) is None and not with_backing:
                    vc += k
                    continue
                l2_off, tbl = self._l2_for_write(l1i)
                olds = struct.unpack_from(f">{k}Q", tbl, l2i * 8)
                if any(o != new for o in olds):
                    packed = struct.pack(f">{k}Q", *([new] * k))
                    tbl[l2i * 8 : (l2i + k) * 8] = packed
                    _pwrite_all(self._fd, packed, l2_off + l2i * 8)
                    for o in olds:
                        if o & (OFFSET_MASK | COMPRESSED):
                            self._release_entry(o)
                vc += k

    def flush(self) -> None:
        """fsync: everything written is durable (also against power loss) on return."""
        if self._closed:
            return
        with self._lock:
            os.fsync(self._fd)
            # Clusters freed before this sync can be reused: nothing durable points there.
            self._free.extend(self._pending_free)
            self._pending_free.clear()

    def resize(self, new_size: int) -> None:
        """Grow the virtual disk to `new_size` bytes (data kept).

        Raises:
            DiskError: shrinking, or a read-only image.
        """
        if self.read_only:
            raise DiskError(f"{self.path}: image is opened read-only")
        if new_size < self.virtual_size:
            raise DiskError(
                f"{self.path}: shrinking from {self.virtual_size} to {new_size} bytes "
                "would lose data; refused"
            )
        with self._lock:
            h = self.header
            need = _l1_entries_for(new_size, self._cbits)
            if need * 8 > MAX_L1_BYTES:
                raise DiskError(f"{self.path}: {new_size} bytes need too large an L1 table")
            old_off, old_n = h.l1_table_offset, h.l1_size
            if need > old_n:
                cs = self._cs
                ncl = _round_up(need * 8, cs) // cs
                off = self._alloc(ncl)
                l1 = self._l1 + [0] * (need - old_n)
                buf = struct.pack(f">{need}Q", *l1)
                _pwrite_all(self._fd, buf + bytes(ncl * cs - len(buf)), off)
                os.fsync(self._fd)
                _pwrite_all(self._fd, struct.pack(">QIIQ", new_size, 0, need, off), 24)
                os.fsync(self._fd)
                self._l1 = l1
                h.l1_table_offset, h.l1_size = off, need
                self._release(old_off, max(1, _round_up(old_n * 8, cs) // cs))
            else:
                _pwrite_all(self._fd, _Q.pack(new_size), 24)
                os.fsync(self._fd)
            h.size = new_size
            self.virtual_size = new_size
            self._set_last(-1, bytearray())
            self.num_blocks = new_size // SECTOR

    def set_backing(self, backing: str | None, backing_format: str | None = None) -> None:
        """Point this layer at another backing file (a rebase; data not copied).

        The header is rewritten in one write, last.  The caller guarantees the
        new backing reads the same where this layer is unallocated.
        """
        if self.read_only:
            raise DiskError(f"{self.path}: image is opened read-only")
        with self._lock:
            h = self.header
            new_backing = None
            if backing is not None:
                if backing_format is None:
                    backing_format = probe_format(_resolve_backing(self.path, backing))
                new_backing = open_backing(
                    self.path, backing, backing_format, [os.path.realpath(self.path)]
                )
            old_used = h.extensions_end + (h.backing_file_size or 0)
            h.backing_file, h.backing_format = backing, backing_format
            hdr = _build_header_cluster(h, self._cs, feature_table=False)
            h.extensions_end = len(hdr) - h.backing_file_size
            os.fsync(self._fd)  # copied data durable before the header changes
            _pwrite_all(self._fd, hdr + bytes(max(0, old_used - len(hdr))), 0)
            os.fsync(self._fd)
            if self.backing is not None:
                self.backing.close()
            self.backing = new_backing
            self._backing_size = new_backing.virtual_size if new_backing else 0

    def close(self) -> None:
        """Close this file and the backing chain (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.backing is not None:
            self.backing.close()
        os.close(self._fd)

    # ---- allocation map ----------------------------------------------------

    def layer_runs(self) -> Iterator[tuple[int, int, str]]:
        """Runs this layer alone defines: (offset, length, "data" | "zero"), in order.

        Ranges not listed come from the backing file (or read as zeros).
        """
        cs = self._cs
        size = self.virtual_size
        l2e = self._l2mask + 1
        cur: list | None = None
        for l1i in range(len(self._l1)):
            base_vc = l1i * l2e
            if base_vc * cs >= size:
                break
            with self._lock:
                tbl = self._l2(l1i)
                tbl = bytes(tbl) if tbl is not None else None
            if tbl is None:
                continue
            for j, (e,) in enumerate(struct.iter_unpack(">Q", tbl)):
                if not e:
                    continue
                voff = (base_vc + j) * cs
                if voff >= size:
                    break
                kind = "zero" if (e & ZERO and not e & COMPRESSED) else "data"
                n = min(cs, size - voff)
                if cur is not None and cur[2] == kind and cur[0] + cur[1] == voff:
                    cur[1] += n
                else:
                    if cur is not None:
                        yield (cur[0], cur[1], cur[2])
                    cur = [voff, n, kind]
        if cur is not None:
            yield (cur[0], cur[1], cur[2])

    def extents(self) -> Iterator[Extent]:
        """Allocated (data here or in the chain) and unallocated runs, covering the disk."""
        size = self.virtual_size
        backing: list[Extent] = []
        if self.backing is not None:
            backing = [e for e in self.backing.extents() if e.allocated]

        def below(start: int, end: int) -> Iterator[tuple[int, int, bool]]:
            # What the chain says about [start, end) where this layer has nothing.
            pos = start
            for be in backing:
                b0, b1 = be.offset, be.offset + be.length
                if b1 <= pos:
                    continue
                if b0 >= end:
                    break
                if b0 > pos:
                    yield pos, b0 - pos, False
                    pos = b0
                e1 = min(b1, end)
                yield pos, e1 - pos, True
                pos = e1
            if pos < end:
                yield pos, end - pos, False

        def raw_runs() -> Iterator[tuple[int, int, bool]]:
            pos = 0
            for off, n, kind in self.layer_runs():
                if off > pos:
                    yield from below(pos, off)
                yield off, n, kind == "data"
                pos = off + n
            if pos < size:
                yield from below(pos, size)

        cur: list | None = None
        for off, n, alloc in raw_runs():
            if cur is not None and cur[2] == alloc:
                cur[1] += n
            else:
                if cur is not None:
                    yield Extent(cur[0], cur[1], cur[2])
                cur = [off, n, alloc]
        if cur is not None:
            yield Extent(cur[0], cur[1], cur[2])
