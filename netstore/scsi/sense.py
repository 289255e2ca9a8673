# SCSI status codes, sense keys and the one table of sense conditions this
# target reports (SPC-4 4.5 fixed-format sense data, annex D ASC/ASCQ list),
# plus the ScsiError exception command handlers raise to end a command with
# CHECK CONDITION.
"""SAM status codes, sense keys, sense conditions and ScsiError."""
from __future__ import annotations

import struct
from typing import NamedTuple

# SAM-5 5.3 status codes.
GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
VALID_STATUSES = frozenset(
    {GOOD, CHECK_CONDITION, CONDITION_MET, BUSY, RESERVATION_CONFLICT, TASK_SET_FULL}
)

# SPC-4 table 47: sense keys.
NO_SENSE = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

# Fixed format, current error (SPC-4 4.5.3); the VALID bit is 0x80.
FIXED_CURRENT = 0x70
# Bytes 8..17 follow the ADDITIONAL SENSE LENGTH byte: 18 bytes in total.
FIXED_SENSE_LEN = 18


class Sense(NamedTuple):
    """One sense condition: sense key with its ASC/ASCQ."""

    key: int
    asc: int
    ascq: int
    name: str


# The one table of conditions (SPC-4 annex D). Handlers refer to these names.
NO_ADDITIONAL_SENSE = Sense(NO_SENSE, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION")
INVALID_OPCODE = Sense(ILLEGAL_REQUEST, 0x20, 0x00, "INVALID COMMAND OPERATION CODE")
LBA_OUT_OF_RANGE = Sense(ILLEGAL_REQUEST, 0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE")
INVALID_FIELD_IN_CDB = Sense(ILLEGAL_REQUEST, 0x24, 0x00, "INVALID FIELD IN CDB")
INVALID_FIELD_IN_IU = Sense(
    ILLEGAL_REQUEST, 0x0E, 0x03, "INVALID FIELD IN COMMAND INFORMATION UNIT"
)
LU_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED")
INVALID_FIELD_IN_PARAM_LIST = Sense(
    ILLEGAL_REQUEST, 0x26, 0x00, "INVALID FIELD IN PARAMETER LIST"
)
PARAM_LIST_LENGTH_ERROR = Sense(ILLEGAL_REQUEST, 0x1A, 0x00, "PARAMETER LIST LENGTH ERROR")
SAVING_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x39, 0x00, "SAVING PARAMETERS NOT SUPPORTED")
WRITE_PROTECTED = Sense(DATA_PROTECT, 0x27, 0x00, "WRITE PROTECTED")
MISCOMPARE_DURING_VERIFY = Sense(MISCOMPARE, 0x1D, 0x00, "MISCOMPARE DURING VERIFY OPERATION")
UNRECOVERED_READ_ERROR = Sense(MEDIUM_ERROR, 0x11, 0x00, "UNRECOVERED READ ERROR")
WRITE_ERROR = Sense(MEDIUM_ERROR, 0x0C, 0x00, "WRITE ERROR")
INTERNAL_TARGET_FAILURE = Sense(HARDWARE_ERROR, 0x44, 0x00, "INTERNAL TARGET FAILURE")
POWER_ON_RESET = Sense(UNIT_ATTENTION, 0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED")
POWER_ON_OCCURRED = Sense(UNIT_ATTENTION, 0x29, 0x01, "POWER ON OCCURRED")
BUS_RESET_OCCURRED = Sense(UNIT_ATTENTION, 0x29, 0x02, "SCSI BUS RESET OCCURRED")
DEVICE_RESET_OCCURRED = Sense(UNIT_ATTENTION, 0x29, 0x03, "BUS DEVICE RESET FUNCTION OCCURRED")
IT_NEXUS_LOSS = Sense(UNIT_ATTENTION, 0x29, 0x07, "I_T NEXUS LOSS OCCURRED")
MODE_PARAMETERS_CHANGED = Sense(UNIT_ATTENTION, 0x2A, 0x01, "MODE PARAMETERS CHANGED")
REPORTED_LUNS_CHANGED = Sense(UNIT_ATTENTION, 0x3F, 0x0E, "REPORTED LUNS DATA HAS CHANGED")
RESERVATIONS_PREEMPTED = Sense(UNIT_ATTENTION, 0x2A, 0x03, "RESERVATIONS PREEMPTED")
RESERVATIONS_RELEASED = Sense(UNIT_ATTENTION, 0x2A, 0x04, "RESERVATIONS RELEASED")
REGISTRATIONS_PREEMPTED = Sense(UNIT_ATTENTION, 0x2A, 0x05, "REGISTRATIONS PREEMPTED")
MEDIUM_NOT_PRESENT = Sense(NOT_READY, 0x3A, 0x00, "MEDIUM NOT PRESENT")
MEDIUM_REMOVAL_PREVENTED = Sense(ILLEGAL_REQUEST, 0x53, 0x02, "MEDIUM REMOVAL PREVENTED")
NOT_READY_TO_READY = Sense(UNIT_ATTENTION, 0x28, 0x00, "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED")
INVALID_RELEASE_OF_PR = Sense(
    ILLEGAL_REQUEST, 0x26, 0x04, "INVALID RELEASE OF PERSISTENT RESERVATION"
)

# EXTENDED COPY (SPC-4 6.4): parameter list and copy target errors.
TOO_MANY_TARGET_DESCRIPTORS = Sense(ILLEGAL_REQUEST, 0x26, 0x06, "TOO MANY TARGET DESCRIPTORS")
UNSUPPORTED_TARGET_DESCRIPTOR = Sense(
    ILLEGAL_REQUEST, 0x26, 0x07, "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE")
TOO_MANY_SEGMENT_DESCRIPTORS = Sense(ILLEGAL_REQUEST, 0x26, 0x08, "TOO MANY SEGMENT DESCRIPTORS")
UNSUPPORTED_SEGMENT_DESCRIPTOR = Sense(
    ILLEGAL_REQUEST, 0x26, 0x09, "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE")
COPY_ABORTED_NO_SENSE = Sense(COPY_ABORTED, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION")
UNREACHABLE_COPY_TARGET = Sense(COPY_ABORTED, 0x08, 0x04, "UNREACHABLE COPY TARGET")
COPY_TARGET_NOT_REACHABLE = Sense(COPY_ABORTED, 0x0D, 0x02, "COPY TARGET DEVICE NOT REACHABLE")
# Asymmetric logical unit access (SPC-4 5.16, alua.py): a state change, and
# the commands a target port group's state refuses.
ASYMMETRIC_ACCESS_STATE_CHANGED = Sense(UNIT_ATTENTION, 0x2A, 0x06, "ASYMMETRIC ACCESS STATE CHANGED")
LU_NOT_ACCESSIBLE_TRANSITIONING = Sense(
    NOT_READY, 0x04, 0x0A, "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION")
LU_NOT_ACCESSIBLE_STANDBY = Sense(
    NOT_READY, 0x04, 0x0B, "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE")
LU_NOT_ACCESSIBLE_UNAVAILABLE = Sense(
    NOT_READY, 0x04, 0x0C, "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE")
# SBC-4 5.30: media access while a sanitize runs.
SANITIZE_IN_PROGRESS = Sense(NOT_READY, 0x04, 0x1B, "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS")

# ASC 29h: a reset supersedes any other pending unit attention (SAM-5 5.14).
RESET_ASC = 0x29

# SPC-4 4.5.2.4.2 field pointer sense-key specific bytes.
_SKSV = 0x80
_CD = 0x40  # the error is in the CDB (0: in the parameter list)
_BPV = 0x08  # the bit pointer is valid


def build_sense(
    sense: Sense,
    *,
    information: int | None = None,
    field: tuple[int, int | None] | None = None,
    in_cdb: bool = True,
) -> bytes:
    """Build 18 bytes of fixed-format sense data (SPC-4 4.5.3).

    Args:
        sense: the condition (key, ASC, ASCQ).
        information: value for the INFORMATION field; sets the VALID bit.
        field: (byte, bit) of the offending field for a field pointer
            sense-key specific descriptor; bit None means the whole byte.
        in_cdb: the field pointer points into the CDB (C/D=1) rather than the
            parameter list.
    """
    code = FIXED_CURRENT
    info = 0
    if information is not None:
        code |= 0x80
        info = information & 0xFFFFFFFF
    sks0 = 0
    sks_ptr = 0
    if field is not None:
        byte, bit = field
        sks0 = _SKSV | (_CD if in_cdb else 0)
        if bit is not None:
            sks0 |= _BPV | (bit & 0x07)
        sks_ptr = byte & 0xFFFF
    return struct.pack(
        ">BBBIBIBBBBH",
        code,
        0,
        sense.key,
        info,
        FIXED_SENSE_LEN - 8,
        0,
        sense.asc,
        sense.ascq,
        0,
        sks0,
        sks_ptr,
    )


class ScsiError(Exception):
    """Raised by a command handler to end the command with CHECK CONDITION."""

    __slots__ = ("sense",)

    def __init__(
        self,
        sense: Sense,
        *,
        information: int | None = None,
        field: tuple[int, int | None] | None = None,
        in_cdb: bool = True,
    ) -> None:
        super().__init__(sense.name)
        self.sense = build_sense(sense, information=information, field=field, in_cdb=in_cdb)


def cdb_error(byte: int, bit: int | None = None) -> ScsiError:
    """INVALID FIELD IN CDB pointing at `byte` (and `bit`) of the CDB."""
    return ScsiError(INVALID_FIELD_IN_CDB, field=(byte, bit))


def param_error(byte: int, bit: int | None = None) -> ScsiError:
    """INVALID FIELD IN PARAMETER LIST pointing into the Data-Out buffer."""
    return ScsiError(INVALID_FIELD_IN_PARAM_LIST, field=(byte, bit), in_cdb=False)


def short_data_out() -> ScsiError:
    """Less Data-Out than the CDB asks for (EDTL < SPDTL): the command
    transfers nothing (FCP-4 9.4.2 b, used by iSCSI targets alike)."""
    return ScsiError(INVALID_FIELD_IN_IU)
