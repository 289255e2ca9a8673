# The logical unit: runs the commands of its device type's command set
# (commands.py) on a DiskImage, itself or through its parts (reservations, sbc,
# provisioning, copies, access: ALUA, supported: RSOC); keeps unit attentions,
# mode parameters and the medium state. Pure and synchronous: CDB and Data-Out
# in, ScsiResponse out. READ/WRITE go through a 256-entry table indexed by
# operation code behind one set-membership test (unit attentions) and one
# boolean (ALUA's `accessible`). Its task set (taskset.py) orders the commands
# run off a transport's loop; a READ may try NOWAIT first.
"""LogicalUnit: a SCSI logical unit on a block backend, executing one command at a time."""
from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from pathlib import Path

from netstore.disk.api import DiskImage

from . import modepages as mp
from .alua import AsymmetricAccess, PortGroups
from .attention import UnitAttentions
from .cdb import BE16, BE32, FUA, PROTECT_MASK, U10, U12, U16
from .commands import (
    DATA_OUT,
    DISK,
    SERVICE_ACTION_OPCODES,
    UA_EXEMPT_OPCODES,
    Command,
    CommandSet,
)
from .limits import MAX_TRANSFER_BYTES
from .luns import encode_lun, report_luns_data
from .reservations import ReservationCommands, Reservations, ReservationStore
from .rsoc import SupportedCommands
from .sbc import BlockCommands
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
    MODE_PARAMETERS_CHANGED,
    NO_ADDITIONAL_SENSE,
    NOT_READY_TO_READY,
    PARAM_LIST_LENGTH_ERROR,
    REPORTED_LUNS_CHANGED,
    RESERVATION_CONFLICT,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
    Sense,
    build_sense,
    cdb_error,
)
from .taskset import TaskSet
from .thin import Provisioning
from .unit import NOWAIT, LunIdentity, ScsiResponse, WouldBlock
from .vpd import DEVICE_TYPE_DISK, VpdSource, standard_inquiry
from .vpd import PAGES as VPD_PAGES
from .xcopy import CopyPeers, ThirdPartyCopy

# ScsiResponse, LunIdentity (unit.py) and encode_lun (luns.py) are found here too.
__all__ = ["NOWAIT", "LogicalUnit", "LunIdentity", "ScsiResponse", "WouldBlock", "encode_lun", "report_luns_data"]

log = logging.getLogger(__name__)


_SHORT_CDB_SENSE = build_sense(INVALID_FIELD_IN_CDB)
_INTERNAL_FAILURE_SENSE = build_sense(INTERNAL_TARGET_FAILURE)


class LogicalUnit:
    """A SCSI direct-access logical unit on a block backend.

    Unit attentions are kept per I_T nexus (an opaque string). A nexus first
    seen gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED once.
    """

    def __init__(
        self,
        backend: DiskImage,
        identity: LunIdentity,
        *,
        device_type: int = DEVICE_TYPE_DISK,
        write_cache: bool = True,
        reservation_store: Path | ReservationStore | None = None,
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
        # Page-cache-only reads (raw images), BlockingIOError when not cached.
        self._pread_nowait = getattr(backend, "pread_nowait", None)
        self.reads_nowait = self._pread_nowait is not None
        self.tasks = TaskSet()  # the commands waiting for the medium, in order
        self._pwrite = backend.pwrite
        self._flush = backend.flush
        self._default_wce = write_cache
        self._wce = write_cache
        # Unit attentions: the hot path tests `attention_clear` (nexuses seen,
        # nothing pending) only; a read may pass queued reads only then.
        self._ua = UnitAttentions()
        self.attention_clear = self._ua.clear
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
            store=reservation_store, relative_port=identity.relative_port,
        )
        self._reserved = self._pr.active
        # The unit's parts, which run the rest of its commands.
        self.reservations = ReservationCommands(self._pr, self._sync_reserved)
        self.sbc = BlockCommands(self)
        self.provisioning = Provisioning(self)
        self.copies = ThirdPartyCopy(self)
        self.access = AsymmetricAccess(self)  # ALUA; keeps `accessible`, the hot path's test
        # The commands of the device type this unit has (UNMAP only when
        # thin); any other is INVALID OPERATION CODE, and not reported.
        self._commands: tuple[Command, ...] = commands.present(self._thin)
        self.supported = SupportedCommands(self._commands)
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

    @property
    def block_size(self) -> int:
        """Bytes per logical block."""
        return self._bs

    @property
    def num_blocks(self) -> int:
        """Logical blocks of the medium."""
        return self._num_blocks

    @property
    def max_blocks(self) -> int:
        """Blocks one command may transfer at most."""
        return self._max_blocks

    @property
    def read_only(self) -> bool:
        """Writes are refused: read-only backend or software write protect."""
        return self._read_only

    def conflicts(self, nexus: str, cdb: bytes | memoryview) -> bool:
        """Whether `cdb` from `nexus` meets a RESERVATION CONFLICT here."""
        return self._reserved and self._pr.conflicts(nexus, cdb)

    def _sync_reserved(self) -> None:
        self._reserved = self._pr.active

    def check_writable(self, lba: int, n: int) -> None:
        """WRITE PROTECTED on a read-only unit, LBA OUT OF RANGE past the end."""
        if self._read_only:
            raise ScsiError(WRITE_PROTECTED)
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)

    def read_blocks(self, lba: int, n: int) -> bytes:
        """`n` blocks at `lba`; UNRECOVERED READ ERROR on an I/O error."""
        try:
            return self._pread(lba * self._bs, n * self._bs)
        except OSError:
            log.exception("read error at LBA %d", lba)
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None

    def write_blocks(self, lba: int, data: bytes | memoryview, sync: bool) -> None:
        """Write `data` at `lba`, flushed when `sync` or WCE=0; WRITE ERROR
        on an I/O error."""
        try:
            self._pwrite(lba * self._bs, data)
            if sync or not self._wce:
                self._flush()
        except OSError:
            log.exception("write error at LBA %d", lba)
            raise ScsiError(WRITE_ERROR, information=lba) from None

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
        return frozenset(self._ua.known)

    def execute(
        self, nexus: str, cdb: bytes | memoryview, data_out: bytes | memoryview | None,
        view: CopyPeers | None = None,
    ) -> ScsiResponse:
        """Run one command for `nexus`.

        Args:
            nexus: opaque I_T nexus identifier.
            cdb: the CDB (may carry padding after its own length).
            data_out: the Data-Out buffer, or None.
            view: the ScsiTarget the command came through, where an EXTENDED
                COPY finds the units it names (default: this unit alone).

        Returns:
            A ScsiResponse; this never raises for anything the initiator sends.
            A command that fails changes nothing on the medium.

        Raises:
            WouldBlock: `data_out` is NOWAIT (a READ only) and the blocks are
                not all cached; nothing changed, run it where it may wait.
        """
        try:
            if nexus not in self.attention_clear:
                exempt = cdb[0] in UA_EXEMPT_OPCODES  # an empty CDB fails first
                if self._ua.pending(nexus) and not exempt:
                    return ScsiResponse(CHECK_CONDITION, b"", build_sense(self._ua.take(nexus)))
            if not self.accessible and (refused := self.access.refusal(cdb)) is not None:
                return ScsiResponse(CHECK_CONDITION, b"", refused)
            if self._reserved and self._pr.conflicts(nexus, cdb):
                return ScsiResponse(RESERVATION_CONFLICT)
            if view is not None:
                return self._in_view(nexus, cdb, data_out, view)
            return self._table[cdb[0]](nexus, cdb, data_out)
        except ScsiError as e:
            return ScsiResponse(CHECK_CONDITION, b"", e.sense)
        except (IndexError, struct.error):
            # CDB shorter than its operation code says.
            return ScsiResponse(CHECK_CONDITION, b"", _SHORT_CDB_SENSE)
        except WouldBlock:
            raise
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
        self._ua.establish(sense, except_nexus=except_nexus, nexuses=nexuses)

    def set_port_groups(self, groups: PortGroups) -> bool:
        """The target port groups and their states from now on; whether they changed (AsymmetricAccess.set)."""
        return self.access.set(groups)

    def clear_unit_attention(self, nexus: str, sense: Sense) -> None:
        """Drop a pending `sense` for `nexus` (REPORT LUNS clears 3F/0E)."""
        self._ua.discard(nexus, sense)

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
        self.copies.drop_results(nexus)
        if nexus in self._ua.known:
            self._ua.queue(nexus, IT_NEXUS_LOSS)

    def close(self) -> None:
        """Flush and close the backend (idempotent); after its queued commands."""
        if not self.tasks.idle:
            self.tasks.when_idle(self.close)
            return
        if self._closed:
            return
        self._closed = True
        try:
            if not self._read_only:
                self._flush()
        finally:
            self.backend.close()

    # ------------------------------------------------------------ dispatch

    def _invalid_opcode(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        raise ScsiError(INVALID_OPCODE, field=(0, 7))

    def _in_view(self, nexus: str, cdb: bytes | memoryview, data: bytes | memoryview | None,
                 view: CopyPeers) -> ScsiResponse:
        # The unit's own EXTENDED COPY handler, unless it has none or the
        # medium is out (then the table's answer).
        copy = self.copies.extended_copy
        if self._sa_table.get((cdb[0], cdb[1] & 0x1F)) == copy:
            return copy(nexus, cdb, data, view)
        return self._table[cdb[0]](nexus, cdb, data)

    def _service_action(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        handler = self._sa_table.get((cdb[0], cdb[1] & 0x1F))
        if handler is None:
            raise cdb_error(1, 4)
        return handler(nexus, cdb, data)

    # ------------------------------------------------------------ READ

    def _read(self, lba: int, n: int, len_byte: int, data: object = None) -> ScsiResponse:
        if lba + n > self._num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        if n > self._max_blocks:
            raise cdb_error(len_byte, 7)
        if not n:
            return ScsiResponse(GOOD)
        bs = self._bs
        if data is NOWAIT:
            nowait = self._pread_nowait
            if nowait is None:
                raise WouldBlock
            try:
                return ScsiResponse(GOOD, nowait(lba * bs, n * bs))
            except OSError:  # not cached (or failing: the real read reports it)
                raise WouldBlock from None
        try:
            return ScsiResponse(GOOD, self._pread(lba * bs, n * bs))
        except OSError:
            log.exception("read error at LBA %d", lba)
            raise ScsiError(UNRECOVERED_READ_ERROR, information=lba) from None

    def _read6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba = BE32.unpack_from(cdb, 0)[0] & 0x1FFFFF
        return self._read(lba, cdb[4] or 256, 4, data)

    def _read10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U10.unpack_from(cdb, 2)
        return self._read(lba, n, 7, data)

    def _read12(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U12.unpack_from(cdb, 2)
        return self._read(lba, n, 6, data)

    def _read16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U16.unpack_from(cdb, 2)
        return self._read(lba, n, 10, data)

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

    def write_range(self, lba: int, n: int, data: bytes | memoryview | None, len_byte: int,
                    sync: bool) -> ScsiResponse:
        """WRITE of `n` blocks at `lba` (transfer length at CDB byte `len_byte`)."""
        return self._write(lba, n, data, len_byte, sync)

    def _write_short(
        self, lba: int, data: bytes | memoryview | None, sync: bool
    ) -> ScsiResponse:
        """WRITE with less Data-Out than its transfer length (EDTL < SPDTL),
        FCP-4 9.4.2 a): the bytes that came are written, the rest of the range
        is left as it was, the transport reports the overflow residual
        (libiscsi 1.19's iSCSIResiduals; other commands answer 0E/03)."""
        if data:
            self.write_blocks(lba, data, sync)
        return ScsiResponse(GOOD)

    def _write6(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        lba = BE32.unpack_from(cdb, 0)[0] & 0x1FFFFF
        return self._write(lba, cdb[4] or 256, data, 4, False)

    def _write10(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U10.unpack_from(cdb, 2)
        return self._write(lba, n, data, 7, cdb[1] & FUA)

    def _write12(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U12.unpack_from(cdb, 2)
        return self._write(lba, n, data, 6, cdb[1] & FUA)

    def _write16(self, nexus: str, cdb: bytes, data: bytes | None) -> ScsiResponse:
        if cdb[1] & PROTECT_MASK:
            raise cdb_error(1, 7)
        lba, n = U16.unpack_from(cdb, 2)
        return self._write(lba, n, data, 10, cdb[1] & FUA)

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
        lba, n = U10.unpack_from(cdb, 2)
        return self._sync_cache(lba, n)

    def _sync_cache16(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        lba, n = U16.unpack_from(cdb, 2)
        return self._sync_cache(lba, n)

    # ----------------------------------------------------- simple commands

    def _test_unit_ready(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return ScsiResponse(GOOD)

    def _request_sense(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x01:  # DESC: descriptor format sense is not supported
            raise cdb_error(1, 0)
        alloc = cdb[4]
        ua = self._ua.take(nexus)
        sense = build_sense(ua if ua is not None else NO_ADDITIONAL_SENSE)
        return ScsiResponse(GOOD, sense[:alloc])

    def _inquiry(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x02:  # CmdDt is obsolete (SPC-4 6.6.1)
            raise cdb_error(1, 1)
        alloc = BE16.unpack_from(cdb, 3)[0]
        if not cdb[1] & 0x01:
            if cdb[2]:
                raise cdb_error(2, 7)
            return ScsiResponse(GOOD, self._inquiry_data[:alloc])
        page = VPD_PAGES.get(cdb[2])
        if page is None:
            raise cdb_error(2, 7)
        return ScsiResponse(GOOD, page(self._vpd)[:alloc])

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
        if cdb[3] not in (0x00, mp.ALL_SUBPAGES):  # SUBPAGE CODE
            raise cdb_error(3, 7)
        pages = mp.pages_for(cdb[2] & 0x3F, cdb[2] >> 6, self._wce, self._default_wce,
                             self._mode_pages(), swp=self._swp,
                             swp_changeable=not self.backend.read_only)
        data = mp.mode_parameters(pages, ten=ten, dbd=bool(cdb[1] & 0x08),
                                  long=ten and bool(cdb[1] & 0x10), num_blocks=self._num_blocks,
                                  block_size=self._bs, read_only=self._read_only)
        return ScsiResponse(GOOD, data[:alloc])

    def _mode_pages(self) -> dict[int, bytes] | None:
        """Mode pages of the device type beyond the SBC ones (none here)."""
        return None

    def _mode_sense6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return self._mode_sense(cdb, False, cdb[4])

    def _mode_sense10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        return self._mode_sense(cdb, True, BE16.unpack_from(cdb, 7)[0])

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
        plen = BE16.unpack_from(cdb, 7)[0]
        return self._mode_select(nexus, cdb, data, plen, 7, mp.MODE10_HEADER_LEN)
