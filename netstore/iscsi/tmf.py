# iSCSI task management (RFC 7143 11.5-11.6): ABORT TASK, ABORT / CLEAR
# TASK SET, LOGICAL UNIT RESET, TARGET WARM / COLD RESET, and the TMF
# function and response codes.
"""Task management requests of a connection (sans-IO).

:class:`TaskManagement` is mixed into
:class:`netstore.iscsi.connection.Connection`: it aborts the write tasks of
the connections concerned (write tasks waiting for data, commands queued on
their units) and resets the SCSI target's units in their turn.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from netstore.iscsi import pdu as P
from netstore.iscsi.session import Session, sn_le, sn_lt
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.target import unit_target_reset

# Task management functions (RFC 7143 11.5.1) and responses (11.6.1)
TMF_ABORT_TASK = 1
TMF_ABORT_TASK_SET = 2
TMF_CLEAR_ACA = 3
TMF_CLEAR_TASK_SET = 4
TMF_LOGICAL_UNIT_RESET = 5
TMF_TARGET_WARM_RESET = 6
TMF_TARGET_COLD_RESET = 7
TMF_TASK_REASSIGN = 8
TMF_RSP_COMPLETE = 0
TMF_RSP_NO_TASK = 1
TMF_RSP_NO_LUN = 2
TMF_RSP_REASSIGN_UNSUPPORTED = 4
TMF_RSP_NOT_SUPPORTED = 5
TMF_RSP_REJECTED = 255


class TaskManagement:
    """Task Management Function requests (mixed into Connection)."""

    # Task management (RFC 7143 11.5-11.6) --------------------------------------------
    def _on_task_mgmt(self, pdu: P.Pdu) -> None:
        """Abort / reset, then answer once the units concerned finished what
        they had started: queued commands are dropped unanswered, started
        ones finish whole (their answers suppressed), resets run in the unit's
        turn after them."""
        s = self.session
        assert s is not None
        b = pdu.bhs
        function = b[1] & 0x7F
        itt = pdu.itt
        response = TMF_RSP_COMPLETE
        cold = False
        # Units to wait for, with what to run on each in its turn.
        steps: dict[LogicalUnit, Callable[[], object] | None] = {}
        if s.target is None:
            response = TMF_RSP_REJECTED
        elif function == TMF_ABORT_TASK:
            ref = pdu.u32(20)
            lun = P.decode_lun(b[8:16])
            task = self.tasks.get(ref)
            held = self.inflight.get(ref)
            if task is not None and lun == task.lun:
                self._abort(task)
            elif held is not None:
                if held[2] == lun:
                    steps = dict.fromkeys(self._cancel_inflight(lambda i, _: i == ref))
            elif task is None:
                refcmdsn = pdu.u32(32)
                tmf_sn = pdu.u32(24)
                if sn_le(s.exp_cmdsn, refcmdsn) and sn_lt(refcmdsn, tmf_sn):
                    # RFC 7143 11.6.1: never received, inside the window below
                    # this TMF: it counts as received and aborted.
                    s.cancelled.add(refcmdsn)
                else:
                    response = TMF_RSP_NO_TASK  # already answered, or unknown
        elif function in (TMF_ABORT_TASK_SET, TMF_CLEAR_TASK_SET):
            lun = P.decode_lun(b[8:16])
            sessions = [s] if function == TMF_ABORT_TASK_SET else self._target_sessions()
            steps = dict.fromkeys(self._abort_all(sessions, lun))
        elif function == TMF_LOGICAL_UNIT_RESET:
            lun = P.decode_lun(b[8:16])
            lu = s.scsi.unit(lun)
            if lu is None:
                response = TMF_RSP_NO_LUN
            else:
                steps = dict.fromkeys(self._abort_all(self._target_sessions(), lun))
                steps[lu] = partial(lu.reset, None)
                self.log.warning("%s: LOGICAL UNIT RESET of LUN %d", s.nexus, lun)
        elif function in (TMF_TARGET_WARM_RESET, TMF_TARGET_COLD_RESET):
            steps = dict.fromkeys(self._abort_all(self._target_sessions(), None))
            cold = function == TMF_TARGET_COLD_RESET
            for view in s.target.all_views():
                for lu in view.units():
                    steps[lu] = partial(unit_target_reset, lu, s.nexus, cold=cold)
            self.log.warning("%s: TARGET %s RESET", s.nexus, "COLD" if cold else "WARM")
        elif function == TMF_TASK_REASSIGN:
            response = TMF_RSP_REASSIGN_UNSUPPORTED
        else:
            response = TMF_RSP_NOT_SUPPORTED

        def answer() -> None:
            statsn = self.statsn
            self.statsn = (statsn + 1) & 0xFFFFFFFF
            self._send(P.build_task_mgmt_response(itt, response, statsn, s.exp_cmdsn,
                                                  s.max_cmdsn))
            if cold:
                # A cold reset drops every connection to the target (RFC 7143 11.5.1).
                for sess in self._target_sessions():
                    sess.close("target cold reset")

        self._after_units(steps, answer)

    def _abort_all(self, sessions: list[Session], lun: int | None) -> set[LogicalUnit]:
        """Abort every task of `sessions` for `lun` (None: every LUN): write
        tasks waiting for data and queued commands; returns the units of the
        queued ones (to wait for what they started)."""
        units: set[LogicalUnit] = set()
        for sess in sessions:
            for c in sess.connections.values():
                for t in list(c.tasks.values()):
                    if lun is None or t.lun == lun:
                        c._abort(t)
                units |= c._cancel_inflight(lambda _, x: lun is None or x == lun)
        return units

    def _target_sessions(self) -> list[Session]:
        s = self.session
        assert s is not None
        return [x for x in s.group.sessions.values() if x.target is s.target]
