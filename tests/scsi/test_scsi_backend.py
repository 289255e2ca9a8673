# A logical unit's backends: the raw image (size, I/O at byte offsets, flush,
# typed open and write errors, hole punching) and a qcow2 image, which says
# its own discard granularity.
from __future__ import annotations

import os
import struct

import pytest

from netstore.disk.api import DiskError, DiskImage, ImageOpenError, ReadOnlyImageError
from netstore.disk.qcow2 import Qcow2Image, create_qcow2
from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit
from tests.scsi.scsi_cdb import NEXUS, good, rw10
from tests.scsi.units import identity, ready


def test_size_and_io(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(4096 + 100))  # trailing partial block is not exposed
    b = RawImage(str(p))
    assert (b.block_size, b.num_blocks, b.read_only) == (512, 8, False)
    b.pwrite(512, b"x" * 1024)
    b.pwrite(100, memoryview(b"abc"))
    b.flush()
    assert b.pread(512, 1024) == b"x" * 1024
    assert b.pread(100, 3) == b"abc"
    assert isinstance(b.fd, int)
    b.close()
    b.close()
    data = p.read_bytes()
    assert data[512:1536] == b"x" * 1024 and data[100:103] == b"abc"


def test_block_size_4096(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(3 * 4096))
    assert RawImage(str(p), block_size=4096).num_blocks == 3


def test_missing_file_names_path(tmp_path):
    missing = str(tmp_path / "nope.img")
    with pytest.raises(ImageOpenError) as ei:
        RawImage(missing)
    assert isinstance(ei.value, DiskError)
    assert missing in str(ei.value)


def test_bad_block_size(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    with pytest.raises(DiskError):
        RawImage(str(p), block_size=500)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    p.chmod(0)
    with pytest.raises(ImageOpenError, match="d.img"):
        RawImage(str(p))


def test_read_only_refuses_os_write(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    b = RawImage(str(p), read_only=True)
    assert b.read_only
    # an OSError too, so the SCSI layer's OSError -> WRITE ERROR mapping holds
    with pytest.raises(ReadOnlyImageError) as caught:
        b.pwrite(0, b"x")
    assert isinstance(caught.value, OSError)
    assert p.read_bytes() == bytes(512)
    b.close()


def test_one_raw_class(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(4096))
    assert RawImage is RawImage
    with RawImage(str(p)) as b:
        assert isinstance(b, DiskImage)
        assert b.discard_granularity == b.block_size == 512


def test_read_only_write_is_a_disk_error_and_an_os_error(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(4096))
    with RawImage(str(p), read_only=True) as b:
        for call in (lambda: b.pwrite(0, b"x"), lambda: b.discard(0, 512)):
            with pytest.raises(ReadOnlyImageError, match="read-only") as ei:
                call()
            assert isinstance(ei.value, DiskError) and isinstance(ei.value, OSError)


def test_range_outside_the_disk_refused(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(4096))
    with RawImage(str(p)) as b:
        with pytest.raises(DiskError, match="outside"):
            b.pwrite(4090, b"x" * 10)
        with pytest.raises(DiskError, match="outside"):
            b.pread(4090, 10)
        assert os.path.getsize(p) == 4096


def test_write_zeroes_and_discard(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(b"x" * 65536)
    with RawImage(str(p)) as b:
        b.write_zeroes(100, 1000)
        assert b.pread(0, 1200) == b"x" * 100 + bytes(1000) + b"x" * 100
        b.discard(8192, 16384)
        assert b.pread(8192, 16384) == bytes(16384)
        assert b.pread(8191, 1) == b"x" and b.pread(24576, 1) == b"x"


def _unmap(lu, lba: int, n: int) -> None:
    body = struct.pack(">QI4x", lba, n)
    params = struct.pack(">HH4x", 6 + len(body), len(body)) + body
    good(lu.execute(NEXUS, struct.pack(">BB4xBHB", 0x42, 0, 0, len(params), 0), params))


def test_qcow2_says_its_discard_granularity(tmp_path):
    # No one sets the granularity from outside: the image says it, and the
    # unit zeroes the partial clusters an UNMAP leaves at its ends.
    p = str(tmp_path / "d.qcow2")
    create_qcow2(p, 1 << 20, cluster_size=4096)
    img = Qcow2Image(p)
    assert img.discard_granularity == 4096
    lu = LogicalUnit(img, identity(), thin=True)
    ready(lu, NEXUS)
    good(lu.execute(NEXUS, rw10(0x2A, 0, 32), b"y" * 32 * 512))
    _unmap(lu, 3, 20)  # blocks 3..22 of 8-block clusters: 1 whole, parts of 0 and 2
    data = good(lu.execute(NEXUS, rw10(0x28, 0, 32), None))
    assert data == b"y" * 3 * 512 + bytes(20 * 512) + b"y" * 9 * 512
    lu.close()


def test_raw_pread_nowait_answers_from_the_page_cache_only(tmp_path):
    path = tmp_path / "cached.img"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    img = RawImage(str(path))
    try:
        assert img.pread(0, len(data)) == data  # every page cached now
        assert img.pread_nowait(4096, 8192) == data[4096:12288]
        with pytest.raises(DiskError):
            img.pread_nowait(len(data) - 512, 1024)
        os.fsync(img.fd)
        os.posix_fadvise(img.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            img.pread_nowait(512 * 1024, 4096)
        except BlockingIOError:
            pass  # not cached: the caller must read where it may wait
        else:
            pytest.skip("the kernel kept the pages")
        assert img.pread(512 * 1024, 4096) == data[512 * 1024:512 * 1024 + 4096]
    finally:
        img.close()
