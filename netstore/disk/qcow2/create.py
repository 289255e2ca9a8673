# Creating a qcow2 file (header, refcount table and blocks, L1 table, and
# for a fixed image every data cluster, in crash-safe order) and probing one
# from its header alone.
"""qcow2 files: :func:`create_qcow2`, :func:`probe_qcow2`."""

from __future__ import annotations

import os
import struct

from netstore.disk.api import DiskError, ImageInfo, Progress
from netstore.disk.fdio import create_new, fill, pwrite_all
from netstore.disk.qcow2.format import (
    COPIED,
    HEADER_LENGTH,
    MAX_L1_BYTES,
    MAX_REFTABLE_BYTES,
    Q,
    Qcow2Header,
    build_header_cluster,
    cluster_bits_of,
    l1_entries_for,
    parse_header,
    probe_format,
    resolve_backing,
    round_up,
)


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
    cbits = cluster_bits_of(cluster_size)
    cs = cluster_size
    if backing is not None:
        target = resolve_backing(path, backing)
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
    l1_size = l1_entries_for(size, cbits)
    if l1_size * 8 > MAX_L1_BYTES:
        raise DiskError(f"{path}: {size} bytes need too large an L1 table with {cs}-byte clusters")
    l1_clusters = max(1, round_up(l1_size * 8, cs) // cs)
    n_data = -(-size // cs) if fixed else 0
    n_l2 = l1_size if fixed else 0
    rbe = cs * 8 // 16  # refcount block entries at refcount_order 4
    # Layout: header | refcount table | refcount blocks | L1 | L2s | data.
    # Find the refcount sizes that cover everything including themselves.
    rt_clusters, rb_count = 1, 1
    while True:
        total = 1 + rt_clusters + rb_count + l1_clusters + n_l2 + n_data
        need_rb = -(-total // rbe)
        need_rt = max(1, round_up(need_rb * 8, cs) // cs)
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
        header = build_header_cluster(h, cs, feature_table=True)
    except DiskError:
        h.other_extensions = []
        header = build_header_cluster(h, cs, feature_table=False)

    fd = create_new(path)
    try:
        pwrite_all(fd, header, 0)
        # Refcount table and blocks: every cluster of the layout has refcount 1.
        rt = bytearray(rt_clusters * cs)
        for i in range(rb_count):
            Q.pack_into(rt, i * 8, rb_off + i * cs)
        pwrite_all(fd, rt, rt_off)
        for i in range(rb_count):
            n = min(rbe, total_clusters - i * rbe)
            pwrite_all(fd, b"\0\1" * n + bytes((rbe - n) * 2), rb_off + i * cs)
        l2e = cs // 8
        if fixed:
            # L1 -> consecutive L2 tables -> consecutive data clusters.
            l1 = struct.pack(f">{l1_size}Q", *(COPIED | (l2_off + i * cs) for i in range(l1_size)))
            pwrite_all(fd, l1, l1_off)
            for t in range(n_l2):
                first = t * l2e
                n = min(l2e, n_data - first)
                tbl = struct.pack(
                    f">{n}Q", *(COPIED | (data_off + (first + j) * cs) for j in range(n))
                )
                pwrite_all(fd, tbl + bytes(cs - len(tbl)), l2_off + t * cs)
        os.ftruncate(fd, l1_off + l1_clusters * cs + n_l2 * cs)
        if fixed and n_data:
            fill(fd, data_off, n_data * cs, progress, n_data * cs)
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
        h = parse_header(path, fd, file_size)
    finally:
        os.close(fd)
    variant = "fixed" if h.backing_file is None and file_size >= h.size else "dynamic"
    return ImageInfo(
        path=path, format="qcow2", variant=variant, virtual_size=h.size, file_size=file_size,
        uuid=None, backing_file=h.backing_file, backing_format=h.backing_format,
    )  # fmt: skip
