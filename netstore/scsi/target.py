# The LUN map of one SCSI target: routes commands to logical units, answers
# REPORT LUNS itself and answers for LUNs that do not exist (SPC-4 6.6.2
# peripheral qualifier 011b, SAM-5 5.9 LOGICAL UNIT NOT SUPPORTED), and
# applies target-wide events (target reset, I_T nexus loss, LUN map changes).
"""ScsiTarget: the LUN map of one target (one per-initiator view)."""
from __future__ import annotations

import struct

from .lun import LogicalUnit
from .luns import report_luns_data
from .opcodes import EXTENDED_COPY, INQUIRY, REPORT_LUNS, REQUEST_SENSE
from .sense import (
    BUS_RESET_OCCURRED,
    CHECK_CONDITION,
    GOOD,
    LU_NOT_SUPPORTED,
    POWER_ON_OCCURRED,
    REPORTED_LUNS_CHANGED,
    ScsiError,
    build_sense,
    cdb_error,
)
from .unit import ScsiResponse
from .vpd import standard_inquiry

_LU_NOT_SUPPORTED_SENSE = build_sense(LU_NOT_SUPPORTED)
# Commands the target takes part in: REPORT LUNS (its LUN map) and EXTENDED
# COPY (between its units).
_TARGET_OPS = frozenset({REPORT_LUNS, EXTENDED_COPY})


def unit_target_reset(lu: LogicalUnit, nexus: str, *, cold: bool) -> None:
    """One unit's part of a TARGET WARM RESET (UA 29/02 for the other
    nexuses) or TARGET COLD RESET (UA 29/01 for every nexus, the requester
    included: it is a power on)."""
    if cold:
        lu.reset(None, ua=POWER_ON_OCCURRED)
    else:
        lu.reset(nexus, ua=BUS_RESET_OCCURRED)


class ScsiTarget:
    """The logical units one target exposes, keyed by LUN number."""

    def __init__(self, name: str, luns: dict[int, LogicalUnit]) -> None:
        """`name` is the target's name (its iSCSI name); `luns` maps LUN -> LU."""
        self.name = name
        self._luns: dict[int, LogicalUnit] = dict(luns)
        # Nexuses seen by the target itself (REPORT LUNS, missing LUNs); the
        # LUs track their own.
        self._nexuses: set[str] = set()
        self._absent_inquiry = standard_inquiry(0, "", "", "", connected=False)

    def units(self) -> list[LogicalUnit]:
        """Every logical unit of this target (view): where an EXTENDED COPY
        received here finds its units."""
        return list(self._luns.values())

    @property
    def luns(self) -> dict[int, LogicalUnit]:
        """A copy of the LUN map."""
        return dict(self._luns)

    def unit(self, lun: int) -> LogicalUnit | None:
        """The logical unit at `lun`, or None (for transports' fast paths)."""
        return self._luns.get(lun)

    def data_out_length(self, lun: int, cdb: bytes | memoryview) -> int | None:
        """Bytes of Data-Out `cdb` to `lun` asks for (SPDTL), for residuals;
        None when unknown (no such LUN, unknown operation code)."""
        lu = self._luns.get(lun)
        if lu is None:
            return 0 if cdb and cdb[0] == REPORT_LUNS else None
        return lu.data_out_length(cdb)

    def execute(
        self, nexus: str, lun: int, cdb: bytes | memoryview,
        data_out: bytes | memoryview | None,
    ) -> ScsiResponse:
        """Run one command addressed to `lun` for `nexus`; never raises for
        anything the initiator sends."""
        lu = self._luns.get(lun)
        if lu is not None and cdb and cdb[0] not in _TARGET_OPS:
            return lu.execute(nexus, cdb, data_out)
        return self._slow_path(nexus, lu, cdb, data_out)

    def _slow_path(
        self, nexus: str, lu: LogicalUnit | None, cdb: bytes | memoryview,
        data_out: bytes | memoryview | None,
    ) -> ScsiResponse:
        self._nexuses.add(nexus)
        if not cdb:
            if lu is not None:
                return lu.execute(nexus, cdb, data_out)
            return ScsiResponse(CHECK_CONDITION, b"", _LU_NOT_SUPPORTED_SENSE)
        op = cdb[0]
        try:
            if op == REPORT_LUNS:
                payload = report_luns_data(self._luns.keys(), cdb)
                for unit in self._luns.values():
                    unit.clear_unit_attention(nexus, REPORTED_LUNS_CHANGED)
                return ScsiResponse(GOOD, payload)
            if lu is not None:
                # EXTENDED COPY finds its units in this view (xcopy.py).
                view = self if op == EXTENDED_COPY else None
                return lu.execute(nexus, cdb, data_out, view=view)
            if op == INQUIRY:
                if cdb[1] & 0x03:  # no VPD pages for a LUN that is not there
                    return ScsiResponse(CHECK_CONDITION, b"", _LU_NOT_SUPPORTED_SENSE)
                alloc = int.from_bytes(bytes(cdb[3:5]), "big")
                return ScsiResponse(GOOD, self._absent_inquiry[:alloc])
            if op == REQUEST_SENSE:
                if cdb[1] & 0x01:
                    raise cdb_error(1, 0)
                # SPC-4 5.10.2: a REQUEST SENSE to an unsupported LUN reports it.
                return ScsiResponse(GOOD, _LU_NOT_SUPPORTED_SENSE[: cdb[4]])
        except ScsiError as e:
            return ScsiResponse(CHECK_CONDITION, b"", e.sense)
        except (IndexError, struct.error):
            # CDB shorter than its operation code says.
            return ScsiResponse(CHECK_CONDITION, b"", _LU_NOT_SUPPORTED_SENSE)
        return ScsiResponse(CHECK_CONDITION, b"", _LU_NOT_SUPPORTED_SENSE)

    def lun_reset(self, lun: int, nexus: str) -> None:
        """LOGICAL UNIT RESET from `nexus`; unknown LUNs are ignored.

        SAM-5 6.6: the unit attention goes to every I_T nexus, the one that
        asked included (libiscsi's MultipathIO.Reset checks each path)."""
        lu = self._luns.get(lun)
        if lu is not None:
            lu.reset(None)

    def target_reset(self, nexus: str, *, cold: bool) -> None:
        """TARGET WARM RESET (UA 29/02 for the other nexuses) or TARGET COLD
        RESET (UA 29/01 for every nexus, the requester included: it is a
        power on) on every logical unit."""
        for lu in self._luns.values():
            unit_target_reset(lu, nexus, cold=cold)

    def nexus_gone(self, nexus: str) -> None:
        """The I_T nexus ended (session closed) on every logical unit."""
        for lu in self._luns.values():
            lu.nexus_gone(nexus)

    def set_luns(self, luns: dict[int, LogicalUnit]) -> None:
        """Replace the LUN map; every known nexus gets UA REPORTED LUNS DATA
        HAS CHANGED on the logical units that remain or appear."""
        known = set(self._nexuses)
        for lu in self._luns.values():
            known |= lu.known_nexuses
        self._luns = dict(luns)
        for lu in self._luns.values():
            lu.establish_unit_attention(REPORTED_LUNS_CHANGED, nexuses=known)

    def close(self) -> None:
        """Close every logical unit."""
        for lu in self._luns.values():
            lu.close()

