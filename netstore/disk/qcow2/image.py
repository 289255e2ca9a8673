# The qcow2 image engine: an open image and its backing chain -- the L2
# table cache and the read fast path, copy-on-write by whole clusters,
# discard, flush, resize and rebase.  Crash safety comes from the order of
# writes (a kill -9 keeps every completed pwrite): data before the L2 entry
# that maps it, a new L2 table before the L1 entry, a new table before the
# header switch; clusters.py keeps refcounts before any pointer.  Metadata
# caches are write-through; the dirty bit is never set.
"""The qcow2 engine: :class:`Qcow2Image`."""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator

from netstore.disk.api import SECTOR, DiskError, Extent
from netstore.disk.fdio import RWF_NOWAIT, pwrite_all
from netstore.disk.qcow2.chain import open_backing, probe_backing
from netstore.disk.qcow2.clusters import HostClusters
from netstore.disk.qcow2.extents import chain_extents, layer_runs
from netstore.disk.qcow2.format import (
    COMPRESSED,
    COPIED,
    MAX_L1_BYTES,
    OFFSET_MASK,
    ZERO,
    Q,
    Qcow2Header,
    bad,
    build_header_cluster,
    check_features,
    compressed_span,
    inflate,
    l1_entries_for,
    parse_header,
    read_l1_table,
    round_up,
)
from netstore.disk.qcow2.nowait import ClusterMap, read_nowait, read_nowait_into

# L2 tables kept in memory (LRU).  64 tables of 64 KiB clusters map 32 GiB.
DEFAULT_L2_CACHE_TABLES = 64

_unpack_q = Q.unpack_from
# An L2 entry readable in place: COPIED set, not compressed, no zero flag.
_FAST_MASK = COPIED | COMPRESSED | ZERO


class Qcow2Image:
    """An opened qcow2 image and its backing chain (a DiskImage).

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
        h = parse_header(path, fd, file_size)
        check_features(path, h, read_only)
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

        self._l1 = read_l1_table(path, fd, h, file_size)
        self._host = HostClusters(path, fd, h, file_size)

        self._l2_cache: OrderedDict[int, bytearray] = OrderedDict()
        self._l2_cache_max = cache_tables
        # The last L2 lookup and the constants the read fast path needs, in
        # one tuple so a reader in another thread sees a consistent set.
        self._set_last(-1, bytearray())
        self._lock = threading.RLock()
        self._nowait = RWF_NOWAIT != 0  # cleared when the file system refuses it
        self._where = ClusterMap()  # where each cluster lives down the chain (nowait reads)

        # Backing chain.
        self._backing_size = 0
        if h.backing_file is not None:
            seen = [*seen, os.path.realpath(path)]
            self.backing = open_backing(path, h.backing_file, h.backing_format, seen, _open_layer)
            self._backing_size = self.backing.virtual_size
        if not read_only and h.autoclear:
            # We do not keep bitmaps (or other auto-clear data) up to date:
            # clearing the bits is how the spec lets us write anyway.
            h.autoclear = 0
            pwrite_all(fd, Q.pack(0), 88)

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
        if off & self._cmask or off + self._cs > self._host.end():
            raise bad(self.path, f"L1 entry {l1i} points to {off}, past the end or unaligned")
        data = os.pread(self._fd, self._cs, off)
        if len(data) != self._cs:
            raise bad(self.path, f"L2 table at {off} (L1 entry {l1i}) is cut short by EOF")
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

    def _l2_for_write(self, l1i: int) -> tuple[int, bytearray]:
        """(file offset, contents) of L2 table `l1i`, allocating a zeroed one if absent."""
        tbl = self._l2(l1i)
        if tbl is not None:
            return self._l1[l1i] & OFFSET_MASK, tbl
        off = self._host.alloc(1)
        tbl = bytearray(self._cs)
        pwrite_all(self._fd, tbl, off)
        entry = off | COPIED
        pwrite_all(self._fd, Q.pack(entry), self.header.l1_table_offset + l1i * 8)
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

    def pread_nowait(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) if they need no wait for the disk or
        a lock (see :mod:`netstore.disk.qcow2.nowait`).

        Raises:
            BlockingIOError: any part would wait: use :meth:`pread`.
        """
        return read_nowait(self, offset, length)

    def pread_nowait_into(self, dst: memoryview, offset: int) -> None:
        """:meth:`pread_nowait` of ``len(dst)`` bytes into ``dst`` (zeroed)."""
        read_nowait_into(self, dst, offset)

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
                    raise bad(self.path, f"data cluster at {arg} lies past the end of the file")
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
        coff, nsect = compressed_span(e, self._cbits)
        raw = os.pread(self._fd, nsect * SECTOR - (coff & (SECTOR - 1)), coff)
        return inflate(self.path, raw, self._cs, coff)

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
            coff, nsect = compressed_span(e, self._cbits)
            start = coff & ~(SECTOR - 1)
            last = start + nsect * SECTOR - 1
            first_c = start >> self._cbits
            self._host.release(first_c << self._cbits, (last >> self._cbits) - first_c + 1)
        elif e & OFFSET_MASK:
            self._host.release(e & OFFSET_MASK)

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
                    pwrite_all(fd, src[pos - offset : pos - offset + n], host)
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
                host = self._host.alloc(k)
                if head == 0 and tail == 0:
                    pwrite_all(fd, src[pos - offset : run_end - offset], host)
                else:
                    buf = bytearray(k * cs)
                    if head:
                        buf[:cs] = self._cluster_content(vc, olds[0])
                    if tail and (k > 1 or not head):
                        buf[(k - 1) * cs :] = self._cluster_content(vc + k - 1, olds[-1])
                    buf[head : head + run_end - pos] = src[pos - offset : run_end - offset]
                    pwrite_all(fd, buf, host)
                new = struct.pack(f">{k}Q", *(COPIED | (host + i * cs) for i in range(k)))
                tbl[l2i * 8 : (l2i + k) * 8] = new
                self._where.forget(vc, k)
                pwrite_all(fd, new, l2_off + l2i * 8)
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
                    self._where.forget(vc, k)
                    pwrite_all(self._fd, packed, l2_off + l2i * 8)
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
            self._host.reuse_freed()

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
            need = l1_entries_for(new_size, self._cbits)
            if need * 8 > MAX_L1_BYTES:
                raise DiskError(f"{self.path}: {new_size} bytes need too large an L1 table")
            old_off, old_n = h.l1_table_offset, h.l1_size
            if need > old_n:
                cs = self._cs
                ncl = round_up(need * 8, cs) // cs
                off = self._host.alloc(ncl)
                l1 = self._l1 + [0] * (need - old_n)
                buf = struct.pack(f">{need}Q", *l1)
                pwrite_all(self._fd, buf + bytes(ncl * cs - len(buf)), off)
                os.fsync(self._fd)
                pwrite_all(self._fd, struct.pack(">QIIQ", new_size, 0, need, off), 24)
                os.fsync(self._fd)
                self._l1 = l1
                h.l1_table_offset, h.l1_size = off, need
                self._host.release(old_off, max(1, round_up(old_n * 8, cs) // cs))
            else:
                pwrite_all(self._fd, Q.pack(new_size), 24)
                os.fsync(self._fd)
            h.size = new_size
            self.virtual_size = new_size
            self._set_last(-1, bytearray())
            self._where.forget()
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
                    backing_format = probe_backing(self.path, backing)
                new_backing = open_backing(
                    self.path, backing, backing_format, [os.path.realpath(self.path)], _open_layer
                )
            _write_backing(self._fd, h, self._cs, backing, backing_format)
            if self.backing is not None:
                self.backing.close()
            self.backing = new_backing
            self._backing_size = new_backing.virtual_size if new_backing else 0
            self._where.forget()

    def close(self) -> None:
        """Close this file and the backing chain (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.backing is not None:
            self.backing.close()
        os.close(self._fd)

    # ---- allocation map ----------------------------------------------------

    def _l2_copy(self, l1i: int) -> bytes | None:
        with self._lock:
            tbl = self._l2(l1i)
            return bytes(tbl) if tbl is not None else None

    def layer_runs(self) -> Iterator[tuple[int, int, str]]:
        """Runs this layer alone defines: (offset, length, "data" | "zero"), in order.

        Ranges not listed come from the backing file (or read as zeros).
        """
        return layer_runs(self._l2_copy, len(self._l1), self._cs, self.virtual_size)

    def extents(self) -> Iterator[Extent]:
        """Allocated (data here or in the chain) and unallocated runs, covering the disk."""
        below = self.backing.extents if self.backing is not None else None
        return chain_extents(self.layer_runs, below, self.virtual_size)


def _write_backing(fd: int, h: Qcow2Header, cs: int, backing: str | None,
                   backing_format: str | None) -> None:
    """Rewrite the header of the file on ``fd`` to name another backing file:
    one write, last, between two fsyncs."""
    old_used = h.extensions_end + (h.backing_file_size or 0)
    h.backing_file, h.backing_format = backing, backing_format
    hdr = build_header_cluster(h, cs, feature_table=False)
    h.extensions_end = len(hdr) - h.backing_file_size
    os.fsync(fd)  # copied data durable before the header changes
    pwrite_all(fd, hdr + bytes(max(0, old_used - len(hdr))), 0)
    os.fsync(fd)


def rename_backing(path: str, backing: str, backing_format: str) -> None:
    """Point the layer ``path`` at ``backing`` without opening its present
    backing chain (which may be gone: the files are being moved); the new
    backing must exist.  The caller guarantees it reads the same."""
    probe_backing(path, backing)  # raises if the new backing cannot be read
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        h = parse_header(path, fd, os.fstat(fd).st_size)
        check_features(path, h, False)
        _write_backing(fd, h, 1 << h.cluster_bits, backing, backing_format)
    finally:
        os.close(fd)


def _open_layer(path: str, seen: list[str]) -> Qcow2Image:
    """A qcow2 backing file, read-only, below the layers in `seen`."""
    return Qcow2Image(path, read_only=True, _seen=seen)
