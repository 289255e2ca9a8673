# The allocation map of a qcow2 layer: the runs its L2 tables define, and
# the extents of the whole chain (this layer over what its backing file
# says).  Pure functions over the tables the image hands in.
"""qcow2 allocation map: :func:`layer_runs`, :func:`chain_extents`."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from netstore.disk.api import Extent
from netstore.disk.qcow2.format import COMPRESSED, ZERO


def layer_runs(
    l2_table: Callable[[int], bytes | None], l1_size: int, cluster_size: int, size: int
) -> Iterator[tuple[int, int, str]]:
    """Runs one layer defines: (offset, length, "data" | "zero"), in order.

    `l2_table(i)` is a copy of L2 table `i` (None when unallocated).
    """
    cs = cluster_size
    l2e = cs // 8
    cur: list | None = None
    for l1i in range(l1_size):
        base_vc = l1i * l2e
        if base_vc * cs >= size:
            break
        tbl = l2_table(l1i)
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


def chain_extents(
    runs: Callable[[], Iterator[tuple[int, int, str]]],
    backing_extents: Callable[[], Iterator[Extent]] | None,
    size: int,
) -> Iterator[Extent]:
    """Allocated (data here or in the chain) and unallocated runs, covering
    [0, size): `runs` gives this layer's runs, `backing_extents` the chain's."""
    backing: list[Extent] = []
    if backing_extents is not None:
        backing = [e for e in backing_extents() if e.allocated]

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
        for off, n, kind in runs():
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
