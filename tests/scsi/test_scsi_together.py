# tests/scsi/test_scsi_together.py - plain WRITEs of one batch merged into
# one write (netstore/scsi/together.py): whatever a batch holds (touching
# and scattered writes, FUA, protection bits, writes past the end, short
# data, a pending unit attention, WRITE(16), a read in between), running it
# with the merge answers every command exactly as running each alone does
# and leaves the same bytes in the file (hypothesis, raw and qcow2); touching
# writes do become one call; a merged write that fails is retried command by
# command, so only the command whose blocks fail reports WRITE ERROR.
"""Tests for netstore.scsi.together (merged plain writes)."""

from __future__ import annotations

import os
import shutil
import struct
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk.qcow2 import Qcow2Image, create_qcow2
from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit
from netstore.scsi.taskset import Task, run_batch
from netstore.scsi.together import write_together
from tests.scsi.scsi_cdb import NEXUS
from tests.scsi.units import identity, make_image, ready

BS = 512
BLOCKS = 2048


def write10(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, flags, lba, 0, n, 0)


def write16(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, flags, lba, n, 0, 0)


def read10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def tasks_for(lu: LogicalUnit, cmds: list[tuple[bytes, bytes | None]], merge: bool,
              nexus: str = NEXUS) -> list[Task]:
    out = []
    for cdb, data in cmds:
        t = Task(partial(lu.execute, nexus, cdb, data), lambda rsp: None)
        if merge and cdb[0] in (0x2A, 0x8A):
            t.joint = write_together
            t.item = (lu, nexus, cdb, data)
        out.append(t)
    return out


def outcome(batch: list[Task]) -> list[tuple[int, bytes, bytes]]:
    return [(t.result.status, bytes(t.result.sense), bytes(t.result.data)) for t in batch]


def open_unit(kind: str, path: str) -> LogicalUnit:
    img = RawImage(path) if kind == "raw" else Qcow2Image(path)
    return LogicalUnit(img, identity())


@pytest.fixture(params=["raw", "qcow2"])
def pair(request, tmp_path_factory):
    """Two identical images of one kind: one runs merged, one command by command."""
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "raw":
        a = make_image(d / "a.img", BLOCKS)
    else:
        a = str(d / "a.qcow2")
        create_qcow2(a, BLOCKS * BS)
    b = str(d / ("b" + os.path.splitext(a)[1]))
    shutil.copy(a, b)
    return request.param, a, b


_command = st.one_of(
    # (kind, lba, blocks, flags)
    st.tuples(st.just("w10"), st.integers(0, BLOCKS + 8), st.integers(0, 24),
              st.sampled_from([0, 0, 0x08, 0x20])),
    st.tuples(st.just("w16"), st.integers(0, BLOCKS), st.integers(1, 16), st.just(0)),
    st.tuples(st.just("short"), st.integers(0, BLOCKS - 16), st.integers(2, 16), st.just(0)),
    st.tuples(st.just("read"), st.integers(0, BLOCKS - 16), st.integers(1, 16), st.just(0)),
)


def _build(spec: list[tuple[str, int, int, int]], seed: int) -> list[tuple[bytes, bytes | None]]:
    rnd = __import__("random").Random(seed)
    cmds: list[tuple[bytes, bytes | None]] = []
    for kind, lba, n, flags in spec:
        if kind == "read":
            cmds.append((read10(lba, n), None))
        elif kind == "short":
            cmds.append((write10(lba, n), rnd.randbytes((n - 1) * BS)))
        else:
            cdb = write10(lba, n, flags) if kind == "w10" else write16(lba, n, flags)
            cmds.append((cdb, rnd.randbytes(n * BS)))
    return cmds


@given(spec=st.lists(_command, min_size=1, max_size=20), seed=st.integers(0, 1 << 16),
       touching=st.booleans())
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_merged_batches_answer_and_write_as_one_by_one(pair, spec, seed, touching):
    kind, a, b = pair
    if touching:  # make runs of writes that follow each other on the medium
        lba = spec[0][1] % (BLOCKS - 64)
        spec = [(k, lba + 8 * i, 8, f) if k == "w10" else (k, x, n, f)
                for i, (k, x, n, f) in enumerate(spec)]
    cmds = _build(spec, seed)
    merged, alone = open_unit(kind, a), open_unit(kind, b)
    try:
        for lu in (merged, alone):
            ready(lu, NEXUS)
        got = tasks_for(merged, cmds, merge=True)
        want = tasks_for(alone, cmds, merge=False)
        run_batch(got)
        run_batch(want)
        assert outcome(got) == outcome(want)
        assert all(t.started for t in got)
        assert merged.backend.pread(0, BLOCKS * BS) == alone.backend.pread(0, BLOCKS * BS)
    finally:
        merged.close()
        alone.close()


def test_touching_writes_become_one_call(image):
    lu = LogicalUnit(RawImage(image), identity())
    ready(lu, NEXUS)
    calls = []
    pwritev = lu.backend.pwritev
    lu.backend.pwritev = lambda off, parts: (calls.append((off, len(parts))), pwritev(off, parts))
    data = [os.urandom(8 * BS) for _ in range(6)]
    cmds = [(write10(100 + 8 * i, 8), d) for i, d in enumerate(data[:4])]
    cmds += [(write10(500, 8), data[4]), (write10(508, 8, flags=0x08), data[5])]  # FUA: alone
    batch = tasks_for(lu, cmds, merge=True)
    run_batch(batch)
    assert [t.result.status for t in batch] == [0] * 6
    assert calls == [(100 * BS, 4)]
    assert lu.backend.pread(100 * BS, 32 * BS) == b"".join(data[:4])
    assert lu.backend.pread(500 * BS, 16 * BS) == data[4] + data[5]
    lu.close()


def test_a_unit_attention_keeps_writes_apart(image):
    lu = LogicalUnit(RawImage(image), identity())  # the power-on attention is pending
    calls = []
    lu.backend.pwritev = lambda off, parts: calls.append(off)
    batch = tasks_for(lu, [(write10(8 * i, 8), bytes(8 * BS)) for i in range(3)], merge=True)
    run_batch(batch)
    assert calls == []
    assert batch[0].result.status == 0x02  # CHECK CONDITION: the unit attention
    lu.close()


def test_a_failing_merged_write_is_retried_command_by_command(image):
    lu = LogicalUnit(RawImage(image), identity())
    ready(lu, NEXUS)
    bad = 16 * BS  # the blocks of the third command cannot be written

    def pwritev(off, parts):
        raise OSError(5, "Input/output error")

    pwrite = lu._pwrite

    def failing(off, data):
        if off <= bad < off + len(data):
            raise OSError(5, "Input/output error")
        return pwrite(off, data)

    lu.backend.pwritev = pwritev
    lu._pwrite = failing
    data = [os.urandom(8 * BS) for _ in range(4)]
    batch = tasks_for(lu, [(write10(8 * i, 8), d) for i, d in enumerate(data)], merge=True)
    run_batch(batch)
    statuses = [t.result.status for t in batch]
    assert statuses == [0, 0, 0x02, 0]
    assert batch[2].result.sense[2] & 0x0F == 0x03  # MEDIUM ERROR (WRITE ERROR)
    for i in (0, 1, 3):
        assert lu.backend.pread(8 * i * BS, 8 * BS) == data[i]
    lu.close()
