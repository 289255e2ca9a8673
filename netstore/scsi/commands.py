# The SCSI command tables, one row per operation code (and service action
# where it matters) carrying every per-command fact: CDB usage bitmap and
# timeout (REPORT SUPPORTED OPERATION CODES), handler, Data-Out length,
# reservation class (SPC-4 5.13.1 table 66, SBC-3 table 13, SPC-2 5.5.1),
# unit attention exemption, medium access, whether it may run on a
# transport's loop (no disk, no file) and fast-path eligibility. One
# CommandSet per device type (DISK: SBC direct access, CDDVD: MMC), as tgt's
# device templates. Dispatch, reservations and the iSCSI fast path read here.
"""Per-opcode facts of every SCSI command, and the command set of each device type."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .cdb import BE16, BE32
from .opcodes import (
    COMPARE_AND_WRITE,
    EXTENDED_COPY,
    FLUSH_TIMEOUT_S,
    GET_CONFIGURATION,
    GET_EVENT_STATUS_NOTIFICATION,
    INQUIRY,
    IO_TIMEOUT_S,
    LOG_SENSE,
    MAINTENANCE_IN,
    MAINTENANCE_OUT,
    MECHANISM_STATUS,
    MODE_SELECT_6,
    MODE_SELECT_10,
    MODE_SENSE_6,
    MODE_SENSE_10,
    ORWRITE_16,
    PERSISTENT_RESERVE_IN,
    PERSISTENT_RESERVE_OUT,
    PRE_FETCH_10,
    PRE_FETCH_16,
    PREVENT_ALLOW_MEDIUM_REMOVAL,
    READ_6,
    READ_10,
    READ_12,
    READ_16,
    READ_BUFFER,
    READ_CAPACITY_10,
    READ_DEFECT_DATA_10,
    READ_DEFECT_DATA_12,
    READ_DISC_INFORMATION,
    READ_TOC_PMA_ATIP,
    READ_TRACK_INFORMATION,
    RECEIVE_COPY_RESULTS,
    RELEASE_6,
    RELEASE_10,
    REPORT_LUNS,
    REQUEST_SENSE,
    RESERVE_6,
    RESERVE_10,
    SA_EXTENDED_COPY_LID1,
    SA_GET_LBA_STATUS,
    SA_READ_CAPACITY_16,
    SA_REPORT_SUPPORTED_OPCODES,
    SA_REPORT_SUPPORTED_TMFS,
    SA_REPORT_TARGET_PORT_GROUPS,
    SA_SANITIZE_BLOCK_ERASE,
    SA_SANITIZE_EXIT_FAILURE_MODE,
    SANITIZE,
    SEND_DIAGNOSTIC,
    SERVICE_ACTION_IN_16,
    START_STOP_UNIT,
    SYNCHRONIZE_CACHE_10,
    SYNCHRONIZE_CACHE_16,
    TEST_UNIT_READY,
    UNMAP,
    VERIFY_10,
    VERIFY_12,
    VERIFY_16,
    WRITE_6,
    WRITE_10,
    WRITE_12,
    WRITE_16,
    WRITE_AND_VERIFY_10,
    WRITE_AND_VERIFY_12,
    WRITE_AND_VERIFY_16,
    WRITE_ATOMIC_16,
    WRITE_BUFFER,
    WRITE_SAME_10,
    WRITE_SAME_16,
)

# How a command fares against a reservation another I_T nexus holds.
PR_ALLOWED = 0  # always runs
PR_READ = 1  # conflicts with Exclusive Access types only (reads the medium)
PR_CONFLICT = 2  # always conflicts
PR_START = 3  # START STOP UNIT: allowed with START=1 and POWER CONDITION 0
PR_PREVENT = 4  # PREVENT ALLOW MEDIUM REMOVAL: allowed with PREVENT=0

DataOut = Callable[[bytes | memoryview, int], int]


def no_data_out(cdb: bytes | memoryview, bs: int) -> int:
    """A command that sends no Data-Out."""
    return 0


class Command(NamedTuple):
    """Everything about one command (one operation code, or one service action)."""

    opcode: int
    service_action: int | None  # None: the opcode has no service actions
    name: str
    usage: bytes  # CDB usage bitmap; its length is the CDB length
    # "method" of the logical unit, "part.method" of one of its parts
    # (reservations, sbc, provisioning, copies, access, supported), or
    # None: known, not implemented (INVALID OPERATION CODE, not reported).
    handler: str | None
    # Bytes of Data-Out the CDB asks for, given the block size; None: unknown.
    data_out: DataOut | None = no_data_out
    data_in: bool = False  # returns Data-In (parameter data or blocks)
    pr: int = PR_CONFLICT  # class under a persistent reservation (table 66)
    spc2: int = PR_CONFLICT  # class under an SPC-2 reservation (SPC-2 5.5.1)
    ua_exempt: bool = False  # not blocked by a pending unit attention (SPC-4 5.14)
    timeout_s: int = IO_TIMEOUT_S
    # Reaches the medium: NOT READY, MEDIUM NOT PRESENT while it is ejected.
    medium: bool = False
    # Plain READ/WRITE a transport may serve straight from its receive buffer.
    fast: bool = False
    # Answered from the unit's state alone (no disk read, write, flush or
    # file): a transport may run it on its loop when the unit is idle.
    inline: bool = False
    # A READ of blocks that may be answered from the page cache alone (the
    # unit's NOWAIT): a transport may try it on its loop when the unit is idle.
    cached: bool = False

    @property
    def direction(self) -> str:
        """Data direction (tgt's DATA_READ/WRITE/NONE): "in", "out" or "none"."""
        if self.data_out not in (no_data_out, None):
            return "out"
        return "in" if self.data_in else "none"

    @property
    def cdb_length(self) -> int:
        """Length of the CDB in bytes."""
        return len(self.usage)


def _u(*b: int) -> bytes:
    return bytes(b)


_F8 = (0xFF,) * 8
_F4 = (0xFF,) * 4


def _blocks6(cdb: bytes | memoryview, bs: int) -> int:
    return (cdb[4] or 256) * bs


def _blocks10(cdb: bytes | memoryview, bs: int) -> int:
    return BE16.unpack_from(cdb, 7)[0] * bs


def _blocks12(cdb: bytes | memoryview, bs: int) -> int:
    return BE32.unpack_from(cdb, 6)[0] * bs


def _blocks16(cdb: bytes | memoryview, bs: int) -> int:
    return BE32.unpack_from(cdb, 10)[0] * bs


def _verify_out(n: int, bytchk: int, bs: int) -> int:
    if bytchk == 1:
        return n * bs
    if bytchk == 3:  # one block compared with every block
        return bs if n else 0
    return 0


def _verify10(cdb: bytes | memoryview, bs: int) -> int:
    return _verify_out(BE16.unpack_from(cdb, 7)[0], (cdb[1] >> 1) & 3, bs)


def _verify12(cdb: bytes | memoryview, bs: int) -> int:
    return _verify_out(BE32.unpack_from(cdb, 6)[0], (cdb[1] >> 1) & 3, bs)


def _verify16(cdb: bytes | memoryview, bs: int) -> int:
    return _verify_out(BE32.unpack_from(cdb, 10)[0], (cdb[1] >> 1) & 3, bs)


def _one_block(cdb: bytes | memoryview, bs: int) -> int:
    return bs


def _write_same16(cdb: bytes | memoryview, bs: int) -> int:
    return 0 if cdb[1] & 0x01 else bs  # NDOB: no Data-Out buffer


def _compare_and_write(cdb: bytes | memoryview, bs: int) -> int:
    return 2 * cdb[13] * bs  # the verify instance, then the write instance


def _write_atomic16(cdb: bytes | memoryview, bs: int) -> int:
    return BE16.unpack_from(cdb, 12)[0] * bs


def _byte4(cdb: bytes | memoryview, bs: int) -> int:
    return cdb[4]


def _be16_at(pos: int) -> DataOut:
    return lambda cdb, bs: BE16.unpack_from(cdb, pos)[0]


def _be24_at(pos: int) -> DataOut:
    return lambda cdb, bs: int.from_bytes(bytes(cdb[pos:pos + 3]), "big")


def _be32_at(pos: int) -> DataOut:
    return lambda cdb, bs: BE32.unpack_from(cdb, pos)[0]


_C = Command
_RW = {"medium": True}
_READS = {"medium": True, "pr": PR_READ}
_SAI = SERVICE_ACTION_IN_16
_MI = MAINTENANCE_IN
_RCR_SAS = ((0x00, "COPY STATUS"), (0x01, "RECEIVE DATA"), (0x03, "OPERATING PARAMETERS"),
            (0x04, "FAILED SEGMENT DETAILS"))
_PRIN_SAS = ("READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS")
_PROUT_SAS = ("REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT", "PREEMPT AND ABORT",
              "REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE")

# Every implemented command, in the order REPORT SUPPORTED OPERATION CODES
# lists them.
COMMANDS: tuple[Command, ...] = (
    # SPC-4 and SBC-3 (lun.py)
    _C(TEST_UNIT_READY, None, "TEST UNIT READY", _u(0x00, 0, 0, 0, 0, 0), "_test_unit_ready",
       pr=PR_ALLOWED, medium=True, inline=True),
    _C(REQUEST_SENSE, None, "REQUEST SENSE", _u(0x03, 0x01, 0, 0, 0xFF, 0), "_request_sense", data_in=True,
       pr=PR_ALLOWED, spc2=PR_ALLOWED, ua_exempt=True, inline=True),
    _C(READ_6, None, "READ(6)", _u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), "_read6", data_in=True, cached=True, **_READS),
    _C(WRITE_6, None, "WRITE(6)", _u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), "_write6",
       data_out=_blocks6, **_RW),
    _C(INQUIRY, None, "INQUIRY", _u(0x12, 0x01, 0xFF, 0xFF, 0xFF, 0), "_inquiry", data_in=True,
       pr=PR_ALLOWED, spc2=PR_ALLOWED, ua_exempt=True, inline=True),
    _C(MODE_SELECT_6, None, "MODE SELECT(6)", _u(0x15, 0x11, 0, 0, 0xFF, 0), "_mode_select6",
       data_out=_byte4),
    _C(MODE_SENSE_6, None, "MODE SENSE(6)", _u(0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0), "_mode_sense6", data_in=True,
       pr=PR_READ, inline=True),
    _C(START_STOP_UNIT, None, "START STOP UNIT", _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0),
       "_start_stop_unit", pr=PR_START, timeout_s=FLUSH_TIMEOUT_S),
    _C(PREVENT_ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL",
       _u(0x1E, 0, 0, 0, 0x03, 0), "_prevent_allow", pr=PR_PREVENT, spc2=PR_PREVENT, inline=True),
    _C(READ_CAPACITY_10, None, "READ CAPACITY(10)",
       _u(0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0), "sbc.read_capacity10", data_in=True,
       pr=PR_ALLOWED, medium=True, inline=True),
    _C(READ_10, None, "READ(10)", _u(0x28, 0x18, *_F4, 0x1F, 0xFF, 0xFF, 0), "_read10", data_in=True,
       fast=True, cached=True, **_READS),
    _C(WRITE_10, None, "WRITE(10)", _u(0x2A, 0x18, *_F4, 0x1F, 0xFF, 0xFF, 0), "_write10",
       data_out=_blocks10, fast=True, **_RW),
    _C(WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)",
       _u(0x2E, 0x12, *_F4, 0x1F, 0xFF, 0xFF, 0), "sbc.write_verify10", data_out=_blocks10, **_RW),
    _C(VERIFY_10, None, "VERIFY(10)", _u(0x2F, 0x16, *_F4, 0x1F, 0xFF, 0xFF, 0), "sbc.verify10",
       data_out=_verify10, **_READS),
    _C(SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)",
       _u(0x35, 0x02, *_F4, 0x1F, 0xFF, 0xFF, 0), "_sync_cache10",
       timeout_s=FLUSH_TIMEOUT_S, **_RW),
    _C(MODE_SELECT_10, None, "MODE SELECT(10)", _u(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
       "_mode_select10", data_out=_be16_at(7)),
    _C(MODE_SENSE_10, None, "MODE SENSE(10)",
       _u(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), "_mode_sense10", data_in=True, pr=PR_READ, inline=True),
    _C(READ_16, None, "READ(16)", _u(0x88, 0x18, *_F8, *_F4, 0x1F, 0), "_read16", data_in=True,
       fast=True, cached=True, **_READS),
    _C(WRITE_16, None, "WRITE(16)", _u(0x8A, 0x18, *_F8, *_F4, 0x1F, 0), "_write16",
       data_out=_blocks16, fast=True, **_RW),
    _C(WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)", _u(0x8E, 0x12, *_F8, *_F4, 0x1F, 0),
       "sbc.write_verify16", data_out=_blocks16, **_RW),
    _C(VERIFY_16, None, "VERIFY(16)", _u(0x8F, 0x16, *_F8, *_F4, 0x1F, 0), "sbc.verify16",
       data_out=_verify16, **_READS),
    _C(SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)", _u(0x91, 0x02, *_F8, *_F4, 0x1F, 0),
       "_sync_cache16", timeout_s=FLUSH_TIMEOUT_S, **_RW),
    _C(_SAI, SA_READ_CAPACITY_16, "READ CAPACITY(16)",
       _u(0x9E, SA_READ_CAPACITY_16, *_F8, *_F4, 0x01, 0), "sbc.read_capacity16", data_in=True,
       pr=PR_ALLOWED, medium=True, inline=True),
    _C(REPORT_LUNS, None, "REPORT LUNS", _u(0xA0, 0, 0xFF, 0, 0, 0, *_F4, 0, 0),
       "_report_luns", data_in=True, pr=PR_ALLOWED, spc2=PR_ALLOWED, ua_exempt=True, inline=True),
    _C(_MI, SA_REPORT_SUPPORTED_OPCODES, "REPORT SUPPORTED OPERATION CODES",
       _u(0xA3, SA_REPORT_SUPPORTED_OPCODES, 0x87, 0xFF, 0xFF, 0xFF, *_F4, 0, 0),
       "supported.report_opcodes", data_in=True, pr=PR_READ, inline=True),
    _C(_MI, SA_REPORT_SUPPORTED_TMFS, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
       _u(0xA3, SA_REPORT_SUPPORTED_TMFS, 0x80, 0, 0, 0, *_F4, 0, 0), "supported.report_tmfs", data_in=True,
       pr=PR_READ, inline=True),
    _C(READ_12, None, "READ(12)", _u(0xA8, 0x18, *_F4, *_F4, 0x1F, 0), "_read12", data_in=True, cached=True, **_READS),
    _C(WRITE_12, None, "WRITE(12)", _u(0xAA, 0x18, *_F4, *_F4, 0x1F, 0), "_write12",
       data_out=_blocks12, **_RW),
    _C(WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)", _u(0xAE, 0x12, *_F4, *_F4, 0x1F, 0),
       "sbc.write_verify12", data_out=_blocks12, **_RW),
    _C(VERIFY_12, None, "VERIFY(12)", _u(0xAF, 0x16, *_F4, *_F4, 0x1F, 0), "sbc.verify12",
       data_out=_verify12, **_READS),
    # more of SBC-3/SBC-4
    _C(PRE_FETCH_10, None, "PRE-FETCH(10)", _u(0x34, 0x02, *_F4, 0x1F, 0xFF, 0xFF, 0),
       "sbc.prefetch10", **_READS),
    _C(READ_DEFECT_DATA_10, None, "READ DEFECT DATA(10)",
       _u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0), "sbc.read_defect_data10", data_in=True, pr=PR_READ, inline=True),
    _C(WRITE_SAME_10, None, "WRITE SAME(10)", _u(0x41, 0, *_F4, 0x1F, 0xFF, 0xFF, 0),
       "provisioning.write_same10", data_out=_one_block, timeout_s=FLUSH_TIMEOUT_S, **_RW),
    _C(UNMAP, None, "UNMAP", _u(0x42, 0x01, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0), "provisioning.unmap",
       data_out=_be16_at(7), timeout_s=FLUSH_TIMEOUT_S, **_RW),
    # SANITIZE OVERWRITE is not offered: SBC-4 5.30 wants a sanitize to go on
    # in the background with NOT READY, SANITIZE IN PROGRESS meanwhile
    # (libiscsi's SanitizeReset checks it), and this unit runs commands
    # synchronously.
    *(_C(SANITIZE, sa, f"SANITIZE {name}", _u(0x48, 0x80 | sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
         "provisioning.sanitize", data_out=_be16_at(7), timeout_s=3600, **_RW)
      for sa, name in ((SA_SANITIZE_BLOCK_ERASE, "BLOCK ERASE"),
                       (SA_SANITIZE_EXIT_FAILURE_MODE, "EXIT FAILURE MODE"))),
    _C(COMPARE_AND_WRITE, None, "COMPARE AND WRITE",
       _u(0x89, 0x18, *_F8, 0, 0, 0, 0xFF, 0x1F, 0), "sbc.compare_and_write",
       data_out=_compare_and_write, **_RW),
    _C(ORWRITE_16, None, "ORWRITE(16)", _u(0x8B, 0x18, *_F8, *_F4, 0x1F, 0), "sbc.orwrite16",
       data_out=_blocks16, **_RW),
    _C(PRE_FETCH_16, None, "PRE-FETCH(16)", _u(0x90, 0x02, *_F8, *_F4, 0x1F, 0),
       "sbc.prefetch16", **_READS),
    _C(WRITE_SAME_16, None, "WRITE SAME(16)", _u(0x93, 0x01, *_F8, *_F4, 0x1F, 0),
       "provisioning.write_same16", data_out=_write_same16, timeout_s=FLUSH_TIMEOUT_S, **_RW),
    _C(WRITE_ATOMIC_16, None, "WRITE ATOMIC(16)", _u(0x9C, 0x18, *_F8, 0, 0, 0xFF, 0xFF, 0x1F, 0),
       "sbc.write_atomic16", data_out=_write_atomic16, **_RW),
    _C(_SAI, SA_GET_LBA_STATUS, "GET LBA STATUS", _u(0x9E, SA_GET_LBA_STATUS, *_F8, *_F4, 0, 0),
       "provisioning.get_lba_status", data_in=True, **_READS),
    _C(_MI, SA_REPORT_TARGET_PORT_GROUPS, "REPORT TARGET PORT GROUPS",
       _u(0xA3, 0xE0 | SA_REPORT_TARGET_PORT_GROUPS, 0, 0, 0, 0, *_F4, 0, 0),
       "access.report_target_port_groups", data_in=True, pr=PR_READ, inline=True),
    _C(READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)", _u(0xB7, 0x1F, 0, 0, 0, 0, *_F4, 0, 0),
       "sbc.read_defect_data12", data_in=True, pr=PR_READ, inline=True),
    # third-party copy (xcopy.py): EXTENDED COPY meets the reservations of its
    # copy's units as a READ of the source and a WRITE of the destination.
    _C(EXTENDED_COPY, SA_EXTENDED_COPY_LID1, "EXTENDED COPY(LID1)",
       _u(0x83, SA_EXTENDED_COPY_LID1, 0, 0, 0, 0, 0, 0, 0, 0, *_F4, 0, 0), "copies.extended_copy",
       data_out=_be32_at(10), pr=PR_ALLOWED, timeout_s=FLUSH_TIMEOUT_S, medium=True),
    *(_C(RECEIVE_COPY_RESULTS, sa, f"RECEIVE COPY RESULTS {name}",
         _u(0x84, sa, 0xFF, 0, 0, 0, 0, 0, 0, 0, *_F4, 0, 0), "copies.receive_copy_results", data_in=True,
         pr=PR_READ, inline=True)
      for sa, name in _RCR_SAS),
    # MMC-6 (mmc.py): CD/DVD logical units only
    _C(READ_TOC_PMA_ATIP, None, "READ TOC/PMA/ATIP",
       _u(0x43, 0x02, 0x0F, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xC0), "_read_toc", data_in=True, medium=True, inline=True),
    _C(GET_CONFIGURATION, None, "GET CONFIGURATION",
       _u(0x46, 0x03, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), "_get_configuration", data_in=True,
       ua_exempt=True, inline=True),
    _C(GET_EVENT_STATUS_NOTIFICATION, None, "GET EVENT STATUS NOTIFICATION",
       _u(0x4A, 0x01, 0, 0, 0xFF, 0, 0, 0xFF, 0xFF, 0), "_get_event_status", data_in=True, ua_exempt=True, inline=True),
    _C(READ_DISC_INFORMATION, None, "READ DISC INFORMATION",
       _u(0x51, 0x07, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), "_read_disc_information", data_in=True, medium=True, inline=True),
    _C(READ_TRACK_INFORMATION, None, "READ TRACK INFORMATION",
       _u(0x52, 0x03, *_F4, 0, 0xFF, 0xFF, 0), "_read_track_information", data_in=True, medium=True, inline=True),
    _C(MECHANISM_STATUS, None, "MECHANISM STATUS",
       _u(0xBD, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0), "_mechanism_status", data_in=True, inline=True),
    # reservations (reservations.py): RESERVE answers RESERVATION CONFLICT
    # itself, RELEASE of someone else's reservation is GOOD and does nothing,
    # PERSISTENT RESERVE OUT checks its keys itself.
    _C(RESERVE_6, None, "RESERVE(6)", _u(0x16, 0, 0, 0, 0, 0), "reservations.reserve6", pr=PR_ALLOWED),
    _C(RELEASE_6, None, "RELEASE(6)", _u(0x17, 0, 0, 0, 0, 0), "reservations.release6", pr=PR_ALLOWED,
       spc2=PR_ALLOWED),
    _C(RESERVE_10, None, "RESERVE(10)", _u(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0), "reservations.reserve10",
       pr=PR_ALLOWED),
    _C(RELEASE_10, None, "RELEASE(10)", _u(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0), "reservations.release10",
       pr=PR_ALLOWED, spc2=PR_ALLOWED),
    *(_C(PERSISTENT_RESERVE_IN, sa, f"PERSISTENT RESERVE IN {name}",
         _u(0x5E, sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), "reservations.persistent_reserve_in", data_in=True, pr=PR_ALLOWED,
         inline=True)
      for sa, name in enumerate(_PRIN_SAS)),
    *(_C(PERSISTENT_RESERVE_OUT, sa, f"PERSISTENT RESERVE OUT {name}",
         _u(0x5F, sa, 0xFF, 0, 0, *_F4, 0), "reservations.persistent_reserve_out", data_out=_be32_at(5),
         pr=PR_ALLOWED)
      for sa, name in enumerate(_PROUT_SAS)),
)

# Known but not implemented (INVALID OPERATION CODE): how long their Data-Out
# is (for residuals) and how they meet a reservation still matter.
UNIMPLEMENTED: tuple[Command, ...] = (
    _C(SEND_DIAGNOSTIC, None, "SEND DIAGNOSTIC", b"", None, data_out=_be16_at(3)),
    _C(WRITE_BUFFER, None, "WRITE BUFFER", b"", None, data_out=_be24_at(6)),
    _C(READ_BUFFER, None, "READ BUFFER", b"", None, data_out=None, pr=PR_READ),
    _C(LOG_SENSE, None, "LOG SENSE", b"", None, data_out=None, pr=PR_ALLOWED, spc2=PR_ALLOWED),
    _C(MAINTENANCE_OUT, None, "MAINTENANCE OUT", b"", None, data_out=_be32_at(6)),
)


class CommandSet(NamedTuple):
    """The commands of one device type (tgt's device template).

    thin_only: commands only a thin-provisioned unit of this type has.
    """

    name: str
    commands: tuple[Command, ...]
    thin_only: frozenset[Command] = frozenset()

    def present(self, thin: bool) -> tuple[Command, ...]:
        """The commands a unit of this type has, in RSOC order."""
        return tuple(c for c in self.commands if thin or c not in self.thin_only)


def _named(*names: str) -> tuple[Command, ...]:
    rows = tuple(c for c in COMMANDS if c.name in names)
    assert len(rows) == len(names), names
    return rows


_MMC = frozenset({READ_TOC_PMA_ATIP, GET_CONFIGURATION, GET_EVENT_STATUS_NOTIFICATION,
                  READ_DISC_INFORMATION, READ_TRACK_INFORMATION, MECHANISM_STATUS})
_COPY = frozenset({EXTENDED_COPY, RECEIVE_COPY_RESULTS})

# SBC direct-access block device (peripheral device type 00h). UNMAP and
# SANITIZE BLOCK ERASE deallocate: only thin units have them (libiscsi and
# SBC-4 4.11.3 tie BLOCK ERASE to logical block provisioning).
DISK = CommandSet(
    "disk", tuple(c for c in COMMANDS if c.opcode not in _MMC),
    frozenset(_named("UNMAP", "SANITIZE BLOCK ERASE")),
)
# MMC CD/DVD drive (05h): no UNMAP, and no third-party copy (EXTENDED COPY
# moves blocks between direct-access units).
CDDVD = CommandSet(
    "cd/dvd", tuple(c for c in COMMANDS if c.opcode not in _COPY and c.opcode != UNMAP),
)

# Indexes over every row: the shape of a command (has it service actions?)
# does not depend on the device type.
SERVICE_ACTION_OPCODES = frozenset(c.opcode for c in COMMANDS if c.service_action is not None)
BY_OPCODE: dict[int, Command] = {c.opcode: c for c in COMMANDS if c.service_action is None}
BY_SERVICE_ACTION: dict[tuple[int, int], Command] = {
    (c.opcode, c.service_action): c for c in COMMANDS if c.service_action is not None
}
UA_EXEMPT_OPCODES = frozenset(c.opcode for c in COMMANDS if c.ua_exempt)
# What an iSCSI layer may serve from its receive buffer (netstore.iscsi).
FAST_PATH_OPCODES = frozenset(c.opcode for c in COMMANDS if c.fast)
# The READs a transport may try from the page cache on its loop (NOWAIT).
CACHED_READ_OPCODES = frozenset(c.opcode for c in COMMANDS if c.cached)


def _unknown_data_out(cdb: bytes | memoryview, bs: int) -> None:
    return None


def _index_data_out() -> list[Callable[[bytes | memoryview, int], int | None]]:
    index: list[Callable[[bytes | memoryview, int], int | None]] = [_unknown_data_out] * 256
    for c in (*COMMANDS, *UNIMPLEMENTED):
        index[c.opcode] = c.data_out or _unknown_data_out
    return index


# Indexed by operation code: one lookup on the transport's per-write path.
# Every service action of an opcode has the same Data-Out length.
DATA_OUT = _index_data_out()


def _index_classes(field: str) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
    by_op: dict[int, int] = {}
    by_sa: dict[tuple[int, int], int] = {}
    for c in (*COMMANDS, *UNIMPLEMENTED):
        kind = getattr(c, field)
        if c.service_action is not None:
            by_sa[(c.opcode, c.service_action)] = kind
        # An opcode's unknown service actions get its strictest class.
        by_op[c.opcode] = max(by_op.get(c.opcode, PR_ALLOWED), kind)
    return by_op, by_sa


_PR_BY_OPCODE, _PR_BY_SA = _index_classes("pr")
_SPC2_BY_OPCODE, _ = _index_classes("spc2")


_INLINE_BY_OPCODE = frozenset(
    op for op in {c.opcode for c in COMMANDS}
    if all(c.inline for c in COMMANDS if c.opcode == op))
_INLINE_BY_SA = frozenset((c.opcode, c.service_action) for c in COMMANDS
                          if c.inline and c.service_action is not None)


def runs_inline(cdb: bytes | memoryview) -> bool:
    """Whether `cdb` is answered from the unit's state alone (no disk, no
    file): a transport may run it on its loop while the unit is idle.
    Unknown operation codes are answered at once too (INVALID OPERATION CODE)."""
    if not cdb:
        return True
    op = cdb[0]
    if op in _INLINE_BY_OPCODE:
        return True
    if op in SERVICE_ACTION_OPCODES:
        return (op, cdb[1] & 0x1F) in _INLINE_BY_SA
    return op not in _KNOWN_OPCODES


_KNOWN_OPCODES = frozenset(c.opcode for c in COMMANDS)


def reservation_class(cdb: bytes | memoryview) -> int:
    """How `cdb` meets a persistent reservation someone else holds (PR_*)."""
    op = cdb[0]
    if op in SERVICE_ACTION_OPCODES:
        kind = _PR_BY_SA.get((op, cdb[1] & 0x1F))
        if kind is not None:
            return kind
    return _PR_BY_OPCODE.get(op, PR_CONFLICT)


def spc2_class(cdb: bytes | memoryview) -> int:
    """How `cdb` meets an SPC-2 reservation someone else holds (PR_*)."""
    return _SPC2_BY_OPCODE.get(cdb[0], PR_CONFLICT)
