# Raw images: the virtual disk byte for byte in one file (or a block device).
# Dynamic = a sparse file, fixed = every byte allocated up front.  Extents come
# from the file system's holes (SEEK_DATA/SEEK_HOLE).  RawImage is both the
# image the disk tools open and a logical unit's backend (any block size,
# fdatasync flush, discard by hole punching, page-cache-only reads).
"""Raw disk images: :class:`RawImage`, :func:`create_raw`, :func:`resize_raw`."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from netstore.disk.api import (
    SECTOR,
    DiskError,
    Extent,
    ImageOpenError,
    Progress,
    ReadOnlyImageError,
)
from netstore.disk.fdio import (
    RWF_NOWAIT,
    NowaitUnsupported,
    create_new,
    fill,
    pread_cached_into,
    punch_hole,
    pwrite_all,
    write_zeroes,
)

# Buffers one pwritev takes (Linux's UIO_MAXIOV).
IOV_MAX = 1024

# Logical block sizes a raw image can be opened with (those SBC-3 initiators
# handle in practice); 2048 is a CD/DVD's.
SUPPORTED_BLOCK_SIZES = (512, 1024, 2048, 4096)
# A file system that cannot punch holes says so with one of these.
_NO_PUNCH = (errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV)


def create_raw(
    path: str, size: int, *, fixed: bool = False, progress: Progress | None = None
) -> None:
    """Create a raw image of `size` bytes.

    Args:
        path: the new file; it must not exist.
        size: virtual size in bytes (>= 0).
        fixed: allocate every byte now (slow for big disks) instead of a
            sparse file that grows as it is written.
        progress: called as (bytes done, bytes total) while a fixed image fills.

    Raises:
        DiskError: the file exists, the size is negative, or the file system
            refused (the message names the file). A partly created file is removed.
    """
    if size < 0:
        raise DiskError(f"{path}: size must not be negative ({size})")
    fd = create_new(path)
    try:
        if fixed and size:
            fill(fd, 0, size, progress, size)
        os.ftruncate(fd, size)
        if progress is not None and not (fixed and size):
            progress(size, size)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise DiskError(f"{path}: cannot create: {e.strerror or e}") from e
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def resize_raw(path: str, new_size: int) -> None:
    """Grow the raw image `path` to `new_size` bytes, data kept.

    Raises:
        DiskError: the new size is smaller than the current one (shrinking
            would lose data), or the file cannot be grown.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise DiskError(f"{path}: cannot open: {e.strerror or e}") from e
    try:
        cur = os.lseek(fd, 0, os.SEEK_END)
        if new_size < cur:
            raise DiskError(
                f"{path}: shrinking from {cur} to {new_size} bytes would lose data; refused"
            )
        if new_size > cur:
            os.ftruncate(fd, new_size)
            os.fsync(fd)
    except OSError as e:
        raise DiskError(f"{path}: cannot resize: {e.strerror or e}") from e
    finally:
        os.close(fd)


class RawImage:
    """An opened raw image (a :class:`~netstore.disk.api.DiskImage`).

    The virtual size is the file size (lseek(SEEK_END), so a block device
    reports its own); a trailing partial block is readable but not counted
    in ``num_blocks``.
    """

    format = "raw"
    uuid = None

    def __init__(self, path: str, *, read_only: bool = False, block_size: int = SECTOR) -> None:
        """Open `path` with logical blocks of `block_size` bytes.

        Raises:
            ImageOpenError: the file is missing or cannot be opened as asked,
                or the block size is not one of SUPPORTED_BLOCK_SIZES.
        """
        if block_size not in SUPPORTED_BLOCK_SIZES:
            raise ImageOpenError(
                path, f"block size {block_size} not one of {SUPPORTED_BLOCK_SIZES}"
            )
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise ImageOpenError(path, e.strerror or str(e)) from e
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        except OSError as e:
            os.close(fd)
            raise ImageOpenError(path, e.strerror or str(e)) from e
        self.fd = fd
        self.path = path
        self.read_only = read_only
        self.block_size = block_size
        self.virtual_size = size
        self.num_blocks = size // block_size
        # Holes are punched to the byte (the file system zeroes partial
        # blocks itself): no unit the SCSI layer must zero around.
        self.discard_granularity = block_size
        self._nowait = RWF_NOWAIT != 0  # cleared when the file system refuses it
        self._closed = False

    def __enter__(self) -> RawImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _outside(self, what: str, offset: int, length: int) -> DiskError:
        return DiskError(
            f"{self.path}: {what} of {length} bytes at {offset} is outside the "
            f"disk ({self.virtual_size} bytes)"
        )

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the disk.

        Raises:
            DiskError: the range is outside the disk.
        """
        try:
            data = os.pread(self.fd, length, offset)
        except (OSError, ValueError):
            if offset < 0 or length < 0:
                raise self._outside("read", offset, length) from None
            raise
        if len(data) == length:
            return data
        # Checked only here, off the fast path: a read inside the file is
        # never short but at its end (or when the kernel splits it).
        if offset + length > self.virtual_size:
            raise self._outside("read", offset, length)
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(self.fd, length - got, offset + got)
            if not more:  # the file shrank under us: what is gone reads as zeros
                parts.append(bytes(length - got))
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def pread_nowait(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) if they are all in the page cache.

        One preadv2 with RWF_NOWAIT: it never waits on the disk, so a
        caller on an event loop may try it before sending the read to a
        worker thread.

        Raises:
            BlockingIOError: not all cached (EAGAIN, or a short read), or
                the file system cannot say (then always: use :meth:`pread`).
            DiskError: the range is outside the disk.
        """
        if length < 0:
            raise self._outside("read", offset, length)
        buf = bytearray(length)
        self.pread_nowait_into(memoryview(buf), offset)
        return buf

    def pread_nowait_into(self, dst: memoryview, offset: int) -> None:
        """:meth:`pread_nowait` of ``len(dst)`` bytes, into ``dst``."""
        if not self._nowait:
            raise BlockingIOError(errno.EAGAIN, "no RWF_NOWAIT here")
        if offset < 0 or offset + len(dst) > self.virtual_size:
            raise self._outside("read", offset, len(dst))
        try:
            pread_cached_into(self.fd, dst, offset)
        except NowaitUnsupported:
            self._nowait = False
            raise

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data` at `offset`.

        Raises:
            ReadOnlyImageError: the image is opened read-only.
            DiskError: the range is outside the disk.
            OSError: the file system refused.
        """
        if offset < 0 or offset + len(data) > self.virtual_size:
            if self.read_only:
                raise ReadOnlyImageError(f"{self.path}: image is opened read-only")
            raise self._outside("write", offset, len(data))
        try:
            n = os.pwrite(self.fd, data, offset)
        except OSError:
            if self.read_only:  # the fd is O_RDONLY: EBADF
                raise ReadOnlyImageError(f"{self.path}: image is opened read-only") from None
            raise
        if n != len(data):
            pwrite_all(self.fd, memoryview(data)[n:], offset + n)

    def pwritev(self, offset: int, parts: list[bytes | bytearray | memoryview]) -> None:
        """Write ``parts`` one after another from ``offset``, with one call
        (pwritev) where the kernel takes it all; as :meth:`pwrite`."""
        total = sum(len(p) for p in parts)
        if (offset < 0 or offset + total > self.virtual_size or self.read_only
                or len(parts) > IOV_MAX):
            self.pwrite(offset, b"".join(parts))  # says what is wrong
            return
        n = os.pwritev(self.fd, parts, offset)
        if n != total:
            pwrite_all(self.fd, memoryview(b"".join(parts))[n:], offset + n)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Write `length` zero bytes at `offset` (they stay allocated)."""
        if self.read_only:
            raise ReadOnlyImageError(f"{self.path}: image is opened read-only")
        write_zeroes(self.fd, offset, length)

    def discard(self, offset: int, length: int) -> None:
        """Deallocate `length` bytes at `offset`: they read back as zeros and,
        where whole file-system blocks are covered, take no space.  Where the
        file system cannot punch holes the range is written with zeros, so
        reads of it return zeros either way.

        Raises:
            ReadOnlyImageError: the image is opened read-only.
            OSError: the file system refused.
        """
        if self.read_only:
            raise ReadOnlyImageError(f"{self.path}: image is opened read-only")
        if length <= 0:
            return
        try:
            punch_hole(self.fd, offset, length)
            return
        except OSError as e:
            if e.errno not in _NO_PUNCH:
                raise
        write_zeroes(self.fd, offset, length)

    def flush(self) -> None:
        """fdatasync the file: everything written is durable when this returns."""
        os.fdatasync(self.fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def extents(self) -> Iterator[Extent]:
        """Data and hole runs of the file, in order, covering the whole disk.

        Where the file system cannot tell holes, the whole disk is one
        allocated extent.
        """
        size = self.virtual_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos: a hole to the end
                    yield Extent(pos, size - pos, False)
                    return
                yield Extent(pos, size - pos, True)
                return
            data = min(data, size)
            if data > pos:
                yield Extent(pos, data - pos, False)
            if data >= size:
                return
            try:
                hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), size)
            except OSError:
                hole = size
            yield Extent(data, hole - data, True)
            pos = hole
