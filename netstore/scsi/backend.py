# Block backends: the BlockBackend protocol the logical unit reads and writes
# through, and RawFileBackend on a raw image file or a block device. Other
# image formats (qcow2 ...) implement the same protocol elsewhere.
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Protocol, runtime_checkable

DEFAULT_BLOCK_SIZE = 512
# Logical block sizes SBC-3 initiators handle in practice.
SUPPORTED_BLOCK_SIZES = (512, 1024, 2048, 4096)


# fallocate(2) mode bits (linux/falloc.h): deallocate a range, keep the size.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


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


class BackendError(Exception):
    """A block backend could not be opened or used."""


class BackendOpenError(BackendError):
    """The image file or device is missing, unreadable or unusable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot open disk image {path!r}: {reason}")
        self.path = path
        self.reason = reason


@runtime_checkable
class BlockBackend(Protocol):
    """What a logical unit needs from its storage: byte-addressed I/O."""

    block_size: int
    num_blocks: int
    read_only: bool

    def pread(self, offset: int, length: int) -> bytes:
        """Read `length` bytes at byte `offset` (both within the device)."""
        ...

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data` at byte `offset`."""
        ...

    def flush(self) -> None:
        """Make every completed write durable before returning."""
        ...

    def close(self) -> None:
        """Release the backend; no call may follow."""
        ...

    # Optional: `discard(offset, length)` deallocates a byte range, which then
    # reads back as zeros. A logical unit is thin-provisioned (UNMAP, LBPME)
    # only on a backend that has it.


class RawFileBackend:
    """BlockBackend on a raw image file or a block device.

    The size comes from lseek(SEEK_END) so block devices report theirs; a
    trailing partial block is not exposed.
    """

    __slots__ = ("path", "fd", "block_size", "num_blocks", "read_only", "_closed")

    def __init__(
        self, path: str, *, read_only: bool = False, block_size: int = DEFAULT_BLOCK_SIZE
    ) -> None:
        """Open `path`.

        Raises:
            BackendOpenError: the file is missing, unreadable, or the block
                size is not supported.
        """
        if block_size not in SUPPORTED_BLOCK_SIZES:
            raise BackendOpenError(
                path, f"block size {block_size} not one of {SUPPORTED_BLOCK_SIZES}"
            )
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise BackendOpenError(path, e.strerror or str(e)) from e
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        except OSError as e:
            os.close(fd)
            raise BackendOpenError(path, e.strerror or str(e)) from e
        self.path = path
        self.fd = fd
        self.block_size = block_size
        self.num_blocks = size // block_size
        self.read_only = read_only
        self._closed = False

    def pread(self, offset: int, length: int) -> bytes:
        """Read `length` bytes at `offset`; short reads past EOF are zero-filled."""
        data = os.pread(self.fd, length, offset)
        if len(data) == length:
            return data
        # A short read: the kernel may split large reads; loop, then pad.
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(self.fd, length - got, offset + got)
            if not more:
                parts.append(bytes(length - got))
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data` at `offset`, looping over short writes."""
        n = os.pwrite(self.fd, data, offset)
        total = len(data)
        if n == total:
            return
        view = memoryview(data)
        while n < total:
            w = os.pwrite(self.fd, view[n:], offset + n)
            if w <= 0:
                raise OSError(f"short write to {self.path!r} at offset {offset + n}")
            n += w

    def discard(self, offset: int, length: int) -> None:
        """Punch a hole over `length` bytes at `offset`: they read back as
        zeros and, where whole file-system blocks are covered, take no space.
        Where the file system cannot punch holes, the range is written with
        zeros instead, so reads of it return zeros either way."""
        try:
            punch_hole(self.fd, offset, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV):
                raise
        zeros = bytes(min(length, 1 << 20))
        done = 0
        while done < length:
            k = min(len(zeros), length - done)
            self.pwrite(offset + done, zeros if k == len(zeros) else zeros[:k])
            done += k

    def flush(self) -> None:
        """fdatasync the file: durable when this returns."""
        os.fdatasync(self.fd)

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)
