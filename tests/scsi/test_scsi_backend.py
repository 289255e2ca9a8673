# RawFileBackend: size, I/O at byte offsets, flush, typed open errors.
from __future__ import annotations

import os

import pytest

from netstore.scsi import BackendError, BackendOpenError, RawFileBackend


def test_size_and_io(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(4096 + 100))  # trailing partial block is not exposed
    b = RawFileBackend(str(p))
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
    assert RawFileBackend(str(p), block_size=4096).num_blocks == 3


def test_missing_file_names_path(tmp_path):
    missing = str(tmp_path / "nope.img")
    with pytest.raises(BackendOpenError) as ei:
        RawFileBackend(missing)
    assert isinstance(ei.value, BackendError)
    assert missing in str(ei.value)


def test_bad_block_size(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    with pytest.raises(BackendError):
        RawFileBackend(str(p), block_size=500)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    p.chmod(0)
    with pytest.raises(BackendOpenError, match="d.img"):
        RawFileBackend(str(p))


def test_read_only_refuses_os_write(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(bytes(512))
    b = RawFileBackend(str(p), read_only=True)
    assert b.read_only
    with pytest.raises(OSError):
        b.pwrite(0, b"x")
    b.close()
