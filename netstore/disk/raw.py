# Raw images: the virtual disk byte for byte in one file (or a block device).
# Dynamic = a sparse file, fixed = every byte allocated up front.  Extents come
# from the file system's holes (SEEK_DATA/SEEK_HOLE).
"""Raw disk images: :class:`RawImage`, :func:`create_raw`, :func:`resize_raw`."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from netstore.disk.api import SECTOR, DiskError, Extent, Progress

# Fallback zero-filling writes this much per call: big enough to be fast,
# small enough to report progress often and keep memory flat.
ZERO_CHUNK = 1 << 20
# posix_fallocate is asked for this much per call so progress can be shown.
FALLOCATE_CHUNK = 64 << 20


def _fill(fd: int, start: int, length: int, progress: Progress | None, total: int) -> None:
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
            _pwrite_all(fd, zeros, start + done)
        done += n
        if progress is not None:
            progress(done, total)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite looping over short writes."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


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
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise DiskError(f"{path}: file already exists; refusing to overwrite it") from None
    except OSError as e:
        raise DiskError(f"{path}: cannot create: {e.strerror or e}") from e
    try:
        if fixed and size:
            _fill(fd, 0, size, progress, size)
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

    The virtual size is the file size (a block device's size); a trailing
    partial 512-byte block is readable but not counted in ``num_blocks``.
    """

    format = "raw"
    uuid = None
    block_size = SECTOR

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        """Open `path`.

        Raises:
            DiskError: the file is missing or cannot be opened as asked.
        """
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags)
        except OSError as e:
            raise DiskError(f"{path}: cannot open: {e.strerror or e}") from e
        self.path = path
        self.read_only = read_only
        self.virtual_size = os.lseek(self.fd, 0, os.SEEK_END)
        self.num_blocks = self.virtual_size // SECTOR
        self._closed = False

    def __enter__(self) -> RawImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the disk.

        Raises:
            DiskError: the range is outside the disk.
        """
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise DiskError(
                f"{self.path}: read of {length} bytes at {offset} is outside the "
                f"disk ({self.virtual_size} bytes)"
            )
        data = os.pread(self.fd, length, offset)
        if len(data) == length:
            return data
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

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write `data` at `offset`.

        Raises:
            DiskError: the image is read-only or the range is outside the disk.
        """
        if self.read_only:
            raise DiskError(f"{self.path}: image is opened read-only")
        if offset < 0 or offset + len(data) > self.virtual_size:
            raise DiskError(
                f"{self.path}: write of {len(data)} bytes at {offset} is outside the "
                f"disk ({self.virtual_size} bytes)"
            )
        _pwrite_all(self.fd, data, offset)

    def discard(self, offset: int, length: int) -> None:
        """Deallocate a range (it reads as zeros afterwards); best effort."""
        if self.read_only:
            raise DiskError(f"{self.path}: image is opened read-only")
        if length <= 0:
            return
        pos = offset
        end = offset + length
        zeros = bytes(min(ZERO_CHUNK, length))
        while pos < end:
            n = min(len(zeros), end - pos)
            _pwrite_all(self.fd, zeros[:n], pos)
            pos += n

    def flush(self) -> None:
        """fsync the file: everything written is durable when this returns."""
        os.fsync(self.fd)

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
