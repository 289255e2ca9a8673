# Block backends: the BlockBackend protocol the logical unit reads and writes
# through, and RawFileBackend on a raw image file or a block device. Other
# image formats (qcow2 ...) implement the same protocol elsewhere.
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

DEFAULT_BLOCK_SIZE = 512
# Logical block sizes SBC-3 initiators handle in practice.
SUPPORTED_BLOCK_SIZES = (512, 1024, 2048, 4096)


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

    def flush(self) -> None:
        """fdatasync the file: durable when this returns."""
        os.fdatasync(self.fd)

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)
