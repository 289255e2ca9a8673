"""Commands on their units' task sets (sans-IO core, drained by hand here):
strict order per unit, no overtaking, page-cache reads inline, task management
and a dropped connection with commands queued."""

import os

import pytest

from netstore.iscsi import pdu as P
from netstore.scsi.sense import MODE_PARAMETERS_CHANGED
from netstore.scsi.taskset import run_batch
from tests.iscsi.initiator import Initiator, bhs, make_group, read10, wire, write10

BS = 512
TUR = bytes(6)
INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
SYNC10 = bytes(10)[:0] + bytes([0x35]) + bytes(9)


class Drainer:
    """Stands in for the shell: collects the task sets that have work."""

    def __init__(self) -> None:
        self.sets = []

    def __call__(self, ts) -> None:
        self.sets.append(ts)

    def run(self) -> None:
        while self.sets:
            self.sets.pop(0).drain_now()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(64 * 1024))
    return str(path)


def ready(image):
    group = make_group(image)
    drainer = Drainer()
    group.schedule = drainer
    ini = Initiator(group)
    ini.login()
    ini.scsi(TUR)  # the power-on unit attention (inline: nothing queued)
    assert drainer.sets == []
    lu = group.exported[next(iter(group.exported))].scsi.unit(0)
    return ini, drainer, lu


def file_bytes(image, off, n):
    with open(image, "rb") as f:
        f.seek(off)
        return f.read(n)


def tmf(ini, function, itt=0x999, ref=0, refcmdsn=0):
    return wire(bhs(P.OP_TASK_MGMT_REQ, 0x80 | function, immediate=True, itt=itt, f20=ref,
                    f24=ini.cmdsn, f32=refcmdsn))


def test_read_behind_a_queued_write_waits_and_sees_the_new_data(image):
    ini, drainer, _ = ready(image)
    new = os.urandom(BS)
    witt, replies = ini.scsi(write10(3, 1), write=new)
    assert replies == []  # the write is queued, not answered
    ritt, replies = ini.scsi(read10(3, 1), read=BS)
    assert replies == []  # cached, but it may not overtake the write
    iitt, replies = ini.scsi(INQUIRY, read=36)
    assert replies == []  # no medium access, but behind the queue too
    assert len(drainer.sets) == 1  # one unit, one batch
    drainer.run()
    w, r, i = ini.replies()
    assert (w.opcode, w.itt, w.bhs[3]) == (P.OP_SCSI_RSP, witt, 0)
    assert (r.opcode, r.itt, r.data) == (P.OP_DATA_IN, ritt, new)
    assert i.itt == iitt and i.data[8:16] == b"NETSTORE"
    # StatSN is given when the answer is built: in completion order
    assert [x.u32(24) for x in (w, r, i)] == [w.u32(24), w.u32(24) + 1, w.u32(24) + 2]


def test_cached_read_and_inquiry_are_answered_at_once_when_idle(image):
    ini, drainer, _ = ready(image)
    _, (d,) = ini.scsi(read10(0, 2), read=2 * BS)
    assert d.data == file_bytes(image, 0, 2 * BS)
    _, (i,) = ini.scsi(INQUIRY, read=36)
    assert i.data[8:16] == b"NETSTORE"
    assert drainer.sets == []


def test_uncached_read_goes_to_the_queue(image):
    ini, drainer, lu = ready(image)

    def not_cached(offset, length):
        raise BlockingIOError(11, "not cached")

    lu._pread_nowait = not_cached  # what RawImage.pread_nowait says on a page cache miss
    _, replies = ini.scsi(read10(40, 1), read=BS)
    assert replies == [] and len(drainer.sets) == 1
    drainer.run()
    (d,) = ini.replies()
    assert d.data == file_bytes(image, 40 * BS, BS)


def test_sync_cache_runs_after_the_writes_queued_before_it(image):
    ini, drainer, lu = ready(image)
    events = []
    backend = lu.backend
    pwrite, pwritev, flush = backend.pwrite, backend.pwritev, lu._flush
    lu._pwrite = backend.pwrite = lambda off, data: (
        events.append(("write", off, len(data))), pwrite(off, data))
    backend.pwritev = lambda off, parts: (
        events.append(("write", off, sum(map(len, parts)))), pwritev(off, parts))
    lu._flush = lambda: (events.append(("flush",)), flush())
    data = [os.urandom(BS) for _ in range(4)]
    for lba in range(4):
        ini.scsi(write10(lba, 1), write=data[lba])
    ini.scsi(SYNC10)
    assert events == []
    drainer.run()
    # the four writes (merged: they touch) reached the file before the flush
    assert events[-1] == ("flush",)
    written = sorted((e[1], e[2]) for e in events[:-1])
    assert sum(n for _, n in written) == 4 * BS and written[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(written, written[1:], strict=False))
    assert file_bytes(image, 0, 4 * BS) == b"".join(data)
    assert [r.bhs[3] for r in ini.replies()] == [0] * 5


def test_abort_task_of_a_queued_write_drops_it_unanswered(image):
    ini, drainer, _ = ready(image)
    before = file_bytes(image, 0, BS)
    witt, _ = ini.scsi(write10(0, 1), write=os.urandom(BS))
    assert ini.send(tmf(ini, 1, ref=witt, refcmdsn=ini.cmdsn - 1)) == []  # after the unit's turn
    drainer.run()
    (r,) = ini.replies()
    assert r.opcode == P.OP_TASK_MGMT_RSP and r.bhs[2] == 0
    assert file_bytes(image, 0, BS) == before
    assert ini.conn.inflight == {}


def test_lun_reset_waits_for_a_started_write_which_finishes_whole(image):
    ini, drainer, lu = ready(image)
    new = os.urandom(8 * BS)
    ini.scsi(write10(0, 8), write=new)
    (ts,) = drainer.sets
    drainer.sets.clear()
    batch = ts.take()  # the shell took it: the write has started
    run_batch(batch)
    assert ini.send(tmf(ini, 5)) == []  # LOGICAL UNIT RESET: not before the write ends
    ts.finish(batch)
    assert ini.replies() == []  # the write's answer is suppressed (aborted)
    ts.drain_now()  # the drainer goes on: the reset, in the unit's turn
    (r,) = ini.replies()
    assert r.opcode == P.OP_TASK_MGMT_RSP and r.bhs[2] == 0
    assert file_bytes(image, 0, 8 * BS) == new
    _, (rsp,) = ini.scsi(TUR)
    assert rsp.bhs[3] == 0x02 and rsp.data[2 + 12] == 0x29  # the reset's unit attention


def test_dropped_connection_queued_write_is_applied_whole_and_unanswered(image):
    ini, drainer, _ = ready(image)
    new = os.urandom(16 * BS)
    ini.scsi(write10(8, 16), write=new)
    ini.conn.connection_lost()
    drainer.run()
    assert ini.conn.outbox == []
    assert file_bytes(image, 8 * BS, 16 * BS) == new


def test_r2t_write_completes_into_the_queue(image):
    ini, drainer, _ = ready(image)
    new = os.urandom(4 * BS)
    itt, replies = ini.scsi(write10(2, 4), write=new, immediate_len=BS, final=True)
    (r2t,) = replies
    assert r2t.opcode == P.OP_R2T
    assert ini.data_out(itt, r2t.u32(20), 0, BS, new[BS:]) == []  # queued
    ritt, _ = ini.scsi(read10(2, 4), read=4 * BS)
    drainer.run()
    w, d = ini.replies()
    assert w.itt == itt and w.bhs[3] == 0
    assert d.itt == ritt and d.data == new


def test_a_unit_closed_with_commands_queued_closes_after_them(image):
    ini, drainer, lu = ready(image)
    new = os.urandom(BS)
    ini.scsi(write10(5, 1), write=new)
    lu.close()  # the wiring layer let go of it (a VM stopped)
    assert not lu._closed
    drainer.run()
    assert lu._closed
    assert file_bytes(image, 5 * BS, BS) == new
    (r,) = ini.replies()
    assert r.bhs[3] == 0


def ordered(ini, cdb, read):
    """A READ as an ORDERED task (ATTR 2): it keeps its place."""
    itt = ini.next_itt()
    b = bhs(P.OP_SCSI_CMD, 0x80 | 0x40 | 0x02, itt=itt, f20=read, f24=ini.cmdsn)
    b[32:32 + len(cdb)] = cdb
    ini.cmdsn += 1
    return itt, ini.send(wire(b))


def test_a_cached_read_passes_queued_reads_but_not_writes_nor_as_ordered(image):
    ini, drainer, lu = ready(image)
    cached = lu._pread_nowait
    lu._pread_nowait = lambda offset, length: (_ for _ in ()).throw(
        BlockingIOError(11, "not cached"))
    slow, replies = ini.scsi(read10(40, 1), read=BS)  # a page cache miss: queued
    assert replies == [] and lu.tasks.only_reads
    lu._pread_nowait = cached
    fast, (d,) = ini.scsi(read10(0, 1), read=BS)  # SIMPLE, cached: answered now
    assert (d.itt, d.data) == (fast, file_bytes(image, 0, BS))
    _, replies = ordered(ini, read10(1, 1), BS)  # ORDERED: behind the queued read
    assert replies == []
    drainer.run()
    assert [r.itt for r in ini.replies()] == [slow, ini.itt]
    # behind a queued write, no read passes: it must see what the write wrote
    new = os.urandom(BS)
    witt, replies = ini.scsi(write10(5, 1), write=new)
    assert replies == [] and not lu.tasks.only_reads
    ritt, replies = ini.scsi(read10(5, 1), read=BS)
    assert replies == []
    drainer.run()
    w, r = ini.replies()
    assert (w.itt, r.itt, r.data) == (witt, ritt, new)
    assert lu.tasks.idle and lu.tasks.only_reads


def test_no_read_passes_a_queued_read_while_a_unit_attention_waits(image):
    ini, drainer, lu = ready(image)
    cached = lu._pread_nowait
    lu._pread_nowait = lambda offset, length: (_ for _ in ()).throw(
        BlockingIOError(11, "not cached"))
    slow, replies = ini.scsi(read10(40, 1), read=BS)
    assert replies == []
    lu._pread_nowait = cached
    lu.establish_unit_attention(MODE_PARAMETERS_CHANGED)
    _, replies = ini.scsi(read10(0, 1), read=BS)
    assert replies == []  # the queued read reports the attention first
    drainer.run()
    first, second = ini.replies()
    assert first.itt == slow and first.opcode == P.OP_SCSI_RSP and first.bhs[3] == 0x02
    assert second.opcode == P.OP_DATA_IN
