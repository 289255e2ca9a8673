# The SCSI layer: an SPC-4/SBC-3 target on a block backend (any disk image of
# netstore.disk), with no iSCSI in it. The iSCSI shell calls ScsiTarget.execute
# for every command.
"""The SCSI layer: logical units, targets and the command tables, with no iSCSI in it."""
from .commands import FAST_PATH_OPCODES
from .lun import LogicalUnit, LunIdentity, ScsiResponse
from .target import ScsiTarget

__all__ = [
    "FAST_PATH_OPCODES",
    "LogicalUnit",
    "LunIdentity",
    "ScsiResponse",
    "ScsiTarget",
]
