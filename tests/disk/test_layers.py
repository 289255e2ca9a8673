"""The layer API: create_child, freeze, discard, merge_into_parent,
merge_parent_into_child, chain; results checked by qemu-img."""

from __future__ import annotations

import os
import random

import pytest

from netstore.disk import layers
from netstore.disk.api import DiskError
from netstore.disk.qcow2 import Qcow2Image, create_qcow2, probe_qcow2
from netstore.disk.raw import RawImage, create_raw
from tests.peers import needs_qemu, qemu_check, qemu_img, qemu_info_chain, qemu_read_raw

pytestmark = needs_qemu
MiB = 1 << 20


def scribble(path, model, seed, n=15):
    rng = random.Random(seed)
    img = Qcow2Image(path) if path.endswith("qcow2") else RawImage(path)
    with img:
        for _ in range(n):
            off = rng.randrange(len(model))
            k = min(rng.randrange(1, 150_000), len(model) - off)
            d = rng.randbytes(k)
            img.pwrite(off, d)
            model[off : off + k] = d


@pytest.mark.parametrize("base_fmt", ["raw", "qcow2"])
def test_child_freeze_chain_merge(tmp_path, base_fmt):
    base = str(tmp_path / f"base.{base_fmt}")
    (create_raw if base_fmt == "raw" else create_qcow2)(base, 4 * MiB)
    model = bytearray(4 * MiB)
    scribble(base, model, 1)
    snap1 = str(tmp_path / "snap1.qcow2")
    layers.create_child(base, snap1)
    info = probe_qcow2(snap1)
    assert info.backing_file == f"base.{base_fmt}" and info.backing_format == base_fmt
    assert info.virtual_size == 4 * MiB
    scribble(snap1, model, 2)
    top = str(tmp_path / "sub" / "top.qcow2")
    os.mkdir(tmp_path / "sub")
    layers.freeze(snap1, top)
    assert probe_qcow2(top).backing_file == str(tmp_path / "snap1.qcow2")  # outside: absolute
    scribble(top, model, 3)
    assert layers.chain(top) == [top, snap1, base]
    chain = qemu_info_chain(top)
    assert len(chain) == 3 and chain[0]["backing-filename-format"] == "qcow2"
    for p in (top, snap1):
        qemu_check(p)
    assert qemu_read_raw(top, str(tmp_path)) == model

    # Delete the snapshot below the top: fold snap1 into top, rebase onto base.
    layers.merge_parent_into_child(top)
    assert [os.path.realpath(p) for p in layers.chain(top)] == [top, base]
    assert probe_qcow2(top).backing_file == base  # outside sub/: absolute
    assert probe_qcow2(top).backing_format == base_fmt
    qemu_check(top)
    assert qemu_read_raw(top, str(tmp_path)) == model
    layers.discard(snap1)
    assert not os.path.exists(snap1)

    # Commit the top into the base.
    layers.merge_into_parent(top)
    assert not os.path.exists(top)
    if base_fmt == "qcow2":
        qemu_check(base)
    assert qemu_read_raw(base, str(tmp_path)) == model


def test_merge_keeps_zeroed_clusters_zero(tmp_path):
    base = str(tmp_path / "b.qcow2")
    create_qcow2(base, MiB, cluster_size=4096)
    with Qcow2Image(base) as img:
        img.pwrite(0, b"\x99" * MiB)
    child = str(tmp_path / "c.qcow2")
    layers.create_child(base, child)
    with Qcow2Image(child) as img:
        img.discard(0, 65536 * 2)
        img.pwrite(300_000, b"abc")
    layers.merge_into_parent(child)
    qemu_check(base)
    with Qcow2Image(base, read_only=True) as img:
        assert img.pread(0, 131072) == bytes(131072)
        assert img.pread(300_000, 3) == b"abc"
        assert img.pread(131072, 4) == b"\x99" * 4


def test_merge_grows_parent(tmp_path):
    base = str(tmp_path / "b.raw")
    create_raw(base, MiB)
    child = str(tmp_path / "c.qcow2")
    create_qcow2(child, 3 * MiB, backing="b.raw")
    with Qcow2Image(child) as img:
        img.pwrite(2 * MiB, b"tail")
    layers.merge_into_parent(child)
    assert os.path.getsize(base) == 3 * MiB
    with RawImage(base) as r:
        assert r.pread(2 * MiB, 4) == b"tail"


def test_refusals(tmp_path):
    base = str(tmp_path / "b.qcow2")
    create_qcow2(base, MiB)
    with pytest.raises(DiskError, match="not a differencing layer"):
        layers.discard(base)
    with pytest.raises(DiskError, match="not a differencing layer"):
        layers.merge_into_parent(base)
    assert os.path.exists(base)
    raw = str(tmp_path / "r.raw")
    create_raw(raw, MiB)
    with pytest.raises(DiskError):
        layers.discard(raw)
    with pytest.raises(DiskError, match="not found"):
        layers.create_child(str(tmp_path / "nope"), str(tmp_path / "c.qcow2"))
    child = str(tmp_path / "c.qcow2")
    layers.create_child(raw, child)
    with pytest.raises(DiskError, match="exists"):
        layers.create_child(raw, child)
    with pytest.raises(DiskError, match="not a qcow2 layer"):
        layers.merge_parent_into_child(child)


def test_chain_loop_detected(tmp_path):
    a, b = str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")
    create_qcow2(a, MiB)
    layers.create_child(a, b)
    qemu_img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a)
    with pytest.raises(DiskError, match="loop"):
        layers.chain(b)
