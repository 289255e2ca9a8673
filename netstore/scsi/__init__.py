# The SCSI layer: an SPC-4/SBC-3 target on a block backend, with no iSCSI
# in it. The iSCSI shell calls ScsiTarget.execute for every command.
from .backend import BackendError, BackendOpenError, BlockBackend, RawFileBackend
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
