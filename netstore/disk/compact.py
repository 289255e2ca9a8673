# netstore/disk/compact.py - `disk compact`: give back the clusters of a qcow2
# image (a base or a differencing layer) or the blocks of a dynamic VDI that
# hold only zeros, as VBoxManage modifymedium --compact does. The image is
# rewritten beside itself: a qcow2 with the same cluster size and backing
# reference, its own data clusters copied unless all zero (an all-zero
# cluster of a layer keeps qcow2's "reads as zeros" flag, so its parent's
# data never shows through; of a base it is left unallocated); a VDI through
# netstore's VDI writer (which allocates no all-zero block), its UUID kept.
# The new file replaces the old one with one rename, so a failure leaves the
# old image as it was.
"""Compact a qcow2 image or a dynamic VDI: zero-filled clusters are given back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netstore.disk.api import DiskError
from netstore.disk.images import convert, probe, set_uuid
from netstore.disk.qcow2 import Qcow2Image
from netstore.disk.qcow2.create import create_qcow2

__all__ = ["compact_qcow2", "compact_vdi"]

# Bytes read and compared at a time (a whole number of clusters).
CHUNK = 1 << 20


def compact_qcow2(path: str) -> tuple[int, int]:
    """Rewrite ``path`` without its zero-filled clusters; (bytes on disk
    before, after).  The image must not be open for writing elsewhere."""
    before = _allocated(path)
    with _rewritten(path) as tmp, Qcow2Image(path, read_only=True) as src:
        cs = src.cluster_size
        # beside the original, the same backing reference resolves the same
        create_qcow2(tmp, src.virtual_size, backing=src.header.backing_file,
                     backing_format=src.header.backing_format, cluster_size=cs)
        with Qcow2Image(tmp) as dst:
            for offset, length, what in src.layer_runs():
                if what == "zero":
                    dst.discard(offset, length)
                    continue
                _copy_data(src, dst, offset, length, cs)
            dst.flush()
    return before, _allocated(path)


def compact_vdi(path: str) -> tuple[int, int]:
    """Rewrite the dynamic VDI ``path`` without its zero-filled blocks, its
    UUID kept; (bytes on disk before, after)."""
    info = probe(path)
    if info.variant != "dynamic":
        raise DiskError(f"{path} is a {info.variant} VDI; only a dynamic VDI has blocks to "
                        "give back")
    before = _allocated(path)
    with _rewritten(path) as tmp:
        convert(path, tmp, "vdi", variant="dynamic")
        if info.uuid:
            set_uuid(tmp, info.uuid)
    return before, _allocated(path)


@contextmanager
def _rewritten(path: str) -> Iterator[str]:
    """A new file beside ``path`` to write the compacted image into: it
    replaces ``path`` (one rename) when the block ends, and is removed if the
    block fails."""
    tmp = Path(f"{path}.compacting")
    tmp.unlink(missing_ok=True)
    try:
        yield str(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_data(src: Qcow2Image, dst: Qcow2Image, offset: int, length: int, cs: int) -> None:
    end = offset + length
    zero = bytes(CHUNK)
    while offset < end:
        n = min(CHUNK, end - offset)
        data = src.pread(offset, n)
        if data == zero[:n]:
            if src.backing is not None:
                dst.discard(offset, n)  # reads as zeros, hides the parent
            offset += n
            continue
        for c in range(0, n, cs):  # only the clusters that hold data
            piece = data[c : c + cs]
            if piece.count(0) != len(piece):
                dst.pwrite(offset + c, piece)
            elif src.backing is not None:
                dst.discard(offset + c, len(piece))
        offset += n


def _allocated(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError as e:
        raise DiskError(f"{path}: {e.strerror}") from None
