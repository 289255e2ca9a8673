# Differencing layers: the operations the VM registry and the iSCSI target use
# on chains of qcow2 files (create a child, freeze = snapshot, discard, merge a
# layer into its parent or its parent into it, list a chain).  Every layer is
# a qcow2 v3 file whose backing file is its parent, backing format recorded.
"""Layer chains of qcow2 images."""

from __future__ import annotations

import os

from netstore.disk.api import DiskError, ImageFormatError
from netstore.disk.qcow2 import (
    MAGIC,
    MAX_CHAIN_DEPTH,
    Qcow2Image,
    create_qcow2,
    probe_format,
    probe_qcow2,
    resolve_backing,
)
from netstore.disk.raw import RawImage, resize_raw

# Clusters are copied in pieces of at most this size during merges.
MERGE_CHUNK = 4 << 20


def _backing_name(parent_path: str, child_path: str) -> str:
    """The name to store in the child: relative when both live under one directory tree."""
    parent = os.path.abspath(parent_path)
    child_dir = os.path.dirname(os.path.abspath(child_path))
    rel = os.path.relpath(parent, child_dir)
    if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
        return rel
    return parent


def create_child(parent_path: str, child_path: str, *, cluster_size: int = 65536) -> None:
    """Create `child_path`: an empty qcow2 layer on top of `parent_path`.

    The backing name is relative when the parent is in the child's directory
    (or below it), absolute otherwise; its format is recorded.

    Raises:
        DiskError: the child exists, or the parent is missing or not raw/qcow2.
    """
    if not os.path.exists(parent_path):
        raise DiskError(f"{parent_path}: parent image not found")
    fmt = probe_format(parent_path)
    create_qcow2(
        child_path,
        None,
        backing=_backing_name(parent_path, child_path),
        backing_format=fmt,
        cluster_size=cluster_size,
    )


def freeze(top_path: str, new_top_path: str) -> None:
    """Snapshot: `top_path` stops changing (by convention) and `new_top_path` goes on top."""
    create_child(top_path, new_top_path)


def _is_layer(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read(4) != MAGIC:
                return False
    except OSError:
        return False
    return probe_qcow2(path).backing_file is not None


def discard(child_path: str) -> None:
    """Delete the differencing layer `child_path` (its parent is untouched).

    Raises:
        DiskError: the file is not a qcow2 layer with a backing file.
    """
    if not os.path.exists(child_path):
        raise DiskError(f"{child_path}: no such layer")
    if not _is_layer(child_path):
        raise DiskError(
            f"{child_path}: not a differencing layer (a qcow2 with a backing file); not deleted"
        )
    os.unlink(child_path)


def chain(path: str) -> list[str]:
    """The backing chain of `path`, top first (paths as resolved, not as stored).

    Raises:
        ImageFormatError: a loop or a damaged header.
        DiskError: a file of the chain is missing.
    """
    out: list[str] = []
    seen: set[str] = set()
    cur = path
    while True:
        real = os.path.realpath(cur)
        if real in seen:
            raise ImageFormatError(f"{path}: backing chain loops at {cur}")
        seen.add(real)
        out.append(cur)
        if len(out) > MAX_CHAIN_DEPTH:
            raise DiskError(f"{path}: backing chain deeper than {MAX_CHAIN_DEPTH}")
        if not os.path.exists(cur):
            raise DiskError(f"{path}: {cur} in the backing chain is missing")
        if probe_format(cur) != "qcow2":
            return out
        info = probe_qcow2(cur)
        if info.backing_file is None:
            return out
        cur = resolve_backing(cur, info.backing_file)


def _open_rw(path: str):
    return Qcow2Image(path) if probe_format(path) == "qcow2" else RawImage(path)


def _copy_runs(src: Qcow2Image, dst, runs) -> None:
    """Copy the given (offset, length, kind) runs of `src` (read through its chain) into `dst`."""
    for off, n, kind in runs:
        if kind == "zero" and isinstance(dst, Qcow2Image):
            # discard reads as zeros afterwards, in every kind of qcow2 layer
            cs = dst.cluster_size
            if off % cs == 0 and (n % cs == 0 or off + n == dst.virtual_size):
                dst.discard(off, n)
                continue
        pos = off
        while pos < off + n:
            k = min(MERGE_CHUNK, off + n - pos)
            data = bytes(k) if kind == "zero" else src.pread(pos, k)
            dst.pwrite(pos, data)
            pos += k


def merge_into_parent(child_path: str) -> None:
    """Commit `child_path`'s own clusters into its parent, then delete the child.

    The parent (qcow2 or raw) is grown first if the child is larger.  Each
    copy is an ordinary write, so the parent stays consistent if this is
    interrupted (the child is still there and can be merged again).

    Raises:
        DiskError: the child is not a layer or its parent cannot be written.
    """
    if not _is_layer(child_path):
        raise DiskError(f"{child_path}: not a differencing layer; nothing to merge")
    with Qcow2Image(child_path, read_only=True) as child:
        parent_path = child.backing.path  # type: ignore[union-attr]
        child_size = child.virtual_size
        runs = list(child.layer_runs())
        parent = _open_rw(parent_path)
        try:
            if parent.virtual_size < child_size:
                parent.close()
                if isinstance(parent, Qcow2Image):
                    parent = Qcow2Image(parent_path)
                    parent.resize(child_size)
                else:
                    resize_raw(parent_path, child_size)
                    parent = RawImage(parent_path)
            _copy_runs(child, parent, runs)
            parent.flush()
        finally:
            parent.close()
    os.unlink(child_path)


def merge_parent_into_child(child_path: str) -> None:
    """Fold the parent of `child_path` into it and rebase it onto the grandparent.

    For deleting a snapshot below the top: the parent's own clusters that
    the child does not override are copied into the child, then the child's
    backing name is rewritten (the header change is the last write).  The
    parent file is left in place for the caller to delete.

    Raises:
        DiskError: the child or its parent is not a qcow2 layer.
    """
    if not _is_layer(child_path):
        raise DiskError(f"{child_path}: not a differencing layer")
    with Qcow2Image(child_path) as child:
        parent = child.backing
        if not isinstance(parent, Qcow2Image):
            raise DiskError(
                f"{child_path}: its parent is not a qcow2 layer; merge the child into it instead"
            )
        own = list(child.layer_runs())
        to_copy: list[tuple[int, int, str]] = []
        for off, n, kind in parent.layer_runs():
            end = min(off + n, child.virtual_size)
            pos = off
            for o_off, o_n, _ in own:  # subtract what the child already has
                o_end = o_off + o_n
                if o_end <= pos or o_off >= end:
                    continue
                if o_off > pos:
                    to_copy.append((pos, o_off - pos, kind))
                pos = max(pos, o_end)
            if pos < end:
                to_copy.append((pos, end - pos, kind))
        _copy_runs(parent, child, to_copy)
        grand = parent.header.backing_file
        if grand is None:
            child.set_backing(None)
        else:
            grand_path = resolve_backing(parent.path, grand)
            child.set_backing(_backing_name(grand_path, child_path), parent.header.backing_format)
        child.flush()
