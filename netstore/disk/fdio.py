# File-descriptor I/O the image formats share: pwrite looping over short
# writes, a read that never waits for the disk (preadv2 RWF_NOWAIT),
# zero-filling a range, allocating one (posix_fallocate, with progress), and
# hole punching with fallocate(2).
"""fd helpers of the disk package: :func:`create_new`, :func:`pwrite_all`,
:func:`pread_cached` (and ``_into``), :func:`write_zeroes`, :func:`fill`, :func:`punch_hole`."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from netstore.disk.api import DiskError, Progress

# Zero-filling writes this much per call: big enough to be fast, small
# enough to keep memory flat.
ZERO_CHUNK = 1 << 20
# posix_fallocate is asked for this much per call so progress can be shown.
FALLOCATE_CHUNK = 64 << 20

# preadv2's flag: fail with EAGAIN rather than wait for the disk (Linux 4.14).
RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
# What a file system says when it cannot tell (then it never will).
NO_NOWAIT = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

# fallocate(2) mode bits (linux/falloc.h): deallocate a range, keep the size.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02



def create_new(path: str | os.PathLike[str]) -> int:
    """A new image file opened for writing; an existing file is never overwritten.

    Raises:
        DiskError: the file exists, or cannot be created (the message names it).
    """
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise DiskError(f"{path}: file already exists; refusing to overwrite it") from None
    except OSError as e:
        raise DiskError(f"{path}: cannot create: {e.strerror or e}") from e

def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of `fd`, looping over short writes.

    Raises:
        OSError: the write failed (EIO when the kernel wrote nothing).
    """
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    view = memoryview(data)[n:]
    offset += n
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, f"short write at offset {offset}")
        view = view[n:]
        offset += n


class NowaitUnsupported(BlockingIOError):
    """This file system cannot read without waiting: it never will."""


def pread_cached(fd: int, length: int, offset: int) -> bytearray:
    """``length`` bytes at ``offset`` if the page cache holds them all: one
    preadv2 with RWF_NOWAIT, which never waits for the disk, into the buffer
    returned (no copy after the kernel's: it goes to the socket as it is).

    Raises:
        NowaitUnsupported: the file system cannot say (a BlockingIOError: the
            caller reads where it may wait, and stops trying this).
        BlockingIOError: not all cached (EAGAIN, or a short read).
        OSError: any other failure of the read.
    """
    if not RWF_NOWAIT:
        raise NowaitUnsupported(errno.ENOSYS, "no RWF_NOWAIT here")
    buf = bytearray(length)
    pread_cached_into(fd, buf, offset)
    return buf


def pread_cached_into(fd: int, dst: bytearray | memoryview, offset: int) -> None:
    """:func:`pread_cached` into ``dst`` (all of it), e.g. a slice of a
    bigger buffer that pieces from several files fill."""
    if not RWF_NOWAIT:
        raise NowaitUnsupported(errno.ENOSYS, "no RWF_NOWAIT here")
    try:
        n = os.preadv(fd, [dst], offset, RWF_NOWAIT)
    except OSError as e:
        if e.errno in NO_NOWAIT:
            raise NowaitUnsupported(errno.EAGAIN, "no RWF_NOWAIT here") from None
        raise
    if n != len(dst):
        raise BlockingIOError(errno.EAGAIN, "partly cached")


def write_zeroes(fd: int, offset: int, length: int) -> None:
    """Write `length` zero bytes at `offset` of `fd`, ZERO_CHUNK at a time."""
    if length <= 0:
        return
    zeros = bytes(min(length, ZERO_CHUNK))
    done = 0
    while done < length:
        k = min(len(zeros), length - done)
        pwrite_all(fd, zeros if k == len(zeros) else memoryview(zeros)[:k], offset + done)
        done += k


def fill(fd: int, start: int, length: int, progress: Progress | None, total: int) -> None:
    """Allocate [start, start+length) of `fd`, zero-filled, reporting progress.

    Uses posix_fallocate; falls back to writing zeros where the file system
    does not support it.
    """
    done = 0
    use_falloc = hasattr(os, "posix_fallocate")
    zeros = b""
    while done < length:
        if use_falloc:
            n = min(FALLOCATE_CHUNK, length - done)
            try:
                os.posix_fallocate(fd, start + done, n)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                use_falloc = False
                continue
        else:
            n = min(ZERO_CHUNK, length - done)
            if len(zeros) != n:
                zeros = bytes(n)
            pwrite_all(fd, zeros, start + done)
        done += n
        if progress is not None:
            progress(done, total)


def _libc_fallocate() -> object | None:
    # os.posix_fallocate cannot punch holes; libc's fallocate can (Linux).
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _libc_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate `length` bytes at `offset` of `fd`; they read back as zeros.

    Raises:
        OSError: EOPNOTSUPP when the file system (or this platform) cannot.
    """
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    if _FALLOCATE(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
