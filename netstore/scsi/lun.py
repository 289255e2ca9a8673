# The logical unit: executes SPC-4/SBC-3 commands on a BlockBackend, keeps
# per-I_T-nexus unit attentions and the mode parameters. Pure and synchronous:
# bytes in (CDB, Data-Out), ScsiResponse out. READ/WRITE go through a
# 256-entry table indexed by operation code with one set-membership test for
# unit attentions in front.
from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import modepages as mp
from .backend import BlockBackend
from .commands import (
    BY_OPCODE,
    BY_SERVICE_ACTION,
    DATA_OUT,
    DISK,
    SERVICE_ACTION_OPCODES,
    UA_EXEMPT_OPCODES,
    Command,
    CommandSet,
)
from .limits import MAX_LUN, MAX_TRANSFER_BYTES, MIN_REPORT_LUNS_ALLOCATION
from .reservations import ReservationCommands, Reservations, file_persister, load_state
from .sbc_more import SbcMoreCommands, short_data_out
from .sense import (
    CHECK_CONDITION,
    DEVICE_RESET_OCCURRED,
    GOOD,
    INTERNAL_TARGET_FAILURE,
    INVALID_FIELD_IN_CDB,
    INVALID_OPCODE,
    IT_NEXUS_LOSS,
    LBA_OUT_OF_RANGE,
    MEDIUM_NOT_PRESENT,
    MEDIUM_REMOVAL_PREVENTED,
    MISCOMPARE_DURING_VERIFY,
    MODE_PARAMETERS_CHANGED,
    NO_ADDITIONAL_SENSE,
    NOT_READY_TO_READY,
    PARAM_LIST_LENGTH_ERROR,
    POWER_ON_RESET,
    REPORTED_LUNS_CHANGED,
    RESERVATION_CONFLICT,
    RESET_ASC,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
    Sense,
    build_sense,
    cdb_error,
)
from .vpd import PAGES as VPD_PAGES
from .vpd import VpdSource, standard_inquiry
from .xcopy import CopyCommands

log = logging.getLogger(__name__)

_U10 = struct.Struct(">IxH")  # CDB bytes 2..8: LBA, group, transfer length
_U12 = struct.Struct(">II")  # CDB bytes 2..9: LBA, transfer length
_U16 = struct.Struct(">QI")  # CDB bytes 2..13: LBA, transfer length
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

_PROTECT_MASK = 0xE0  # RDPROTECT/WRPROTECT/VRPROTECT: byte 1 bits 7..5
_FUA = 0x08
# READ CAPACITY(16) byte 14 (SBC-4 5.20.2).
_LBPME = 0x80
_LBPRZ = 0x40
_SHORT_CDB_SENSE = build_sense(INVALID_FIELD_IN_CDB)
_INTERNAL_FAILURE_SENSE = build_sense(INTERNAL_TARGET_FAILURE)
# Compare chunk used to locate the first miscompare (error path only).
_MISCOMPARE_CHUNK = 4096

# SELECT REPORT values of REPORT LUNS (SPC-4 table 163).
SELECT_ALL_LUNS = 0x00
SELECT_WELL_KNOWN = 0x01
SELECT_ALL_INCLUDING_WELL_KNOWN = 0x02

# REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
_RSOC_SUPPORTED = 0x03
_RSOC_NOT_SUPPORTED = 0x01
_RSOC_CTDP_ONE = 0x80
_RSOC_CTDP_ALL = 0x02
_RSOC_SERVACTV = 0x01
_TIMEOUTS_DESCRIPTOR_LEN = 0x0A
# REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: ATS, ATSS, CTSS, LURS, TRS.
_TMF_SUPPORT = 0x80 | 0x40 | 0x10 | 0x08 | 0x02
_TMF_EXTENDED_LEN = 0x0C


@dataclass(slots=True)
class ScsiResponse:
    """Outcome of one command.

    status: SAM status (GOOD, CHECK CONDITION, ...).
    data: Data-In payload, already cut to the CDB's allocation length.
    sense: 18 bytes of fixed-format sense data with CHECK CONDITION.
    """

    status: int
    data: bytes | memoryview = b""
    sense: bytes = b""


@dataclass(kw_only=True)
class LunIdentity:
    """How a logical unit names itself in INQUIRY and VPD pages."""

    vendor: str = "NETSTORE"
    product: str = "VDISK"
    revision: str = "0001"
    serial: str
    naa: bytes  # 8-byte NAA IEEE Registered (type 5) designator
    target_name: str
    relative_port: int = 1
    port_group: int = 1


def encode_lun(lun: int) -> bytes:
    """8-byte LUN (SAM-5 4.7): peripheral device addressing below 256,
    flat space addressing up to MAX_LUN."""
    if lun < 0x100:
        return struct.pack(">BB6x", 0, lun)
    if lun <= MAX_LUN:
        return struct.pack(">BB6x", 0x40 | (lun >> 8), lun & 0xFF)
    raise ValueError(f"LUN {lun} above {MAX_LUN}")


def report_luns_data(luns: Iterable[int], cdb: bytes | memoryview) -> bytes:
    """REPORT LUNS parameter data (SPC-4 6.33) for the LUN numbers `luns`.

    Raises:
        ScsiError: bad SELECT REPORT or allocation length below 16.
    """
    select = cdb[2]
    alloc = _BE32.unpack_from(cdb, 6)[0]
    if select not in (SELECT_ALL_LUNS, SELECT_WELL_KNOWN, SELECT_ALL_INCLUDING_WELL_KNOWN):
        raise cdb_error(2, 7)
    if alloc < MIN_REPORT_LUNS_ALLOCATION:
        raise cdb_error(6, 7)
    # No well-known logical units exist here.
    listed = [] if select == SELECT_WELL_KNOWN else sorted(luns)
    body = b"".join(encode_lun(n) for n in listed)
    return (struct.pack(">I4x", len(body)) + body)[:alloc]


class LogicalUnit(ReservationCommands, SbcMoreCommands, CopyCommands):
    """A SCSI direct-access logical unit on a block backend.

    Unit attentions are kept per I_T nexus (an opaque string). A nexus first
    seen gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED once.
    """

    def __init__(
        self,
        backend: BlockBackend,
        identity: LunIdentity,
        *,
        device_type: int = 0,
        write_cache: bool = True,
        reservation_store: Path | None = None,
        thin: bool = False,
        removable: bool = False,
        commands: CommandSet = DISK,
    ) -> None:
        """Wrap `backend`; `write_cache` is the default (and initial) WCE bit.
        `reservation_store`: file keeping persistent reservations made with
        APTPL=1 (loaded here, rewritten atomically when they change).
        `thin`: thin provisioning (UNMAP, WRITE SAME with UNMAP, LBPME,
        VPD B2h); the backend must be writable and have `discard`.
        `removable`: RMB=1; PREVENT ALLOW MEDIUM REMOVAL and START STOP UNIT
        with LOEJ eject and load the medium.
        `commands`: the command set of the device type (commands.py).

        Raises:
            ValueError: thin=True on a backend that cannot discard.
        """
        can_discard = callable(getattr(backend, "discard", None)) and not backend.read_only
        if thin and not can_discard:
            raise ValueError("a thin logical unit needs a writable backend with discard()")
        self._thin = bool(thin)
        self._discard = backend.discard if self._thin else None  # type: ignore[attr-defined]
        self.backend = backend
        self.identity = identity
        self.device_type = device_type
        bs = backend.block_size
        self._bs = bs
        self._num_blocks = backend.num_blocks
        self._read_only = backend.read_only
        self._swp = False  # software write protect, set by MODE SELECT (control page)
        self._max_blocks = MAX_TRANSFER_BYTES // bs
        self._pread = backend.pread
        self._pwrite = backend.pwrite
        self._flush = backend.flush
        self._default_wce = write_cache
        self._wce = write_cache
        # Unit attention state: `_clear` holds nexuses seen and with nothing
        # pending, so the hot path is a single membership test.
        self._known: set[str] = set()
        self._clear: set[str] = set()
        self._pending: dict[str, list[Sense]] = {}
        self._vpd = VpdSource(
            device_type=device_type, vendor=identity.vendor, serial=identity.serial,
            naa=identity.naa, target_name=identity.target_name,
            relative_port=identity.relative_port, port_group=identity.port_group,
            block_size=bs, has_volatile_cache=True, thin=self._thin,
        )
        self._removable = removable
        self._loaded = True
        # Nexuses holding a PREVENT ALLOW MEDIUM REMOVAL prevention (SBC-4 5.13).
        self._prevent: set[str] = set()
        self._inquiry_data = self._standard_inquiry()
        # Reservations: the hot path tests only `_reserved` (reservations.py).
        self._pr = Reservations(
            ua=lambda sense, nexuses: self.establish_unit_attention(sense, nexuses=nexuses),
            persist=None if reservation_store is None else file_persister(reservation_store),
            state=load_state(reservation_store), relative_port=identity.relative_port,
        )
        self._reserved = self._pr.active
        # The commands of the device type this unit has (UNMAP only when
        # thin); any other is INVALID OPERATION CODE, and not reported.
        self._commands: tuple[Command, ...] = commands.present(self._thin)
        table = [self._invalid_opcode] * 256
        for op in SERVICE_ACTION_OPCODES:
            table[op] = self._service_action
        self._sa_table = {}
        for cmd in self._commands:
            if cmd.service_action is None:
                table[cmd.opcode] = self._handler(cmd)
            else:
                self._sa_table[(cmd.opcode, cmd.service_action)] = self._handler(cmd)
        self._table = table
        self._loaded_tables = (list(table), dict(self._sa_table))
        self._closed = False

    # ------------------------------------------------------------------ API

    @property
    def thin(self) -> bool:
        """Whether the logical unit is thin-provisioned (LBPME=1)."""
        return self._thin

    @property
    def removable(self) -> bool:
        """Whether the medium is removable (RMB=1)."""
        return self._removable

    @property
    def medium_loaded(self) -> bool:
        """Whether the medium is in (always, unless removable and ejected)."""
        return self._loaded

    def _standard_inquiry(self) -> bytes:
        ident = self.identity
        return standard_inquiry(self.device_type, ident.vendor, ident.product,
                                ident.revision, removable=self._removable)

    def load(self, nexus: str | None = None) -> None:
        """Load the medium; every other nexus gets UA NOT READY TO READY
        CHANGE (SBC-4 4.19)."""
        if self._loaded:
            return
        self._loaded = True
        table, sa_table = self._loaded_tables
        self._table[:] = table
        self._sa_table.clear()
        self._sa_table.update(sa_table)
        self.establish_unit_attention(NOT_READY_TO_READY, except_nexus=nexus)

    def eject(self) -> None:
        """Unload the medium: commands that reach it get NOT READY, MEDIUM
        NOT PRESENT until it is loaded again. Ignores preventions."""
        if not self._loaded:
            return
        if not self._read_only:
            self._flush()
        self._loaded = False
        for cmd in self._commands:
            if not cmd.medium:
                continue
            if cmd.service_action is None:
                self._table[cmd.opcode] = self._no_medium
            else:
                self._sa_table[(cmd.opcode, cmd.service_action)] = self._no_medium

    def _no_medium(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        raise ScsiError(MEDIUM_NOT_PRESENT)

    def _handler(self, cmd: Command):  # noqa: ANN202 (a bound handler)
        """The callable that runs `cmd`: a method of the unit or of one of its parts."""
        assert cmd.handler is not None
        part, _, method = cmd.handler.rpartition(".")
        return getattr(getattr(self, part) if part else self, method)

    def data_out_length(self, cdb: bytes | memoryview) -> int | None:
        """Bytes of Data-Out `cdb` asks for (SPDTL); None when unknown.
        The transport compares it with the Data-Out it expects (EDTL) to set
        residuals; execute() writes nothing and answers CHECK CONDITION
        INVALID FIELD IN COMMAND INFORMATION UNIT when it gets less, and
        writes exactly SPDTL bytes when it gets more."""
        try:
            return DATA_OUT[cdb[0]](cdb, self._bs)
        except (IndexError, struct.error):
            return None

    @property
    def write_cache(self) -> bool:
        """Current WCE bit of the caching mode page."""
        return self._wce

    @property
    def known_nexuses(self) -> frozenset[str]:
        """I_T nexuses this logical unit has seen."""
        return frozenset(self._known)

    def execute(
        self, nexus: str, cdb: bytes | memoryview, data_out: bytes | memoryview | None
    ) -> ScsiResponse:
        """Run one command for `nexus`.

        Args:
            nexus: opaque I_T nexus identifier.
            cdb: the CDB (may carry padding after its own length).
            data_out: the Data-Out buffer, or None.

        Returns:
            A ScsiResponse; this never raises for anything the initiator sends.
            A command that fails changes nothing on the medium.
        """
        try:
            if nexus not in self._clear:
                ua = self._unit_attention(nexus, cdb[0])
                if ua is not None:
                    return ua
            if self._reserved and self._pr.conflicts(nexus, cdb):
                return ScsiResponse(RESERVATION_CONFLICT)
            return self._table[cdb[0]](nexus, cdb, data_out)
        except ScsiError as e:
            return ScsiResponse(CHECK_CONDITION, b"", e.sense)
        except (IndexError, struct.error):
            # CDB shorter than its operation code says.
            return ScsiResponse(CHECK_CONDITION, b"", _SHORT_CDB_SENSE)
        except Exception:
            log.exception("internal error executing CDB %s", bytes(cdb[:16]).hex())
            return ScsiResponse(CHECK_CONDITION, b"", _INTERNAL_FAILURE_SENSE)

    def establish_unit_attention(
        self, sense: Sense, *, except_nexus: str | None = None,
        nexuses: Iterable[str] | None = None,
    ) -> None:
        """Queue unit attention `sense` for `nexuses` (default: every known
        nexus), skipping `except_nexus`. A reset (ASC 29h) replaces whatever
        was pending, as SAM-5 lets the highest-priority condition win."""
        targets = self._known if nexuses is None else nexuses
        for n in list(targets):
            if n != except_nexus:
                self._queue_ua(n, sense)

    def clear_unit_attention(self, nexus: str, sense: Sense) -> None:
        """Drop a pending `sense` for `nexus` (REPORT LUNS clears 3F/0E)."""
        q = self._pending.get(nexus)
        if q and sense in q:
            q.remove(sense)
            if not q and nexus in self._known:
                del self._pending[nexus]
                self._clear.add(nexus)

    def reset(self, by_nexus: str | None, *, ua: Sense = DEVICE_RESET_OCCURRED) -> None:
        """LOGICAL UNIT RESET (SAM-5 6.6): mode parameters return to their
        defaults and every other nexus (all when `by_nexus` is None) gets a
        unit attention, BUS DEVICE RESET FUNCTION OCCURRED by default."""
        self._wce = self._default_wce
        if self._swp:
            self._set_swp(False)  # mode parameters return to their defaults
        self._prevent.clear()  # SBC-4 5.13: a reset ends every prevention
        self._pr.drop_spc2()  # persistent reservations survive resets
        self._reserved = self._pr.active
        self.establish_unit_attention(ua, except_nexus=by_nexus)

    def nexus_gone(self, nexus: str) -> None:
        """The I_T nexus ended: its pending conditions are replaced by
        I_T NEXUS LOSS OCCURRED, reported if the nexus comes back. Its SPC-2
        reservation goes; its persistent registration stays."""
        self._pr.drop_spc2(nexus)
        self._reserved = self._pr.active
        self._prevent.discard(nexus)
        self.drop_copy_results(nexus)
        if nexus in self._known:
            self._queue_ua(nexus, IT_NEXUS_LOSS)

    def close(self) -> None:
        """Flush and close the backend (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._read_only:
                self._flush()
        finally:
            self.backend.close()

    # ---------------------------------------------------- unit attentions

    def _queue_ua(self, nexus: str, sense: Sense) -> None:
        q = self._pending.get(nexus)
        if sense.asc == RESET_ASC or not q:
            self._pending[nexus] = [sense]
        elif sense not in q:
            q.append(sense)
        self._clear.discard(nexus)

    def _unit_attention(self, nexus: str, opcode: int) -> ScsiResponse | None:
        if nexus not in self._known:
            self._known.add(nexus)
            rest = [s for s in self._pending.get(nexus, ()) if s.asc != RESET_ASC]
            self._pending[nexus] = [POWER_ON_RESET, *rest]
        q = self._pending.get(nexus)
        if not q:
            self._pending.pop(nexus, None)
            self._clear.add(nexus)
            return None
        if opcode in UA_EXEMPT_OPCODES:
            return None
        return ScsiResponse(CHECK_CONDITION, b"", build_sense(self._take_ua(nexus)))

    def _take_ua(self, nexus: str) -> Sense | None:
        q = self._pending.get(nexus)
        if not q:
            return None
        sense = q.pop(0)
        if not q:
            del self._pending[nexus]
            self._clear.add(nexus)
        return sense

    # ------------------------------------------------------------ dispatch

    def _invalid_opcode(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        raise ScsiError(INVALID_OPCODE, field=(0, 7))

    def _service_action(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        handler = self._sa_table.get((cdb[0], cdb[1] & 0x1F))
        if handler is None:
            raise cdb_error(1, 4)
        return handler(nexus, cdb, data)

    # ------------------------------------------------------------ READ

    def _read(self, lba: int, n: int, len_byte: int) -> ScsiResponse:
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if n > self._max_blocks:
            raise cdb_error(len_byte, 7)
        if not n:
            return ScsiResponse(GOOD)
        bs = self._bs
        try:
            return ScsiResponse(GOOD, self._pread(lba * bs, n * bs))
        except OSError:
            log.exception("read error at LBA %d", lba)
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None

    def _read6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = _BE32.unpack_from(cdb, 0)[0] & 0x1FFFFF
        return self._read(lba, cdb[4] or 256, 4)

    def _read10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U10.unpack_from(cdb, 2)
        return self._read(lba, n, 7)

    def _read12(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U12.unpack_from(cdb, 2)
        return self._read(lba, n, 6)

    def _read16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U16.unpack_from(cdb, 2)
        return self._read(lba, n, 10)

    # ------------------------------------------------------------ WRITE

    def _write(
        self, lba: int, n: int, data: bytes | memoryview | None, len_byte: int, sync: bool
    ) -> ScsiResponse:
        if self._read_only:
            raise ScsiError(WRITE_PROTECTED)
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if n > self._max_blocks:
            raise cdb_error(len_byte, 7)
        if not n:
            return ScsiResponse(GOOD)
        nbytes = n * self._bs
        if data is None or len(data) < nbytes:
            # Less Data-Out than the CDB asks to write (EDTL < SPDTL).
            return self._write_short(lba, data, sync)
        if len(data) != nbytes:
            data = memoryview(data)[:nbytes]
        try:
            self._pwrite(lba * self._bs, data)
            if sync or not self._wce:
                self._flush()
        except OSError:
            log.exception("write error at LBA %d", lba)
            raise ScsiError(WRITE_ERROR, information=lba) from None
        return ScsiResponse(GOOD)

    def _write6(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba = _BE32.unpack_from(cdb, 0)[0] & 0x1FFFFF
        return self._write(lba, cdb[4] or 256, data, 4, False)

    def _write10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U10.unpack_from(cdb, 2)
        return self._write(lba, n, data, 7, cdb[1] & _FUA)

    def _write12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U12.unpack_from(cdb, 2)
        return self._write(lba, n, data, 6, cdb[1] & _FUA)

    def _write16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = _U16.unpack_from(cdb, 2)
        return self._write(lba, n, data, 10, cdb[1] & _FUA)

    # ---------------------------------------------- WRITE AND VERIFY / VERIFY

    def _write_verify(
        self, cdb: bytes, lba: int, n: int, data: bytes | None, len_byte: int
    ) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        if cdb[1] & 0x04:  # only BYTCHK 0 and 1 (SBC-3 has a one-bit BYTCHK)
            raise cdb_error(1, 2)
        # Verify means the medium holds the data: write, then flush.
        return self._write(lba, n, data, len_byte, True)

    def _write_verify10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U10.unpack_from(cdb, 2)
        return self._write_verify(cdb, lba, n, data, 7)

    def _write_verify12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U12.unpack_from(cdb, 2)
        return self._write_verify(cdb, lba, n, data, 6)

    def _write_verify16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U16.unpack_from(cdb, 2)
        return self._write_verify(cdb, lba, n, data, 10)

    def _verify(
        self, cdb: bytes, lba: int, n: int, data: bytes | None, len_byte: int
    ) -> ScsiResponse:
        if cdb[1] & _PROTECT_MASK:
            raise cdb_error(1, 7)
        bytchk = (cdb[1] >> 1) & 0x03
        if bytchk == 2:  # reserved (SBC-4 table 72)
            raise cdb_error(1, 2)
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if n > self._max_blocks:
            raise cdb_error(len_byte, 7)
        if not bytchk or not n:
            return ScsiResponse(GOOD)
        bs = self._bs
        want = n * bs if bytchk == 1 else bs
        if data is None or len(data) < want:
            raise short_data_out()
        ref = bytes(data[:want])
        if bytchk == 3:  # one block of Data-Out compared with every block
            ref = ref * n
        try:
            stored = self._pread(lba * bs, n * bs)
        except OSError:
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None
        if stored != ref:
            off = _first_difference(stored, ref)
            if bytchk == 3:
                off %= bs
            raise ScsiError(MISCOMPARE_DURING_VERIFY, information=off)
        return ScsiResponse(GOOD)

    def _verify10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U10.unpack_from(cdb, 2)
        return self._verify(cdb, lba, n, data, 7)

    def _verify12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U12.unpack_from(cdb, 2)
        return self._verify(cdb, lba, n, data, 6)

    def _verify16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba, n = _U16.unpack_from(cdb, 2)
        return self._verify(cdb, lba, n, data, 10)

    # ------------------------------------------------- SYNCHRONIZE CACHE

    def _sync_cache(self, lba: int, n: int) -> ScsiResponse:
        # NUMBER OF LOGICAL BLOCKS 0 means "through the last LBA".
        if lba + max(n, 1) > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        try:
            self._flush()
        except OSError:
            log.exception("flush failed")
            raise ScsiError(WRITE_ERROR) from None
        return ScsiResponse(GOOD)

    def _sync_cache10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = _U10.unpack_from(cdb, 2)
        return self._sync_cache(lba, n)

    def _sync_cache16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = _U16.unpack_from(cdb, 2)
        return self._sync_cache(lba, n)

    # ----------------------------------------------------- simple commands

    def _test_unit_ready(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return ScsiResponse(GOOD)

    def _request_sense(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x01:  # DESC: descriptor format sense is not supported
            raise cdb_error(1, 0)
        alloc = cdb[4]
        ua = self._take_ua(nexus)
        sense = build_sense(ua if ua is not None else NO_ADDITIONAL_SENSE)
        return ScsiResponse(GOOD, sense[:alloc])

    def _inquiry(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x02:  # CmdDt is obsolete (SPC-4 6.6.1)
            raise cdb_error(1, 1)
        alloc = _BE16.unpack_from(cdb, 3)[0]
        if not cdb[1] & 0x01:
            if cdb[2]:
                raise cdb_error(2, 7)
            return ScsiResponse(GOOD, self._inquiry_data[:alloc])
        page = VPD_PAGES.get(cdb[2])
        if page is None:
            raise cdb_error(2, 7)
        return ScsiResponse(GOOD, page(self._vpd)[:alloc])

    def _read_capacity10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = _BE32.unpack_from(cdb, 2)[0]
        if not cdb[8] & 0x01 and lba:  # LBA must be 0 without PMI (SBC-3 5.15)
            raise cdb_error(2, 7)
        last = min(max(self._num_blocks - 1, 0), 0xFFFFFFFF)
        return ScsiResponse(GOOD, struct.pack(">II", last, self._bs))

    def _read_capacity16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = _BE32.unpack_from(cdb, 10)[0]
        lba = _BE64.unpack_from(cdb, 2)[0]
        if not cdb[14] & 0x01 and lba:
            raise cdb_error(2, 7)
        last = max(self._num_blocks - 1, 0)
        # Byte 14: LBPME (thin) and LBPRZ (unmapped blocks read as zeros).
        lbp = _LBPME | _LBPRZ if self._thin else 0
        return ScsiResponse(GOOD, struct.pack(">QIxxB17x", last, self._bs, lbp)[:alloc])

    def _start_stop_unit(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        power_condition = cdb[4] >> 4
        # SBC-3 table 93: 0, 1, 2, 3, 7, Ah, Bh are defined. A removable unit
        # ignores the field's other values, as libiscsi's PwrCnd test expects.
        if power_condition not in (0x0, 0x1, 0x2, 0x3, 0x7, 0xA, 0xB) and not self._removable:
            raise cdb_error(4, 7)
        start = cdb[4] & 0x01
        loej = cdb[4] & 0x02
        no_flush = cdb[4] & 0x04
        if power_condition == 0 and loej and self._removable:
            # SBC-4 5.25: LOEJ with START loads, without it ejects; neither
            # while a nexus prevents medium removal.
            if self._prevent:
                raise ScsiError(MEDIUM_REMOVAL_PREVENTED)
            if start:
                self.load(nexus)
            else:
                try:
                    self.eject()
                except OSError:
                    raise ScsiError(WRITE_ERROR) from None
            return ScsiResponse(GOOD)
        if power_condition == 0 and not start and not no_flush and not self._read_only \
                and self._loaded:
            try:
                self._flush()
            except OSError:
                raise ScsiError(WRITE_ERROR) from None
        return ScsiResponse(GOOD)

    def _prevent_allow(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        # PREVENT field (SBC-4 5.13): bit 0 prevents removal by this nexus;
        # bit 1 (medium changer) is accepted and has no effect here.
        prevent = cdb[4] & 0x01
        if not self._removable:
            return ScsiResponse(GOOD)  # nothing to remove: accepted, as tgt and LIO do
        if prevent:
            self._prevent.add(nexus)
        else:
            self._prevent.discard(nexus)
        return ScsiResponse(GOOD)

    def _report_luns(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        # Reached only when the LU is used without a ScsiTarget: LUN 0 alone.
        payload = report_luns_data((0,), cdb)
        self.clear_unit_attention(nexus, REPORTED_LUNS_CHANGED)
        return ScsiResponse(GOOD, payload)

    # ---------------------------------------------------------- MODE pages

    def _mode_sense(self, cdb: bytes, ten: bool, alloc: int) -> ScsiResponse:
        dbd = cdb[1] & 0x08
        long = ten and bool(cdb[1] & 0x10)
        pc = cdb[2] >> 6
        page_code = cdb[2] & 0x3F
        subpage = cdb[3]
        if subpage not in (0x00, mp.ALL_SUBPAGES):
            raise cdb_error(3, 7)
        pages = mp.pages_for(page_code, pc, self._wce, self._default_wce, self._mode_pages(),
                             swp=self._swp, swp_changeable=not self.backend.read_only)
        bd = b"" if dbd else mp.block_descriptor(self._num_blocks, self._bs, long)
        devspec = mp.device_specific(self._read_only)
        if ten:
            total = mp.MODE10_HEADER_LEN + len(bd) + len(pages)
            header = struct.pack(
                ">HBBBxH", total - 2, 0, devspec, mp.LONGLBA if long and bd else 0, len(bd)
            )
        else:
            total = mp.MODE6_HEADER_LEN + len(bd) + len(pages)
            header = struct.pack(">BBBB", total - 1, 0, devspec, len(bd))
        return ScsiResponse(GOOD, (header + bd + pages)[:alloc])

    def _mode_pages(self) -> dict[int, bytes] | None:
        """Mode pages of the device type beyond the SBC ones (none here)."""
        return None

    def _mode_sense6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return self._mode_sense(cdb, False, cdb[4])

    def _mode_sense10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return self._mode_sense(cdb, True, _BE16.unpack_from(cdb, 7)[0])

    def _mode_select(
        self, nexus: str, cdb: bytes, data: bytes | memoryview | None, plen: int,
        len_byte: int, header_len: int,
    ) -> ScsiResponse:
        if cdb[1] & 0x01:  # SP: no saved pages
            raise cdb_error(1, 0)
        if not plen:
            return ScsiResponse(GOOD)
        if data is None or len(data) < plen:
            raise cdb_error(len_byte, 7)
        if plen < header_len:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        new_wce, new_swp = mp.parse_mode_select(
            data[:plen], header_len, wce=self._wce, block_size=self._bs, swp=self._swp,
            swp_changeable=not self.backend.read_only,
        )
        changed = False
        if new_wce != self._wce:
            if not new_wce and not self._read_only:
                self._flush()  # dirty data must not outlive write-back mode
            self._wce = new_wce
            changed = True
        if new_swp != self._swp:
            self._set_swp(new_swp)
            changed = True
        if changed:
            self.establish_unit_attention(MODE_PARAMETERS_CHANGED, except_nexus=nexus)
        return ScsiResponse(GOOD)

    def _set_swp(self, swp: bool) -> None:
        """Software write protect: the unit refuses writes as a read-only one
        does (DATA PROTECT / WRITE PROTECTED) and MODE SENSE shows WP."""
        if swp and not self._read_only:
            self._flush()
        self._swp = swp
        self._read_only = swp or self.backend.read_only

    def _mode_select6(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        return self._mode_select(nexus, cdb, data, cdb[4], 4, mp.MODE6_HEADER_LEN)

    def _mode_select10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        plen = _BE16.unpack_from(cdb, 7)[0]
        return self._mode_select(nexus, cdb, data, plen, 7, mp.MODE10_HEADER_LEN)

    # ------------------------------------------------ MAINTENANCE IN

    def _report_opcodes(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        rctd = bool(cdb[2] & 0x80)
        option = cdb[2] & 0x07
        req_op = cdb[3]
        req_sa = _BE16.unpack_from(cdb, 4)[0]
        alloc = _BE32.unpack_from(cdb, 6)[0]
        if option == 0:
            body = b"".join(_all_commands_descriptor(c, rctd) for c in self._commands)
            payload = _BE32.pack(len(body)) + body
        elif option in (1, 2, 3):
            has_sa = req_op in SERVICE_ACTION_OPCODES
            if option == 1 and has_sa:
                raise cdb_error(3, 7)
            if option == 2 and not has_sa and req_op in BY_OPCODE:
                raise cdb_error(3, 7)
            if has_sa or option == 2:
                cmd = BY_SERVICE_ACTION.get((req_op, req_sa))
            else:
                cmd = BY_OPCODE.get(req_op)
            if cmd is None or cmd not in self._commands:
                payload = struct.pack(">BBH", 0, _RSOC_NOT_SUPPORTED, 0)
            else:
                flags = _RSOC_SUPPORTED | (_RSOC_CTDP_ONE if rctd else 0)
                payload = struct.pack(">BBH", 0, flags, cmd.cdb_length) + cmd.usage
                if rctd:
                    payload += _timeouts_descriptor(cmd.timeout_s)
        else:
            raise cdb_error(2, 2)
        return ScsiResponse(GOOD, payload[:alloc])

    def _report_tmfs(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = _BE32.unpack_from(cdb, 6)[0]
        if cdb[2] & 0x80:  # REPD: extended format
            payload = bytes((_TMF_SUPPORT, 0, 0, _TMF_EXTENDED_LEN)) + bytes(_TMF_EXTENDED_LEN)
        else:
            payload = bytes((_TMF_SUPPORT, 0, 0, 0))
        return ScsiResponse(GOOD, payload[:alloc])


def _timeouts_descriptor(seconds: int) -> bytes:
    # SPC-4 6.35.4: length, reserved, command specific, nominal, recommended.
    return struct.pack(">HxBII", _TIMEOUTS_DESCRIPTOR_LEN, 0, 0, seconds)


def _all_commands_descriptor(cmd: Command, rctd: bool) -> bytes:
    flags = (_RSOC_CTDP_ALL if rctd else 0) | (
        _RSOC_SERVACTV if cmd.service_action is not None else 0
    )
    d = struct.pack(">BxHxBH", cmd.opcode, cmd.service_action or 0, flags, cmd.cdb_length)
    return d + _timeouts_descriptor(cmd.timeout_s) if rctd else d


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where `a` and `b` differ (they do differ)."""
    for start in range(0, len(a), _MISCOMPARE_CHUNK):
        end = start + _MISCOMPARE_CHUNK
        if a[start:end] != b[start:end]:
            for i in range(start, min(end, len(a))):
                if a[i] != b[i]:
                    return i
    return len(a)
