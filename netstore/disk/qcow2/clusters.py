# The host clusters of a qcow2 file: the refcount table and its blocks (a
# small LRU cache of them, written through), allocation at the end of the
# file or from clusters freed before the last flush, and release.  The order
# of writes keeps a crash safe: a cluster's refcount is on disk before
# anything points to it, a new table before the header names it.
"""Refcounts and allocation of a qcow2 file's host clusters: :class:`HostClusters`."""

from __future__ import annotations

import os
import struct
from collections import OrderedDict

from netstore.disk.api import DiskError
from netstore.disk.fdio import pwrite_all
from netstore.disk.qcow2.format import (
    MAX_REFTABLE_BYTES,
    OFFSET_MASK,
    REFCOUNT_FMT,
    Q,
    Qcow2Header,
    bad,
    round_up,
)

# Refcount blocks kept in memory (LRU).
REFBLOCK_CACHE_BLOCKS = 16


class HostClusters:
    """Refcounts of one open qcow2 file and the allocation of its clusters.

    Not locked: the image calls it under its own lock.
    """

    def __init__(self, path: str, fd: int, header: Qcow2Header, file_size: int) -> None:
        """Read and check the refcount table of `header`.

        Raises:
            ImageFormatError: the table or one of its entries is invalid.
        """
        h = header
        cs = 1 << h.cluster_bits
        self.path = path
        self.header = h
        self._fd = fd
        self._cs = cs
        self._cbits = h.cluster_bits
        # Refcount table (only needed to write, but validated always).
        rt_off, rt_cl = h.refcount_table_offset, h.refcount_table_clusters
        if rt_cl * cs > MAX_REFTABLE_BYTES or rt_cl == 0:
            raise bad(path, f"refcount table of {rt_cl} clusters is invalid")
        if rt_off == 0 or rt_off & (cs - 1):
            raise bad(path, f"refcount table offset {rt_off} not cluster aligned")
        if rt_off + rt_cl * cs > file_size:
            raise bad(path, f"refcount table at {rt_off} lies past the end of the file")
        raw = os.pread(fd, rt_cl * cs, rt_off)
        self._reftable = list(struct.unpack(f">{rt_cl * cs // 8}Q", raw))
        for i, e in enumerate(self._reftable):
            off = e & OFFSET_MASK
            if e and (e & ~OFFSET_MASK or off + cs > file_size):
                raise bad(path, f"refcount table entry {i} points to {e}, past the end or invalid")
        self._rorder = h.refcount_order
        self._rb_entries = cs * 8 >> h.refcount_order
        self._rfmt = REFCOUNT_FMT.get(h.refcount_order)
        self._rwidth = (1 << h.refcount_order) // 8
        self._rb_cache: OrderedDict[int, bytearray] = OrderedDict()
        self._eof = file_size
        self._cursor = round_up(file_size, cs)
        self._free: list[int] = []  # cluster offsets with refcount 0, safe to reuse
        self._pending_free: list[int] = []  # freed since the last flush

    def end(self) -> int:
        """The end of the file, counting clusters allocated but not yet written."""
        return max(self._eof, self._cursor)

    def reuse_freed(self) -> None:
        """Called after an fsync: clusters freed before it can be reused, since
        nothing durable points there any more."""
        self._free.extend(self._pending_free)
        self._pending_free.clear()

    def refblock(self, rti: int, create: bool) -> tuple[int, bytearray] | None:
        """(offset, contents) of refcount block `rti`; allocated when `create`."""
        if rti < len(self._reftable) and self._reftable[rti]:
            off = self._reftable[rti] & OFFSET_MASK
            blk = self._rb_cache.get(off)
            if blk is None:
                data = os.pread(self._fd, self._cs, off)
                if len(data) != self._cs:
                    raise bad(self.path, f"refcount block at {off} is cut short by EOF")
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

    def refcount(self, ci: int) -> int:
        """Refcount of host cluster index `ci`."""
        got = self.refblock(ci // self._rb_entries, False)
        if got is None:
            return 0
        _, blk = got
        i = ci % self._rb_entries
        if self._rfmt is None:  # sub-byte refcounts: read only
            bits = 1 << self._rorder
            byte = blk[i * bits // 8]
            return byte >> (i * bits % 8) & ((1 << bits) - 1)
        return struct.unpack_from(">" + self._rfmt, blk, i * self._rwidth)[0]

    def set_refcounts(self, first: int, count: int, value: int) -> None:
        """Set the refcount of host clusters [first, first+count) to `value`, on disk now."""
        rbe = self._rb_entries
        w = self._rwidth
        i, end = first, first + count
        while i < end:
            rti, bi = divmod(i, rbe)
            n = min(end - i, rbe - bi)
            off, blk = self.refblock(rti, True)  # type: ignore[misc]
            blk[bi * w : (bi + n) * w] = struct.pack(f">{n}{self._rfmt}", *([value] * n))
            pwrite_all(self._fd, blk[bi * w : (bi + n) * w], off + bi * w)
            i += n

    def _new_refblock(self, rti: int) -> tuple[int, bytearray]:
        """Allocate refcount block `rti`: its own refcount first, then the block, then the table entry."""
        if rti >= len(self._reftable):
            self._grow_reftable(rti)
            got = self.refblock(rti, False)
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
            self.set_refcounts(ci, 1, 1)
        pwrite_all(self._fd, blk, off)
        pwrite_all(self._fd, Q.pack(off), self.header.refcount_table_offset + rti * 8)
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
        t = max(round_up(old_n * 8, cs) // cs * 2, round_up((need_rti + 1) * 8, cs) // cs)
        b = 1
        while True:
            region_end = s + t + b
            ranges = {need_rti} | set(range(s // rbe, (region_end - 1) // rbe + 1))
            new_ranges = sorted(r for r in ranges if r >= old_n or not old[r])
            top = max(ranges)
            need_t = round_up((top + 1) * 8, cs) // cs
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
                self.set_refcounts(ci, 1, 1)
        self._cursor = (s + t + b) * cs
        w = self._rwidth
        one = struct.pack(">" + self._rfmt, 1)
        for r, off in blk_offs.items():
            blk = bytearray(cs)
            for ci in region:
                if ci // rbe == r:
                    i = ci % rbe
                    blk[i * w : (i + 1) * w] = one
            pwrite_all(self._fd, blk, off)
            self._rb_cache[off] = blk
        new = old + [0] * (t * cs // 8 - old_n)
        for r, off in blk_offs.items():
            new[r] = off
        pwrite_all(self._fd, struct.pack(f">{len(new)}Q", *new), tbl_off)
        self._eof = max(self._eof, self._cursor)
        os.fsync(self._fd)  # the table is durable before the header names it
        pwrite_all(self._fd, struct.pack(">QI", tbl_off, t), 48)
        os.fsync(self._fd)
        old_off = self.header.refcount_table_offset
        old_cl = self.header.refcount_table_clusters
        self.header.refcount_table_offset = tbl_off
        self.header.refcount_table_clusters = t
        self._reftable = new
        while len(self._rb_cache) > REFBLOCK_CACHE_BLOCKS:
            self._rb_cache.popitem(last=False)
        self.release(old_off, old_cl)

    def release(self, off: int, count: int = 1) -> None:
        """Drop one reference to `count` host clusters at `off` (after nothing points there)."""
        ci = off >> self._cbits
        for c in range(ci, ci + count):
            rc = self.refcount(c)
            if rc:
                self.set_refcounts(c, 1, rc - 1)
                if rc == 1:
                    self._pending_free.append(c << self._cbits)

    def alloc(self, count: int) -> int:
        """`count` contiguous new host clusters, refcount 1 on disk; returns the offset."""
        if count == 1 and self._free:
            off = self._free.pop()
            self.set_refcounts(off >> self._cbits, 1, 1)
            return off
        off = self._cursor
        self._cursor += count * self._cs
        self.set_refcounts(off >> self._cbits, count, 1)
        self._eof = max(self._eof, off + count * self._cs)
        return off

