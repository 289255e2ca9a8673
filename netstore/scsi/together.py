# netstore/scsi/together.py - plain WRITEs of one batch that follow each
# other on the medium written with one call, as a block layer merges
# adjacent requests. A task set's batch runs in order in the unit's thread;
# a run of consecutive plain WRITE(10)/WRITE(16) tasks (no FUA, no
# protection, write cache on, no unit attention, reservation or inaccessible
# target port group in the way, the whole transfer in hand) whose LBAs
# touch becomes one pwritev, or on a
# backend without one (qcow2) one write of the joined bytes, up to JOIN_MAX
# (one allocation, one L2 and one refcount update instead of one each). Each task
# still gets its own GOOD; if the merged write fails, each is run alone, so
# each reports its own error exactly as it would have.
"""write_together: the joint of plain WRITE tasks (see netstore.scsi.taskset)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from netstore.scsi.cdb import FUA, PROTECT_MASK, U10, U16
from netstore.scsi.opcodes import WRITE_10, WRITE_16
from netstore.scsi.sense import GOOD
from netstore.scsi.unit import ScsiResponse, Unit
from netstore.scsi.vpd import DEVICE_TYPE_DISK

if TYPE_CHECKING:
    from netstore.scsi.taskset import Task

__all__ = ["plain_write", "write_together"]

log = logging.getLogger(__name__)

# CDB byte 1 bits that need the command's own path: protection and FUA.
_NOT_PLAIN = PROTECT_MASK | FUA
# A backend without pwritev gets a merged run joined into one buffer: a copy,
# worth it for small writes only (it saves allocations and calls, not bytes).
JOIN_MAX = 128 << 10


def plain_write(lu: Unit, nexus: str, cdb: bytes, data: Any) -> tuple[int, Any] | None:
    """(byte offset, bytes) of a WRITE that may be merged with its
    neighbours, or None: let execute() run it (and say what is wrong)."""
    op = cdb[0]
    if op == WRITE_10:
        lba, n = U10.unpack_from(cdb, 2)
    elif op == WRITE_16:
        lba, n = U16.unpack_from(cdb, 2)
    else:
        return None
    bs = lu.block_size
    if (lu.device_type != DEVICE_TYPE_DISK or cdb[1] & _NOT_PLAIN or not n or lu.read_only
            or not lu.write_cache or nexus not in lu.attention_clear or not lu.accessible
            or lu.conflicts(nexus, cdb)
            or lba + n > lu.num_blocks or n > lu.max_blocks or len(data) != n * bs):
        return None
    return lba * bs, data


def write_together(group: list[Task]) -> None:
    """Run ``group`` (consecutive tasks of one unit, each ``item`` =
    (unit, nexus, cdb, data)) in order, merging touching plain writes."""
    lu = group[0].item[0]
    plans = [plain_write(*t.item) for t in group]
    pwritev = getattr(lu.backend, "pwritev", None)
    limit = None if pwritev is not None else JOIN_MAX
    k = 0
    while k < len(group):
        plan = plans[k]
        m = k + 1
        if plan is not None:
            end = plan[0] + len(plan[1])
            while (m < len(group) and (p := plans[m]) is not None and p[0] == end
                   and (limit is None or end + len(p[1]) - plan[0] <= limit)):
                end += len(p[1])
                m += 1
        if m - k > 1 and _write(lu, pwritev, plan[0], [p[1] for p in plans[k:m]]):  # type: ignore[index,misc]
            for t in group[k:m]:
                t.result = ScsiResponse(GOOD)
        else:
            for t in group[k:m]:
                t.result = t.run()  # type: ignore[misc]
        k = m


def _write(lu: Unit, pwritev: Any, offset: int, parts: list[Any]) -> bool:
    """One write of ``parts`` at ``offset`` (with the backend's ``pwritev``
    where it has one); False if it failed (then each command is run alone
    and reports its own error)."""
    try:
        if pwritev is not None:
            pwritev(offset, parts)
        else:
            lu.backend.pwrite(offset, b"".join(parts))
    except OSError:
        log.warning("a merged write at byte %d failed; its commands run one by one", offset)
        return False
    return True

