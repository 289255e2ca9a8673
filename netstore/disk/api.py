# The contracts between netstore's disk code and its users: what an opened
# image offers (read, write, extents) -- the one protocol of every format and
# of a SCSI logical unit's backend -- what probing learns, and the errors a
# user can meet.  Implementations live in qcow2/, raw.py and formats/; the
# registry and the SCSI layer only see these names.
"""Interfaces of the disk package.

An *image* is one file in one format.  Opened, it is a :class:`DiskImage`:
it reads (and, for raw and qcow2, writes) byte ranges of the virtual disk and
tells which ranges hold data.  A qcow2 image with a backing file reads through
its chain.  An opened image is directly a SCSI logical unit's backend: the
unit uses ``pread``/``pwrite``/``flush``/``close``/``block_size``/
``num_blocks``/``read_only``, and ``discard``/``discard_granularity`` where
the format can deallocate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SECTOR = 512

# Progress callback of long operations: (bytes done, bytes total).
Progress = Callable[[int, int], None]


class DiskError(Exception):
    """A disk operation failed in a way the user can act on; the message says how."""


class ImageFormatError(DiskError):
    """The file is not a valid image of the format it claims, or is damaged.

    The message names the file and what is wrong ("disk.vdi: block map entry
    17 points past the end of the file").
    """


class UnsupportedImageError(DiskError):
    """A valid image using a feature netstore does not implement (named)."""


class ImageOpenError(DiskError):
    """The image file or device is missing, unreadable or unusable as asked."""

    def __init__(self, path: str, reason: str) -> None:
        # The wording the iSCSI service has always given (config errors quote it).
        super().__init__(f"cannot open disk image {path!r}: {reason}")
        self.path = path
        self.reason = reason


class ReadOnlyImageError(DiskError, OSError):
    """A write or discard on an image opened read-only.

    An OSError too, so the SCSI layer, which maps OSError from its backend
    to a sense code, treats it as the write error it is.
    """


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of the virtual disk: allocated (holds data here or in a backing
    file) or not (reads as zeros)."""

    offset: int
    length: int
    allocated: bool


@runtime_checkable
class DiskImage(Protocol):
    """An opened image file (and, for qcow2, its backing chain).

    Optional members, present where the format has them (raw, qcow2):
    ``discard(offset, length)`` deallocates a byte range, which then reads
    back as zeros -- a logical unit is thin-provisioned (UNMAP, LBPME) only
    on an image that has it; ``discard_granularity`` (bytes) is the unit
    ``discard`` frees whole, the SCSI layer zeroing the partial units at the
    ends of a range; ``fd`` (raw) is the file for read-ahead hints.
    """

    path: str
    format: str  # "raw", "qcow2", "vdi", "vmdk", "vhd", "vhdx"
    virtual_size: int  # bytes
    block_size: int  # 512: the LUN block size
    num_blocks: int  # virtual_size // block_size
    read_only: bool
    uuid: str | None  # the UUID stored in the image, when the format has one

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes of the virtual disk; unallocated ranges read as zeros."""
        ...

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data`; raises DiskError on a read-only image or
        format, OSError when the file system refuses."""
        ...

    def flush(self) -> None:
        """Everything written so far is durable when this returns."""
        ...

    def close(self) -> None:
        """Release the image (idempotent); no I/O may follow."""
        ...

    def extents(self) -> Iterator[Extent]:
        """Allocated and unallocated runs covering the whole disk, in order."""
        ...


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What `probe` learns from a file's headers without reading its data."""

    path: str
    format: str
    variant: str  # "fixed" or "dynamic" (or "streamOptimized", "monolithicFlat", ...)
    virtual_size: int
    file_size: int
    uuid: str | None
    backing_file: str | None = None  # qcow2 only
    backing_format: str | None = None
