# netstore/disk/qcow2/nowait.py - reads of a qcow2 chain that never wait, for
# a caller on an event loop (the iSCSI fast path tries them before it sends a
# READ to the unit's thread, as it does for a raw file). Per cluster: its L2
# table must be in memory (taken from the last table used, or from the cache
# when the lock is free: a writer in another thread may hold it), and its
# bytes in the page cache (preadv2 RWF_NOWAIT) of whichever layer holds them;
# zero clusters and what no layer holds read as zeros. Anything else (a
# table on disk, a compressed cluster, pages not cached) raises
# BlockingIOError and the read goes where it may wait. Consecutive clusters of
# one layer's file are read with one call, as a raw file would be.
"""read_nowait: Qcow2Image.pread_nowait."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from netstore.disk.fdio import NowaitUnsupported, pread_cached
from netstore.disk.qcow2.format import COMPRESSED, OFFSET_MASK, ZERO, Q

if TYPE_CHECKING:
    from netstore.disk.qcow2.image import Qcow2Image

__all__ = ["read_nowait"]

_unpack_q = Q.unpack_from


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
        return _piece(self, offset, length)
    host = _contiguous(self, offset, length)
    if host is not None:  # one run of this layer's file: one read, as raw
        return _cached(self, length, host)
    parts = [_piece(self, offset, first)]
    pos, end = offset + first, offset + length
    while pos < end:
        n = min(self._cs, end - pos)
        parts.append(_piece(self, pos, n))
        pos += n
    return b"".join(parts)


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


def _piece(self: Qcow2Image, offset: int, length: int) -> bytes:
    """read_nowait of a range inside one cluster."""
    last_l1i, tbl, cbits, l2bits, l2mask, cmask, _ = self._last
    vc = offset >> cbits
    l1i = vc >> l2bits
    if l1i == last_l1i:
        e = _unpack_q(tbl, (vc & l2mask) << 3)[0]
    elif not self._lock.acquire(blocking=False):
        raise BlockingIOError(errno.EAGAIN, "a writer holds the tables")
    else:
        try:
            t = self._l2_cache.get(l1i)
            if t is not None:
                self._l2_cache.move_to_end(l1i)
                self._set_last(l1i, t)
                e = _unpack_q(t, (vc & l2mask) << 3)[0]
            elif self._l1[l1i] & OFFSET_MASK:
                raise BlockingIOError(errno.EAGAIN, "its L2 table is on disk")
            else:
                e = 0
        finally:
            self._lock.release()
    if e & COMPRESSED:
        raise BlockingIOError(errno.EAGAIN, "a compressed cluster")
    if e & ZERO:
        return bytes(length)
    if e & OFFSET_MASK:
        return _cached(self, length, (e & OFFSET_MASK) + (offset & cmask))
    if self.backing is None or offset >= self._backing_size:
        return bytes(length)
    nowait = getattr(self.backing, "pread_nowait", None)
    if nowait is None or offset + length > self._backing_size:
        raise BlockingIOError(errno.EAGAIN, "the backing file cannot say")
    return nowait(offset, length)


def _cached(self: Qcow2Image, length: int, host: int) -> bytes:
    """``length`` bytes at ``host`` in this layer's file, if cached."""
    try:
        return pread_cached(self._fd, length, host)
    except NowaitUnsupported:
        self._nowait = False
        raise
