# The one table of SCSI commands this logical unit implements: operation code,
# service action, CDB length, CDB usage bitmap (SPC-4 6.35.3, used by REPORT
# SUPPORTED OPERATION CODES), the LogicalUnit method that runs it, and whether
# a pending unit attention blocks it. Dispatch tables are built from here.
from __future__ import annotations

from typing import NamedTuple

# SPC-4 / SBC-3 operation codes.
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
READ_6 = 0x08
WRITE_6 = 0x0A
INQUIRY = 0x12
MODE_SELECT_6 = 0x15
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
WRITE_AND_VERIFY_10 = 0x2E
VERIFY_10 = 0x2F
SYNCHRONIZE_CACHE_10 = 0x35
MODE_SELECT_10 = 0x55
MODE_SENSE_10 = 0x5A
READ_16 = 0x88
WRITE_16 = 0x8A
WRITE_AND_VERIFY_16 = 0x8E
VERIFY_16 = 0x8F
SYNCHRONIZE_CACHE_16 = 0x91
SERVICE_ACTION_IN_16 = 0x9E
REPORT_LUNS = 0xA0
MAINTENANCE_IN = 0xA3
READ_12 = 0xA8
WRITE_12 = 0xAA
WRITE_AND_VERIFY_12 = 0xAE
VERIFY_12 = 0xAF

# Service actions.
SA_READ_CAPACITY_16 = 0x10
SA_REPORT_SUPPORTED_OPCODES = 0x0C
SA_REPORT_SUPPORTED_TMFS = 0x0D

# More SBC-3/SBC-4 commands (sbc_more.py).
PRE_FETCH_10 = 0x34
READ_DEFECT_DATA_10 = 0x37
WRITE_SAME_10 = 0x41
UNMAP = 0x42
SANITIZE = 0x48
SA_SANITIZE_OVERWRITE = 0x01
SA_SANITIZE_BLOCK_ERASE = 0x02
SA_SANITIZE_EXIT_FAILURE_MODE = 0x1F
COMPARE_AND_WRITE = 0x89
ORWRITE_16 = 0x8B
PRE_FETCH_16 = 0x90
WRITE_SAME_16 = 0x93
WRITE_ATOMIC_16 = 0x9C
READ_DEFECT_DATA_12 = 0xB7
SA_GET_LBA_STATUS = 0x12
SA_REPORT_TARGET_PORT_GROUPS = 0x0A

# Third-party copy (xcopy.py): EXTENDED COPY (LID1), RECEIVE COPY RESULTS.
EXTENDED_COPY = 0x83
RECEIVE_COPY_RESULTS = 0x84
SA_EXTENDED_COPY_LID1 = 0x00
_RCR_SAS = ((0x00, "COPY STATUS"), (0x01, "RECEIVE DATA"), (0x03, "OPERATING PARAMETERS"),
            (0x04, "FAILED SEGMENT DETAILS"))

# MMC-6 commands of CD/DVD logical units (mmc.py).
READ_TOC_PMA_ATIP = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
READ_DISC_INFORMATION = 0x51
READ_TRACK_INFORMATION = 0x52
MECHANISM_STATUS = 0xBD

# Reservations (reservations.py): SPC-2 RESERVE/RELEASE, SPC-4 persistent ones.
RESERVE_6 = 0x16
RELEASE_6 = 0x17
RESERVE_10 = 0x56
RELEASE_10 = 0x57
PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F
_PRIN_SAS = ("READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS")
_PROUT_SAS = ("REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT", "PREEMPT AND ABORT",
              "REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE")

# Recommended command timeouts reported with RCTD (seconds).
IO_TIMEOUT_S = 30
FLUSH_TIMEOUT_S = 60


class Command(NamedTuple):
    """One implemented command."""

    opcode: int
    service_action: int | None  # None: the opcode has no service actions
    name: str
    usage: bytes  # CDB usage bitmap; its length is the CDB length
    handler: str  # LogicalUnit method name
    ua_exempt: bool = False  # not blocked by a pending unit attention (SPC-4 5.14)
    timeout_s: int = IO_TIMEOUT_S
    # Reaches the medium: NOT READY, MEDIUM NOT PRESENT while it is ejected.
    medium: bool = False

    @property
    def cdb_length(self) -> int:
        """Length of the CDB in bytes."""
        return len(self.usage)


def _u(*b: int) -> bytes:
    return bytes(b)


_F8 = (0xFF,) * 8
_F4 = (0xFF,) * 4

COMMANDS: tuple[Command, ...] = (
    Command(TEST_UNIT_READY, None, "TEST UNIT READY", _u(0x00, 0, 0, 0, 0, 0), "_test_unit_ready"),
    Command(REQUEST_SENSE, None, "REQUEST SENSE", _u(0x03, 0x01, 0, 0, 0xFF, 0),
            "_request_sense", ua_exempt=True),
    Command(READ_6, None, "READ(6)", _u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), "_read6"),
    Command(WRITE_6, None, "WRITE(6)", _u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), "_write6"),
    Command(INQUIRY, None, "INQUIRY", _u(0x12, 0x01, 0xFF, 0xFF, 0xFF, 0), "_inquiry",
            ua_exempt=True),
    Command(MODE_SELECT_6, None, "MODE SELECT(6)", _u(0x15, 0x11, 0, 0, 0xFF, 0),
            "_mode_select6"),
    Command(MODE_SENSE_6, None, "MODE SENSE(6)", _u(0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0),
            "_mode_sense6"),
    Command(START_STOP_UNIT, None, "START STOP UNIT", _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0),
            "_start_stop_unit", timeout_s=FLUSH_TIMEOUT_S),
    Command(PREVENT_ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL",
            _u(0x1E, 0, 0, 0, 0x03, 0), "_prevent_allow"),
    Command(READ_CAPACITY_10, None, "READ CAPACITY(10)",
            _u(0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0), "_read_capacity10"),
    Command(READ_10, None, "READ(10)", _u(0x28, 0x18, *_F4, 0x1F, 0xFF, 0xFF, 0), "_read10"),
    Command(WRITE_10, None, "WRITE(10)", _u(0x2A, 0x18, *_F4, 0x1F, 0xFF, 0xFF, 0), "_write10"),
    Command(WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)",
            _u(0x2E, 0x12, *_F4, 0x1F, 0xFF, 0xFF, 0), "_write_verify10"),
    Command(VERIFY_10, None, "VERIFY(10)", _u(0x2F, 0x16, *_F4, 0x1F, 0xFF, 0xFF, 0),
            "_verify10"),
    Command(SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)",
            _u(0x35, 0x02, *_F4, 0x1F, 0xFF, 0xFF, 0), "_sync_cache10",
            timeout_s=FLUSH_TIMEOUT_S),
    Command(MODE_SELECT_10, None, "MODE SELECT(10)", _u(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
            "_mode_select10"),
    Command(MODE_SENSE_10, None, "MODE SENSE(10)",
            _u(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), "_mode_sense10"),
    Command(READ_16, None, "READ(16)", _u(0x88, 0x18, *_F8, *_F4, 0x1F, 0), "_read16"),
    Command(WRITE_16, None, "WRITE(16)", _u(0x8A, 0x18, *_F8, *_F4, 0x1F, 0), "_write16"),
    Command(WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)",
            _u(0x8E, 0x12, *_F8, *_F4, 0x1F, 0), "_write_verify16"),
    Command(VERIFY_16, None, "VERIFY(16)", _u(0x8F, 0x16, *_F8, *_F4, 0x1F, 0), "_verify16"),
    Command(SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)",
            _u(0x91, 0x02, *_F8, *_F4, 0x1F, 0), "_sync_cache16", timeout_s=FLUSH_TIMEOUT_S),
    Command(SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16, "READ CAPACITY(16)",
            _u(0x9E, SA_READ_CAPACITY_16, *_F8, *_F4, 0x01, 0), "_read_capacity16"),
    Command(REPORT_LUNS, None, "REPORT LUNS", _u(0xA0, 0, 0xFF, 0, 0, 0, *_F4, 0, 0),
            "_report_luns", ua_exempt=True),
    Command(MAINTENANCE_IN, SA_REPORT_SUPPORTED_OPCODES, "REPORT SUPPORTED OPERATION CODES",
            _u(0xA3, SA_REPORT_SUPPORTED_OPCODES, 0x87, 0xFF, 0xFF, 0xFF, *_F4, 0, 0),
            "_report_opcodes"),
    Command(MAINTENANCE_IN, SA_REPORT_SUPPORTED_TMFS,
            "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
            _u(0xA3, SA_REPORT_SUPPORTED_TMFS, 0x80, 0, 0, 0, *_F4, 0, 0), "_report_tmfs"),
    Command(READ_12, None, "READ(12)", _u(0xA8, 0x18, *_F4, *_F4, 0x1F, 0), "_read12"),
    Command(WRITE_12, None, "WRITE(12)", _u(0xAA, 0x18, *_F4, *_F4, 0x1F, 0), "_write12"),
    Command(WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)",
            _u(0xAE, 0x12, *_F4, *_F4, 0x1F, 0), "_write_verify12"),
    Command(VERIFY_12, None, "VERIFY(12)", _u(0xAF, 0x16, *_F4, *_F4, 0x1F, 0), "_verify12"),
    # sbc_more.py
    Command(PRE_FETCH_10, None, "PRE-FETCH(10)", _u(0x34, 0x02, *_F4, 0x1F, 0xFF, 0xFF, 0),
            "_prefetch10"),
    Command(READ_DEFECT_DATA_10, None, "READ DEFECT DATA(10)",
            _u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0), "_read_defect_data10"),
    Command(WRITE_SAME_10, None, "WRITE SAME(10)", _u(0x41, 0, *_F4, 0x1F, 0xFF, 0xFF, 0),
            "_write_same10", timeout_s=FLUSH_TIMEOUT_S),
    Command(UNMAP, None, "UNMAP", _u(0x42, 0x01, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0), "_unmap",
            timeout_s=FLUSH_TIMEOUT_S),
    *(Command(SANITIZE, sa, f"SANITIZE {name}", _u(0x48, 0x80 | sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
              "_sanitize", timeout_s=3600)
      # OVERWRITE is implemented (sbc_more.py) but not offered: it runs
      # synchronously, and SBC-4 5.30 wants a sanitize to go on in the
      # background with NOT READY, SANITIZE IN PROGRESS meanwhile (libiscsi's
      # SanitizeReset checks it); offer it once the LU can run it that way.
      for sa, name in ((SA_SANITIZE_BLOCK_ERASE, "BLOCK ERASE"),
                       (SA_SANITIZE_EXIT_FAILURE_MODE, "EXIT FAILURE MODE"))),
    Command(COMPARE_AND_WRITE, None, "COMPARE AND WRITE",
            _u(0x89, 0x18, *_F8, 0, 0, 0, 0xFF, 0x1F, 0), "_compare_and_write"),
    Command(ORWRITE_16, None, "ORWRITE(16)", _u(0x8B, 0x18, *_F8, *_F4, 0x1F, 0),
            "_orwrite16"),
    Command(PRE_FETCH_16, None, "PRE-FETCH(16)", _u(0x90, 0x02, *_F8, *_F4, 0x1F, 0),
            "_prefetch16"),
    Command(WRITE_SAME_16, None, "WRITE SAME(16)", _u(0x93, 0x01, *_F8, *_F4, 0x1F, 0),
            "_write_same16", timeout_s=FLUSH_TIMEOUT_S),
    Command(WRITE_ATOMIC_16, None, "WRITE ATOMIC(16)",
            _u(0x9C, 0x18, *_F8, 0, 0, 0xFF, 0xFF, 0x1F, 0), "_write_atomic16"),
    Command(SERVICE_ACTION_IN_16, SA_GET_LBA_STATUS, "GET LBA STATUS",
            _u(0x9E, SA_GET_LBA_STATUS, *_F8, *_F4, 0, 0), "_get_lba_status"),
    Command(MAINTENANCE_IN, SA_REPORT_TARGET_PORT_GROUPS, "REPORT TARGET PORT GROUPS",
            _u(0xA3, 0xE0 | SA_REPORT_TARGET_PORT_GROUPS, 0, 0, 0, 0, *_F4, 0, 0),
            "_report_target_port_groups"),
    Command(READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)",
            _u(0xB7, 0x1F, 0, 0, 0, 0, *_F4, 0, 0), "_read_defect_data12"),
    # xcopy.py
    Command(EXTENDED_COPY, SA_EXTENDED_COPY_LID1, "EXTENDED COPY(LID1)",
            _u(0x83, SA_EXTENDED_COPY_LID1, 0, 0, 0, 0, 0, 0, 0, 0, *_F4, 0, 0),
            "_extended_copy", timeout_s=FLUSH_TIMEOUT_S),
    *(Command(RECEIVE_COPY_RESULTS, sa, f"RECEIVE COPY RESULTS {name}",
              _u(0x84, sa, 0xFF, 0, 0, 0, 0, 0, 0, 0, *_F4, 0, 0), "_receive_copy_results")
      for sa, name in _RCR_SAS),
    # mmc.py: CD/DVD logical units only
    Command(READ_TOC_PMA_ATIP, None, "READ TOC/PMA/ATIP",
            _u(0x43, 0x02, 0x0F, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xC0), "_read_toc"),
    Command(GET_CONFIGURATION, None, "GET CONFIGURATION",
            _u(0x46, 0x03, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), "_get_configuration",
            ua_exempt=True),
    Command(GET_EVENT_STATUS_NOTIFICATION, None, "GET EVENT STATUS NOTIFICATION",
            _u(0x4A, 0x01, 0, 0, 0xFF, 0, 0, 0xFF, 0xFF, 0), "_get_event_status",
            ua_exempt=True),
    Command(READ_DISC_INFORMATION, None, "READ DISC INFORMATION",
            _u(0x51, 0x07, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), "_read_disc_information"),
    Command(READ_TRACK_INFORMATION, None, "READ TRACK INFORMATION",
            _u(0x52, 0x03, *_F4, 0, 0xFF, 0xFF, 0), "_read_track_information"),
    Command(MECHANISM_STATUS, None, "MECHANISM STATUS",
            _u(0xBD, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0), "_mechanism_status"),
    Command(RESERVE_6, None, "RESERVE(6)", _u(0x16, 0, 0, 0, 0, 0), "_reserve6"),
    Command(RELEASE_6, None, "RELEASE(6)", _u(0x17, 0, 0, 0, 0, 0), "_release6"),
    Command(RESERVE_10, None, "RESERVE(10)", _u(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0), "_reserve10"),
    Command(RELEASE_10, None, "RELEASE(10)", _u(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0), "_release10"),
    *(Command(PERSISTENT_RESERVE_IN, sa, f"PERSISTENT RESERVE IN {name}",
              _u(0x5E, sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), "_persistent_reserve_in")
      for sa, name in enumerate(_PRIN_SAS)),
    *(Command(PERSISTENT_RESERVE_OUT, sa, f"PERSISTENT RESERVE OUT {name}",
              _u(0x5F, sa, 0xFF, 0, 0, *_F4, 0), "_persistent_reserve_out")
      for sa, name in enumerate(_PROUT_SAS)),
)

# Commands that need the medium loaded (SBC-4 4.4 / libiscsi's NoMedia tests):
# TEST UNIT READY answers NOT READY for the same reason.
_MEDIUM_COMMANDS = frozenset({
    "TEST UNIT READY", "READ(6)", "READ(10)", "READ(12)", "READ(16)", "WRITE(6)",
    "WRITE(10)", "WRITE(12)", "WRITE(16)", "WRITE AND VERIFY(10)", "WRITE AND VERIFY(12)",
    "WRITE AND VERIFY(16)", "VERIFY(10)", "VERIFY(12)", "VERIFY(16)",
    "SYNCHRONIZE CACHE(10)", "SYNCHRONIZE CACHE(16)", "READ CAPACITY(10)",
    "READ CAPACITY(16)", "PRE-FETCH(10)", "PRE-FETCH(16)", "WRITE SAME(10)",
    "WRITE SAME(16)", "UNMAP", "COMPARE AND WRITE", "ORWRITE(16)", "WRITE ATOMIC(16)",
    "GET LBA STATUS", "SANITIZE OVERWRITE", "SANITIZE BLOCK ERASE",
    "SANITIZE EXIT FAILURE MODE", "EXTENDED COPY(LID1)", "READ TOC/PMA/ATIP", "READ DISC INFORMATION",
    "READ TRACK INFORMATION",
})
# Commands only CD/DVD (MMC) logical units have.
MMC_OPCODES = frozenset({
    READ_TOC_PMA_ATIP, GET_CONFIGURATION, GET_EVENT_STATUS_NOTIFICATION,
    READ_DISC_INFORMATION, READ_TRACK_INFORMATION, MECHANISM_STATUS,
})
COMMANDS = tuple(c._replace(medium=c.name in _MEDIUM_COMMANDS) for c in COMMANDS)

# Opcodes whose second byte's low five bits carry a service action.
SERVICE_ACTION_OPCODES = frozenset(
    c.opcode for c in COMMANDS if c.service_action is not None
)
BY_OPCODE: dict[int, Command] = {
    c.opcode: c for c in COMMANDS if c.service_action is None
}
BY_SERVICE_ACTION: dict[tuple[int, int], Command] = {
    (c.opcode, c.service_action): c for c in COMMANDS if c.service_action is not None
}
UA_EXEMPT_OPCODES = frozenset(c.opcode for c in COMMANDS if c.ua_exempt)
