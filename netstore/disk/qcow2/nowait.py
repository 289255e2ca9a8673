# netstore/disk/qcow2/nowait.py - reads of a qcow2 chain that never wait, for
# a caller on an event loop (the iSCSI fast path tries them before it sends a
# READ to the unit's thread, as it does for a raw file). Per cluster: its L2
# table must be in memory (taken from the last table used, or from the cache
# when the lock is free: a writer in another thread may hold it), and its
# bytes in the page cache (preadv2 RWF_NOWAIT) of whichever layer holds them;
# zero clusters and what no layer holds read as zeros. Anything else (a
# table on disk, a compressed cluster, pages not cached) raises
# BlockingIOError and the read goes where it may wait. Consecutive clusters of
# one layer's file are read with one call, as a raw file would be; a read
# across layers fills one buffer piece by piece (no join afterwards).
# Where a cluster lives (which file of the chain, at which offset, or zeros)
# is resolved once and kept in the top layer's ClusterMap, as qemu's qcow2
# driver keeps its chain's map: a later read of it is one dict lookup and one
# preadv, however deep the chain. A layer that changes a cluster's L2 entry
# forgets it there (allocation, discard; everything on resize and rebase).
"""read_nowait: Qcow2Image.pread_nowait."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from netstore.disk.fdio import NowaitUnsupported, pread_cached, pread_cached_into
from netstore.disk.qcow2.format import COMPRESSED, OFFSET_MASK, ZERO, Q

if TYPE_CHECKING:
    from netstore.disk.qcow2.image import Qcow2Image

__all__ = ["ClusterMap", "read_nowait", "read_nowait_into"]

_unpack_q = Q.unpack_from

# Clusters a ClusterMap holds before it starts over (4 GiB of 64 KiB clusters).
MAP_CLUSTERS = 65536
# A cluster that reads as zeros, in a ClusterMap.
ZEROS = (-1, 0)


class ClusterMap:
    """Virtual cluster -> (file descriptor, offset of the cluster's first
    byte in it), or ZEROS, for clusters resolved down the chain. A resolution
    that raced with a change of an L2 entry is not kept (the generation)."""

    __slots__ = ("at", "gen")

    def __init__(self) -> None:
        self.at: dict[int, tuple[int, int]] = {}
        self.gen = 0

    def forget(self, vc: int = -1, count: int = 0) -> None:
        """Clusters [vc, vc+count) changed; no vc: everything did."""
        self.gen += 1
        if vc < 0:
            self.at.clear()
            return
        at = self.at
        for i in range(vc, vc + count):
            at.pop(i, None)

    def keep(self, vc: int, where: tuple[int, int], gen: int) -> None:
        if gen != self.gen:
            return
        if len(self.at) >= MAP_CLUSTERS:
            self.at.clear()
        self.at[vc] = where


def _resolve(self: Qcow2Image, vc: int) -> tuple[int, int] | None:
    """Where virtual cluster ``vc`` lives (see ClusterMap); None when the
    chain cannot say it in one piece (a backing file that ends inside the
    cluster, smaller clusters below, another format): read piece by piece.

    Raises:
        BlockingIOError: an L2 table on disk, a compressed cluster, a lock.
    """
    where = self._where.at.get(vc)
    if where is not None:
        return where
    gen = self._where.gen
    cs = self._cs
    off = vc << self._cbits
    img = self
    while True:
        if not img._nowait:
            raise BlockingIOError(errno.EAGAIN, "no RWF_NOWAIT here")
        e = _entry_nowait(img, off)
        if e & COMPRESSED:
            raise BlockingIOError(errno.EAGAIN, "a compressed cluster")
        if e & ZERO:
            where = ZEROS
            break
        if e & OFFSET_MASK:
            where = (img._fd, (e & OFFSET_MASK) + (off & img._cmask))
            break
        below = img.backing
        if below is None or off >= img._backing_size:
            where = ZEROS
            break
        if off + cs > img._backing_size:
            return None
        if type(below) is type(self):
            if below._cs < cs:  # type: ignore[attr-defined]
                return None
            img = below  # type: ignore[assignment]
            continue
        fd = getattr(below, "fd", None)
        if not isinstance(fd, int) or not hasattr(below, "pread_nowait_into"):
            return None  # not a raw file: let it read for itself
        if not below._nowait:  # type: ignore[attr-defined]
            raise BlockingIOError(errno.EAGAIN, "no RWF_NOWAIT here")
        where = (fd, off)
        break
    self._where.keep(vc, where, gen)
    return where


def _mapped_into(self: Qcow2Image, dst: memoryview, offset: int) -> bool:
    """Fill ``dst`` (zeroed, inside one cluster) through the map; False if
    the map cannot say (read it piece by piece)."""
    where = _resolve(self, offset >> self._cbits)
    if where is None:
        return False
    fd, host = where
    if fd >= 0:
        _cached_into(self, fd, dst, host + (offset & self._cmask))
    return True


def read_nowait(self: Qcow2Image, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) if they need no wait: for each
    cluster, its L2 table in memory and its data in the page cache (of
    this layer's file, or down the backing chain), or zeros. A caller on
    an event loop tries this before it sends the read to a thread, as
    for a raw file.

    Raises:
        BlockingIOError: any part would wait (for the disk, or for the
            lock a writer in another thread holds): use :meth:`pread`.
    """
    if not self._nowait:
        raise BlockingIOError(errno.EAGAIN, "no RWF_NOWAIT here")
    if offset < 0 or length <= 0 or offset + length > self.virtual_size:
        raise BlockingIOError(errno.EAGAIN, "not a read inside the disk")
    first = self._cs - (offset & self._cmask)
    if length <= first:
        where = _resolve(self, offset >> self._cbits)
        if where is None:  # the map cannot say: the cluster's own way
            buf = bytearray(length)
            _piece_into(self, memoryview(buf), offset)
            return buf
        fd, host = where
        return bytes(length) if fd < 0 else _cached(self, fd, length,
                                                    host + (offset & self._cmask))
    host = _contiguous(self, offset, length)
    if host is not None:  # one run of this layer's file: one read, as raw
        return _cached(self, self._fd, length, host)
    buf = bytearray(length)
    read_nowait_into(self, memoryview(buf), offset)
    return buf


def read_nowait_into(self: Qcow2Image, dst: memoryview, offset: int) -> None:
    """:func:`read_nowait` of ``len(dst)`` bytes into ``dst``, which is
    zeroed (a new buffer; zero clusters are left as they are)."""
    if not self._nowait:
        raise BlockingIOError(errno.EAGAIN, "no RWF_NOWAIT here")
    length = len(dst)
    if offset < 0 or length <= 0 or offset + length > self.virtual_size:
        raise BlockingIOError(errno.EAGAIN, "not a read inside the disk")
    cs = self._cs
    pos, end, at = offset, offset + length, 0
    while pos < end:
        n = min(cs - (pos & self._cmask), end - pos)
        piece = dst[at:at + n]
        if not _mapped_into(self, piece, pos):
            _piece_into(self, piece, pos)
        pos += n
        at += n


def _contiguous(self: Qcow2Image, offset: int, length: int) -> int | None:
    """Where [offset, offset+length) starts in this layer's file if all of
    it is plain data there, in consecutive host clusters of one L2 table
    in use now (else None: read it cluster by cluster)."""
    last_l1i, tbl, cbits, l2bits, l2mask, cmask, _ = self._last
    vc = offset >> cbits
    end_vc = (offset + length - 1) >> cbits
    if vc >> l2bits != last_l1i or end_vc >> l2bits != last_l1i:
        return None
    cs = cmask + 1
    start = None
    for i in range(vc, end_vc + 1):
        e = _unpack_q(tbl, (i & l2mask) << 3)[0]
        host = e & OFFSET_MASK
        if not host or e & (COMPRESSED | ZERO):
            return None
        if start is None:
            start = host
        elif host != start + (i - vc) * cs:
            return None
    return None if start is None else start + (offset & cmask)


def _entry_nowait(self: Qcow2Image, offset: int) -> int:
    """The L2 entry of the cluster holding ``offset``, if its table is in memory."""
    last_l1i, tbl, cbits, l2bits, l2mask, _, _ = self._last
    vc = offset >> cbits
    l1i = vc >> l2bits
    if l1i == last_l1i:
        return _unpack_q(tbl, (vc & l2mask) << 3)[0]  # type: ignore[no-any-return]
    if not self._lock.acquire(blocking=False):
        raise BlockingIOError(errno.EAGAIN, "a writer holds the tables")
    try:
        t = self._l2_cache.get(l1i)
        if t is not None:
            self._l2_cache.move_to_end(l1i)
            self._set_last(l1i, t)
            return _unpack_q(t, (vc & l2mask) << 3)[0]  # type: ignore[no-any-return]
        if self._l1[l1i] & OFFSET_MASK:
            raise BlockingIOError(errno.EAGAIN, "its L2 table is on disk")
        return 0
    finally:
        self._lock.release()


def _piece_into(self: Qcow2Image, dst: memoryview, offset: int) -> None:
    """read_nowait of a range inside one cluster, into zeroed ``dst``."""
    e = _entry_nowait(self, offset)
    if e & COMPRESSED:
        raise BlockingIOError(errno.EAGAIN, "a compressed cluster")
    if e & ZERO:
        return
    if e & OFFSET_MASK:
        _cached_into(self, self._fd, dst, (e & OFFSET_MASK) + (offset & self._cmask))
        return
    if self.backing is None or offset >= self._backing_size:
        return
    if offset + len(dst) > self._backing_size:
        raise BlockingIOError(errno.EAGAIN, "the backing file ends inside the range")
    into = getattr(self.backing, "pread_nowait_into", None)
    if into is not None:
        into(dst, offset)
        return
    nowait = getattr(self.backing, "pread_nowait", None)
    if nowait is None:
        raise BlockingIOError(errno.EAGAIN, "the backing file cannot say")
    dst[:] = nowait(offset, len(dst))


def _cached(self: Qcow2Image, fd: int, length: int, host: int) -> bytes:
    """``length`` bytes at ``host`` in ``fd`` (a file of the chain), if cached."""
    try:
        return pread_cached(fd, length, host)
    except NowaitUnsupported:
        self._nowait = False
        raise


def _cached_into(self: Qcow2Image, fd: int, dst: memoryview, host: int) -> None:
    """:func:`_cached` into ``dst``."""
    try:
        pread_cached_into(fd, dst, host)
    except NowaitUnsupported:
        self._nowait = False
        raise
