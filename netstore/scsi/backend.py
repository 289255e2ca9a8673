# The old home of the SCSI layer's backend names, kept for the importers
# outside the scsi package: a logical unit's backend is any opened disk image
# (netstore.disk.api.DiskImage), a raw file is netstore.disk.raw.RawImage.
"""Re-exports: BlockBackend, RawFileBackend and their errors, now in netstore.disk."""

from netstore.disk.api import DiskError as BackendError
from netstore.disk.api import DiskImage as BlockBackend
from netstore.disk.api import ImageOpenError as BackendOpenError
from netstore.disk.raw import SUPPORTED_BLOCK_SIZES
from netstore.disk.raw import RawImage as RawFileBackend

__all__ = [
    "BackendError",
    "BackendOpenError",
    "BlockBackend",
    "RawFileBackend",
    "SUPPORTED_BLOCK_SIZES",
]
