# The on-disk structures of qcow2 (QEMU's docs/interop/qcow2.txt): the
# header and its extensions, feature bits, L1/L2 entry bits, refcount entry
# widths, the limits qemu keeps, and header parsing, checking and building.
# No image state: the engine (image.py, clusters.py) reads these.
"""qcow2 on-disk format: constants, :class:`Qcow2Header`, header parse/check/build."""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

from netstore.disk.api import DiskError, ImageFormatError, UnsupportedImageError

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

Q = struct.Struct(">Q")
REFCOUNT_FMT = {3: "B", 4: "H", 5: "I", 6: "Q"}


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


def bad(path: str, msg: str) -> ImageFormatError:
    return ImageFormatError(f"{path}: {msg}")


def parse_header(path: str, fd: int, file_size: int) -> Qcow2Header:
    """Read and validate the header and extensions of the qcow2 file `fd`.

    Raises:
        ImageFormatError: not qcow2, or a header field is impossible.
    """
    if file_size < HDR_V2.size:
        raise bad(path, f"file too short for a qcow2 header ({file_size} bytes)")
    head = os.pread(fd, 4096, 0)
    if head[:4] != MAGIC:
        raise bad(path, "not a qcow2 image (wrong magic)")
    f = HDR_V2.unpack_from(head, 0)
    h = Qcow2Header(*f[1:])
    if h.version not in (2, 3):
        raise UnsupportedImageError(f"{path}: qcow2 version {h.version} (only 2 and 3)")
    if not MIN_CLUSTER_BITS <= h.cluster_bits <= MAX_CLUSTER_BITS:
        raise bad(path, f"cluster_bits {h.cluster_bits} outside 9..21")
    cs = 1 << h.cluster_bits
    if len(head) < cs:
        head = os.pread(fd, cs, 0)
    if h.version == 3:
        if len(head) < 104:
            raise bad(path, "file too short for a version 3 header")
        (h.incompatible, h.compatible, h.autoclear, h.refcount_order, h.header_length) = (
            HDR_V3.unpack_from(head, 72)
        )
        if h.header_length < 104 or h.header_length % 8 or h.header_length > cs:
            raise bad(path, f"header_length {h.header_length} invalid")
        if h.header_length > 104:
            h.compression_type = head[104]
    if h.refcount_order > 6:
        raise bad(path, f"refcount_order {h.refcount_order} above 6")
    # Extensions (version 3 header_length; version 2 straight after 72 bytes).
    pos = h.header_length
    limit = min(cs, len(head))
    if h.backing_file_offset:
        limit = min(limit, h.backing_file_offset)
    while True:
        if pos + 8 > limit:
            if h.version == 2 and pos + 8 > len(head):
                break
            raise bad(path, f"header extension at byte {pos} runs past the header cluster")
        etype, elen = EXT_HDR.unpack_from(head, pos)
        if etype == EXT_END:
            pos += 8
            break
        data_end = pos + 8 + elen
        if data_end > limit:
            raise bad(path, f"header extension 0x{etype:08x} runs past the header cluster")
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
            raise bad(path, f"backing file name length {h.backing_file_size} invalid")
        end = h.backing_file_offset + h.backing_file_size
        if end > cs or h.backing_file_offset < h.extensions_end:
            raise bad(path, "backing file name lies outside the header cluster")
        if end > file_size:
            raise bad(path, "backing file name lies past the end of the file")
        raw = os.pread(fd, h.backing_file_size, h.backing_file_offset)
        if b"\0" in raw:
            raise bad(path, "backing file name contains NUL bytes")
        try:
            h.backing_file = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(path, "backing file name is not UTF-8") from None
    return h


def feature_list(h: Qcow2Header, kind: int, bits: int) -> str:
    names = []
    for b in range(64):
        if bits >> b & 1:
            names.append(h.feature_names.get((kind, b), f"bit {b}"))
    return ", ".join(names)


def check_features(path: str, h: Qcow2Header, read_only: bool) -> None:
    """Refuse images using what we do not implement, naming the feature."""
    if h.crypt_method:
        kind = {1: "AES", 2: "LUKS"}.get(h.crypt_method, str(h.crypt_method))
        raise UnsupportedImageError(f"{path}: encrypted qcow2 ({kind} encryption) not supported")
    unknown = h.incompatible & ~INCOMPAT_KNOWN
    if unknown:
        raise UnsupportedImageError(
            f"{path}: unknown incompatible qcow2 features: {feature_list(h, 0, unknown)}"
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
    if h.refcount_order not in REFCOUNT_FMT:
        raise UnsupportedImageError(
            f"{path}: writing with {1 << h.refcount_order}-bit refcounts is not supported"
        )


def build_header_cluster(h: Qcow2Header, cluster_size: int, *, feature_table: bool) -> bytes:
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


def resolve_backing(image_path: str, backing: str) -> str:
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


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def l1_entries_for(size: int, cluster_bits: int) -> int:
    l2_entries = (1 << cluster_bits) // 8
    clusters = -(-size // (1 << cluster_bits))
    return -(-clusters // l2_entries)



def cluster_bits_of(cluster_size: int) -> int:
    bits = cluster_size.bit_length() - 1
    if cluster_size <= 0 or 1 << bits != cluster_size:
        raise DiskError(f"cluster size {cluster_size} is not a power of two")
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        raise DiskError(f"cluster size {cluster_size} outside 512 bytes .. 2 MiB")
    return bits


def read_l1_table(path: str, fd: int, h: Qcow2Header, file_size: int) -> list[int]:
    """The L1 table `h` names, read from `fd` and checked against the file.

    Raises:
        ImageFormatError: the table is too small or large for the disk, not
            aligned, past the end of the file, or an entry points outside it.
    """
    cs = 1 << h.cluster_bits
    cmask = cs - 1
    need_l1 = l1_entries_for(h.size, h.cluster_bits)
    if h.l1_size < need_l1:
        raise bad(path, f"L1 table has {h.l1_size} entries, {need_l1} needed for the size")
    if h.l1_size * 8 > MAX_L1_BYTES:
        raise bad(path, f"L1 table of {h.l1_size} entries is too large")
    if h.l1_table_offset & cmask or (h.l1_size and h.l1_table_offset == 0):
        raise bad(path, f"L1 table offset {h.l1_table_offset} not cluster aligned")
    if h.l1_table_offset + h.l1_size * 8 > file_size:
        raise bad(path, f"L1 table at {h.l1_table_offset} lies past the end of the file")
    raw = os.pread(fd, h.l1_size * 8, h.l1_table_offset)
    l1 = list(struct.unpack(f">{h.l1_size}Q", raw))
    for i, e in enumerate(l1):
        off = e & OFFSET_MASK
        if off and (off & cmask or off + cs > file_size):
            raise bad(path, f"L1 entry {i} points to {off}, past the end or unaligned")
    return l1


def compressed_span(e: int, cluster_bits: int) -> tuple[int, int]:
    """(host offset, 512-byte sectors) of a compressed cluster descriptor."""
    shift = 62 - (cluster_bits - 8)
    return e & ((1 << shift) - 1), (e >> shift & ((1 << (cluster_bits - 8)) - 1)) + 1


def inflate(path: str, raw: bytes, cluster_size: int, coff: int) -> bytes:
    """The cluster the deflate stream `raw` (read at host offset `coff`) holds.

    Raises:
        ImageFormatError: the stream does not inflate to a whole cluster.
    """
    try:
        out = zlib.decompressobj(-15).decompress(raw, cluster_size)
    except zlib.error as ex:
        raise bad(path, f"compressed cluster at {coff} does not inflate: {ex}") from None
    if len(out) < cluster_size:
        raise bad(path, f"compressed cluster at {coff} inflates to {len(out)} bytes")
    return out
