# tests/disk/test_qcow2_nowait.py - reads of a qcow2 chain that never wait
# (Qcow2Image.pread_nowait): whatever it answers is what pread reads, byte
# for byte, at any offset and length (hypothesis, over a 3-layer chain with
# data in every layer and reads across clusters); it
# answers a cached in-cluster read of every kind of cluster, and refuses
# (BlockingIOError) what would wait: pages not cached, an L2 table not in
# memory, a compressed cluster, a lock a writer holds.
"""Tests for Qcow2Image.pread_nowait."""

from __future__ import annotations

import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk.qcow2 import Qcow2Image, create_qcow2
from netstore.disk.raw import RawImage, create_raw
from tests.disk.test_qcow2 import random_writes
from tests.peers import needs_qemu, qemu_img, qemu_io

MiB = 1 << 20
SIZE = 4 * MiB
CLUSTER = 65536


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def layer_of(top: Qcow2Image, vc: int) -> str:
    """The file of the chain virtual cluster ``vc`` is read from."""
    img = top
    while isinstance(img, Qcow2Image):
        with img._lock:
            if img._entry(vc):
                return os.path.basename(img.path)
        img = img.backing
    return "base.raw"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """base.raw <- mid.qcow2 <- top.qcow2, data in each, and its model."""
    d = tmp_path_factory.mktemp("chain")
    model = bytearray(SIZE)
    base = str(d / "base.raw")
    create_raw(base, SIZE)
    with RawImage(base) as r:
        random_writes(r, model, 20, seed=1)
    create_qcow2(str(d / "mid.qcow2"), None, backing="base.raw", cluster_size=CLUSTER)
    create_qcow2(str(d / "top.qcow2"), None, backing="mid.qcow2", cluster_size=CLUSTER)
    with Qcow2Image(str(d / "mid.qcow2")) as mid:
        random_writes(mid, model, 20, seed=2, max_len=50_000)
    with Qcow2Image(str(d / "top.qcow2")) as top:
        random_writes(top, model, 20, seed=3, max_len=50_000)
    return d, model


@given(offset=st.integers(0, SIZE - 1), length=st.integers(1, 3 * CLUSTER))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_what_it_answers_is_what_pread_reads(chain, offset, length):
    d, model = chain
    length = min(length, SIZE - offset)
    with Qcow2Image(str(d / "top.qcow2"), read_only=True) as top:
        top.pread(offset, length)  # the tables and pages are in memory now
        # everything is in memory now: it answers, and right
        assert top.pread_nowait(offset, length) == model[offset:offset + length]


def test_each_kind_of_cluster_answers_when_cached_and_waits_when_not(chain):
    d, model = chain
    rng = random.Random(5)
    with Qcow2Image(str(d / "top.qcow2"), read_only=True) as top:
        kinds = {}
        for vc in range(SIZE // CLUSTER):
            kinds.setdefault(layer_of(top, vc), vc)
        assert set(kinds) >= {"top.qcow2", "mid.qcow2", "base.raw"}, kinds
        for where, vc in kinds.items():
            off = vc * CLUSTER + rng.randrange(CLUSTER - 4096)
            top.pread(off, 4096)
            assert top.pread_nowait(off, 4096) == model[off:off + 4096], where
        for name in ("top.qcow2", "mid.qcow2", "base.raw"):
            evict(str(d / name))
        waited = 0
        for vc in kinds.values():
            off = vc * CLUSTER
            try:
                assert top.pread_nowait(off, 4096) == model[off:off + 4096]
            except BlockingIOError:
                waited += 1
        if not waited:
            pytest.skip("the kernel kept every page (fadvise DONTNEED not taken)")


def test_an_l2_table_not_in_memory_waits(chain):
    d, model = chain
    with Qcow2Image(str(d / "top.qcow2"), read_only=True, cache_clusters=1) as top:
        # 4 MiB of 64 KiB clusters: one L2 table maps it all; drop it
        top._l2_cache.clear()
        top._set_last(-1, bytearray())
        with pytest.raises(BlockingIOError):
            top.pread_nowait(0, 512)
        assert top.pread(0, 512) == model[:512]
        assert top.pread_nowait(0, 512) == model[:512]


def test_a_writer_holding_the_tables_makes_it_wait(chain):
    d, model = chain
    with Qcow2Image(str(d / "top.qcow2"), read_only=True) as top:
        top.pread(0, 512)
        top._set_last(-1, bytearray())  # the next lookup needs the lock
        held, release = threading.Event(), threading.Event()

        def writer():
            with top._lock:
                held.set()
                release.wait(5)

        t = threading.Thread(target=writer)
        t.start()
        held.wait(5)
        try:
            with pytest.raises(BlockingIOError):
                top.pread_nowait(0, 512)
        finally:
            release.set()
            t.join()
        assert top.pread_nowait(0, 512) == model[:512]


@needs_qemu
def test_compressed_clusters_wait_and_zero_clusters_answer(tmp_path):
    src = str(tmp_path / "src.raw")
    with open(src, "wb") as f:
        f.write(bytes([7]) * CLUSTER * 4)
    c = str(tmp_path / "c.qcow2")
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", src, c)
    qemu_io(c, "write -z 65536 65536")  # a zero cluster
    with Qcow2Image(c, read_only=True) as img:
        img.pread(0, 4 * CLUSTER)
        with pytest.raises(BlockingIOError):
            img.pread_nowait(0, 4096)  # compressed: inflating is the thread's work
        assert img.pread_nowait(CLUSTER + 100, 4096) == bytes(4096)


# ---- the chain's cluster map after writes --------------------------------------

_ops = st.lists(
    st.tuples(st.sampled_from(["write", "discard", "read"]), st.integers(0, SIZE - 1),
              st.integers(1, 2 * CLUSTER)),
    min_size=1, max_size=25)


@given(ops=_ops)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reads_after_writes_and_discards_see_them(chain, tmp_path_factory, ops):
    # a fresh top over the chain; every read that answers without waiting
    # answers the bytes written last, though the clusters it maps were
    # resolved (and kept) before a write or discard changed them
    d, model = chain
    model = bytearray(model)
    work = tmp_path_factory.mktemp("over")
    path = str(work / "over.qcow2")
    create_qcow2(path, None, backing=str(d / "top.qcow2"), cluster_size=CLUSTER)
    rng = random.Random(len(ops))
    with Qcow2Image(path) as over:
        over.pread(0, SIZE)  # tables and pages in memory: reads answer now
        for op, off, n in ops:
            n = min(n, SIZE - off)
            if op == "write":
                data = rng.randbytes(n)
                over.pwrite(off, data)
                model[off:off + n] = data
            elif op == "discard":
                over.discard(off, n)
                first = -(-off // CLUSTER) * CLUSTER
                last = (off + n) // CLUSTER * CLUSTER if off + n < SIZE else SIZE
                if first < last:
                    model[first:last] = bytes(last - first)
            try:
                got = over.pread_nowait(off, n)
            except BlockingIOError:
                got = over.pread(off, n)
            assert got == model[off:off + n], (op, off, n)


def test_a_discarded_cluster_reads_as_zeros_after_it_was_read(chain, tmp_path):
    d, model = chain
    path = str(tmp_path / "over.qcow2")
    create_qcow2(path, None, backing=str(d / "top.qcow2"), cluster_size=CLUSTER)
    with Qcow2Image(path) as over:
        over.pread(0, SIZE)
        for vc in (3, 17, 40):  # each answered from a lower layer first
            off = vc * CLUSTER
            assert over.pread_nowait(off, 4096) == model[off:off + 4096]
            assert over.pread_nowait(off, CLUSTER + 4096) == model[off:off + CLUSTER + 4096]
            over.discard(off, CLUSTER)
            assert over.pread_nowait(off, 4096) == bytes(4096)
            assert over.pread_nowait(off, CLUSTER + 4096) == (
                bytes(CLUSTER) + model[off + CLUSTER:off + CLUSTER + 4096])
