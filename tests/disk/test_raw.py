"""Raw images: create (dynamic/fixed), read/write, extents, resize, refusals."""

from __future__ import annotations

import os

import pytest

from netstore.disk.api import DiskError, DiskImage
from netstore.disk.raw import RawImage, create_raw, resize_raw


def test_dynamic_is_sparse_and_reads_zeros(tmp_path):
    p = str(tmp_path / "d.raw")
    create_raw(p, 8 << 20)
    assert os.path.getsize(p) == 8 << 20
    assert os.stat(p).st_blocks * 512 < 1 << 20
    with RawImage(p) as img:
        assert isinstance(img, DiskImage)
        assert img.format == "raw" and img.uuid is None
        assert img.num_blocks == (8 << 20) // 512
        assert img.pread(12345, 100) == bytes(100)
        assert [e.allocated for e in img.extents()] == [False]


def test_fixed_allocates_and_reports_progress(tmp_path):
    p = str(tmp_path / "f.raw")
    seen = []
    create_raw(p, 3 << 20, fixed=True, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (3 << 20, 3 << 20)
    assert os.stat(p).st_blocks * 512 >= 3 << 20


def test_write_read_extents(tmp_path):
    p = str(tmp_path / "d.raw")
    create_raw(p, 4 << 20)
    with RawImage(p) as img:
        img.pwrite(1 << 20, b"x" * 4096)
        img.flush()
        assert img.pread(1 << 20, 4096) == b"x" * 4096
        ext = list(img.extents())
        assert sum(e.length for e in ext) == 4 << 20
        assert any(e.allocated and e.offset <= 1 << 20 < e.offset + e.length for e in ext)
        with pytest.raises(DiskError):
            img.pwrite((4 << 20) - 10, b"y" * 11)
        with pytest.raises(DiskError):
            img.pread(-1, 1)


def test_refusals(tmp_path):
    p = str(tmp_path / "d.raw")
    create_raw(p, 1 << 20)
    with pytest.raises(DiskError, match="d.raw"):
        create_raw(p, 1 << 20)
    with pytest.raises(DiskError, match="shrink"):
        resize_raw(p, 1000)
    with RawImage(p, read_only=True) as img, pytest.raises(DiskError, match="read-only"):
        img.pwrite(0, b"a")


def test_resize_keeps_data(tmp_path):
    p = str(tmp_path / "d.raw")
    create_raw(p, 1 << 20)
    with RawImage(p) as img:
        img.pwrite(100, b"keep")
    resize_raw(p, 2 << 20)
    with RawImage(p) as img:
        assert img.virtual_size == 2 << 20
        assert img.pread(100, 4) == b"keep"
        assert img.pread((2 << 20) - 4, 4) == bytes(4)
