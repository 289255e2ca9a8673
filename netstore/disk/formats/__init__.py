# The foreign image formats (VDI, VMDK, VHD, VHDX, Parallels): what their
# readers and writers share.  A reader maps the virtual disk in fixed-size
# blocks (a VDI block, a VMDK grain, a VHD/VHDX block, a Parallels cluster)
# to "here in the file", "zeros" or "compressed here"; BlockMappedImage
# turns that into pread/extents.  A writer is fed the virtual disk in
# increasing offsets (as `images.convert` copies) and emits whole blocks;
# StreamingBlockWriter does the buffering.  detect.py tells the formats apart.
"""Shared machinery of the foreign image format readers and writers."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator

from netstore.disk.api import SECTOR, DiskError, Extent, ImageFormatError, Progress

# Fixed images are preallocated in steps this large so progress moves.
PREALLOCATE_STEP = 64 * 1024 * 1024


def read_exact(fd: int, path: str, offset: int, length: int, what: str, file_size: int) -> bytes:
    """`length` bytes at `offset`, or ImageFormatError naming `what` if the file is short."""
    if offset < 0 or offset + length > file_size:
        raise ImageFormatError(
            f"{path}: {what} at offset {offset} ({length} bytes) lies past the end of the file "
            f"({file_size} bytes)"
        )
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ImageFormatError(f"{path}: {what} at offset {offset} is cut short (file truncated?)")
    return data


def open_for_reading(path: str) -> tuple[int, int]:
    """(fd, size) of `path`, opened read-only; DiskError when it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DiskError(f"{path}: cannot open: {e.strerror}") from e
    try:
        size = os.fstat(fd).st_size
    except OSError as e:
        os.close(fd)
        raise DiskError(f"{path}: cannot stat: {e.strerror}") from e
    return fd, size


def preallocate(fd: int, offset: int, length: int, progress: Progress | None) -> None:
    """Allocate [offset, offset+length) of the file (zeros), reporting progress.

    posix_fallocate where the filesystem has it; otherwise the file is only
    extended (sparse), which reads the same.
    """
    end = offset + length
    pos = offset
    if progress:
        progress(0, length)
    while pos < end:
        n = min(PREALLOCATE_STEP, end - pos)
        try:
            os.posix_fallocate(fd, pos, n)
        except (OSError, AttributeError):
            if os.fstat(fd).st_size < end:
                os.ftruncate(fd, end)
            pos = end
            break
        pos += n
        if progress:
            progress(pos - offset, length)
    if progress:
        progress(length, length)


class BlockMappedImage:
    """A read-only DiskImage whose virtual disk is cut into equal blocks.

    Subclasses set ``path, format, variant, virtual_size, uuid`` and
    ``_block_bytes`` (the mapping unit) and implement ``_block_read`` and
    ``_block_allocated``.
    """

    block_size = SECTOR
    read_only = True
    format = "?"
    variant = "?"
    uuid: str | None = None
    _block_bytes = 1 << 20

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._fd, self._file_size = open_for_reading(self.path)
        self.virtual_size = 0
        self._closed = False
        try:
            self._parse()
        except DiskError:
            self.close()
            raise
        except (struct.error, ValueError, IndexError, OverflowError, UnicodeError) as e:
            self.close()
            raise ImageFormatError(f"{self.path}: malformed {self.format} image ({e})") from e
        except BaseException:
            self.close()
            raise
        self.num_blocks = self.virtual_size // self.block_size

    # -- what subclasses provide
    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        """Bytes [within, within+length) of block `index`, or None for zeros."""
        raise NotImplementedError

    def _block_allocated(self, index: int) -> bool:
        raise NotImplementedError

    # -- helpers for subclasses
    def _read(self, offset: int, length: int, what: str) -> bytes:
        return read_exact(self._fd, self.path, offset, length, what, self._file_size)

    def _fail(self, problem: str) -> ImageFormatError:
        return ImageFormatError(f"{self.path}: {problem}")

    def _parse(self) -> None:
        """Read and check the headers and maps; set virtual_size, uuid, variant."""
        raise NotImplementedError

    # -- DiskImage
    @property
    def file_size(self) -> int:
        return self._file_size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise DiskError(
                f"{self.path}: read of {length} bytes at {offset} is outside the disk "
                f"({self.virtual_size} bytes)"
            )
        out = bytearray(length)
        bs = self._block_bytes
        pos, end = offset, offset + length
        while pos < end:
            index, within = divmod(pos, bs)
            n = min(bs - within, end - pos)
            data = self._block_read(index, within, n)
            if data is not None:
                out[pos - offset : pos - offset + n] = data
            pos += n
        return bytes(out)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        raise DiskError(f"{self.path}: {self.format} images are read-only in netstore")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extents(self) -> Iterator[Extent]:
        bs = self._block_bytes
        nblocks = -(-self.virtual_size // bs)
        start, state = 0, None
        for index in range(nblocks):
            alloc = self._block_allocated(index)
            if state is None:
                state = alloc
            elif alloc != state:
                yield Extent(start, index * bs - start, state)
                start, state = index * bs, alloc
        if state is not None and self.virtual_size > start:
            yield Extent(start, self.virtual_size - start, state)


class StreamingBlockWriter:
    """Collects writes at non-decreasing offsets into whole blocks.

    Subclasses set ``_block_bytes`` and implement ``_emit_block(index, data)``
    (data is a full block, zero-padded past the end of the disk) and
    ``_finish()``.  All-zero blocks are handed over only when ``keep_zero``.
    """

    _block_bytes = 1 << 20
    keep_zero = False

    def __init__(self, path: str, virtual_size: int) -> None:
        self.path = str(path)
        self.virtual_size = virtual_size
        self._cur: int | None = None
        self._buf = bytearray()
        self._last_emitted = -1
        self._zero = bytes(self._block_bytes)

    def _emit_block(self, index: int, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _flush_current(self) -> None:
        if self._cur is None:
            return
        data = bytes(self._buf)
        if self.keep_zero or data != self._zero:
            self._emit_block(self._cur, data)
        self._last_emitted = self._cur
        self._cur = None

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        if offset < 0 or offset + len(mv) > self.virtual_size:
            raise DiskError(f"{self.path}: write at {offset} is outside the disk")
        bs = self._block_bytes
        pos = 0
        while pos < len(mv):
            index, within = divmod(offset + pos, bs)
            n = min(bs - within, len(mv) - pos)
            if index != self._cur:
                if index <= self._last_emitted or (self._cur is not None and index < self._cur):
                    raise DiskError(f"{self.path}: this writer takes data in increasing offsets only")
                self._flush_current()
                self._cur = index
                self._buf = bytearray(bs)
            self._buf[within : within + n] = mv[pos : pos + n]
            pos += n

    def close(self) -> None:
        self._flush_current()
        self._finish()


def guid_le(raw: bytes) -> str | None:
    """A Microsoft/VirtualBox GUID (first three fields little-endian) as text; None when all zero."""
    if raw == bytes(16):
        return None
    return str(uuid.UUID(bytes_le=raw))


def guid_le_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def new_uuid() -> str:
    return str(uuid.uuid4())


def check_uuid(text: str) -> str:
    """Normalised UUID text; DiskError when it is not a UUID."""
    try:
        return str(uuid.UUID(str(text)))
    except ValueError as e:
        raise DiskError(f"{text!r} is not a UUID") from e
