# The SCSI layer: an SPC-4/SBC-3 target on a block backend, with no iSCSI
# in it. The iSCSI shell calls ScsiTarget.execute for every command.
from netstore.disk.api import DiskError as BackendError
from netstore.disk.api import DiskImage as BlockBackend
from netstore.disk.api import ImageOpenError as BackendOpenError
from netstore.disk.raw import RawImage as RawFileBackend

from .lun import LogicalUnit, LunIdentity, ScsiResponse
from .target import ScsiTarget

__all__ = [
    "BackendError",
    "BackendOpenError",
    "BlockBackend",
    "LogicalUnit",
    "LunIdentity",
    "RawFileBackend",
    "ScsiResponse",
    "ScsiTarget",
]
