# The old home of the SCSI layer's backend names, kept for the importers
# outside the scsi package: a logical unit's backend is any opened disk image
# (netstore.disk.api.DiskImage), a raw file is netstore.disk.raw.RawImage.
"""The BlockBackend protocol; re-exports of RawFileBackend and its errors, now in netstore.disk."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from netstore.disk.api import DiskError as BackendError
from netstore.disk.api import ImageOpenError as BackendOpenError
from netstore.disk.raw import SUPPORTED_BLOCK_SIZES
from netstore.disk.raw import RawImage as RawFileBackend


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


__all__ = [
    "BackendError",
    "BackendOpenError",
    "BlockBackend",
    "RawFileBackend",
    "SUPPORTED_BLOCK_SIZES",
]
