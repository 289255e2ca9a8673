# Writes of the iSCSI target (RFC 7143 4.2.3, 11.7-11.8): immediate data,
# unsolicited Data-Out, R2T, the write tasks waiting for their data and the
# transport errors that end them.  A write whose data is all in goes to its
# unit's task set like any command (tasks.py).
"""Write tasks, R2T and Data-Out of a connection (sans-IO).

:class:`DataOut` is mixed into :class:`netstore.iscsi.connection.Connection`:
it keeps the connection's ``tasks`` (:class:`WriteTask`) and answers through
its ``_send``, ``_reject`` and ``_respond``.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

from netstore.iscsi import pdu as P
from netstore.iscsi.session import QUEUE_DEPTH
from netstore.scsi.lun import ScsiResponse
from netstore.scsi.sense import (
    ABORTED_COMMAND,
    CHECK_CONDITION,
    TASK_SET_FULL,
    Sense,
    build_sense,
)

# Write tasks waiting for Data-Out per connection; above this new writes get
# TASK SET FULL instead of buffers (memory bound: EDTL * this).
MAX_WRITE_TASKS = QUEUE_DEPTH
# Largest EDTL a write may announce: bounded so a lying initiator cannot make
# the target allocate gigabytes (32 MiB, the B0 VPD maximum transfer length).
MAX_WRITE_LENGTH = 32 * 1024 * 1024

# Transport errors of a write's Data-Out (SPC-4 annex D, ASC 4Bh).
DATA_PHASE_ERROR = Sense(ABORTED_COMMAND, 0x4B, 0x00, "DATA PHASE ERROR")
INVALID_TTT = Sense(ABORTED_COMMAND, 0x4B, 0x01, "INVALID TARGET PORT TRANSFER TAG RECEIVED")
TOO_MUCH_WRITE_DATA = Sense(ABORTED_COMMAND, 0x4B, 0x02, "TOO MUCH WRITE DATA")
DATA_OFFSET_ERROR = Sense(ABORTED_COMMAND, 0x4B, 0x05, "DATA OFFSET ERROR")

_U32 = struct.Struct(">I")
# Target transfer tags of R2Ts and of continued Text responses.
TRANSFER_TAGS = itertools.count(1)


@dataclass(eq=False)
class WriteTask:
    """A SCSI command with data to receive (RFC 7143 4.2.3: R2T / Data-Out)."""

    itt: int
    lun: int
    lun_raw: bytes
    cdb: bytes
    edtl: int
    cmdsn: int
    buf: bytearray
    received: int = 0
    unsolicited_left: int = 0  # bytes still expected without an R2T
    unsolicited_datasn: int = 0
    next_offset: int = 0  # first byte not yet covered by an R2T or unsolicited data
    r2tsn: int = 0
    # TTT -> [offset, length, received in this burst, next DataSN]
    r2ts: dict[int, list[int]] = field(default_factory=dict)
    aborted: bool = False


class DataOut:
    """Immediate data, unsolicited Data-Out and R2T (mixed into Connection)."""

    # Writes: immediate data, unsolicited Data-Out, R2T (RFC 7143 4.2.3, 11.7-11.8)
    def _start_write(self, pdu: P.Pdu, itt: int, lun: int, lun_raw: bytes, cdb: bytes,
                     edtl: int, flags: int) -> None:
        s = self.session
        assert s is not None
        params = s.params
        imm = len(pdu.data)
        if imm and not params.immediate_data:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "immediate data when ImmediateData=No")
            return
        if imm > edtl or imm > params.first_burst_length:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR,
                         f"{imm} bytes of immediate data for a {edtl}-byte transfer "
                         f"(FirstBurstLength {params.first_burst_length})")
            return
        if itt in self.tasks:
            self._reject(pdu, P.REJECT_TASK_IN_PROGRESS, f"ITT {itt:#x} already in use")
            return
        if edtl > MAX_WRITE_LENGTH or len(self.tasks) >= MAX_WRITE_TASKS:
            self._check_condition_now(itt, lun_raw, TASK_SET_FULL, 0)
            return
        if edtl == imm:
            lengths = self._write_lengths(lun, cdb, edtl)
            self._run_command(itt, lun, cdb, pdu.data, lambda rsp: self._respond(
                itt, lun_raw, rsp, 0, False, write=lengths))
            return
        task = WriteTask(itt, lun, lun_raw, cdb, edtl, pdu.u32(24), bytearray(edtl))
        if imm:
            task.buf[:imm] = pdu.data
            task.received = imm
        task.next_offset = imm
        if not params.initial_r2t and not (flags & P.FLAG_FINAL):
            # Unsolicited Data-Out follows up to FirstBurstLength (RFC 7143 13.11).
            first = min(params.first_burst_length, edtl)
            task.unsolicited_left = first - imm
            task.next_offset = first
        self.tasks[itt] = task
        self._issue_r2ts(task)

    def _issue_r2ts(self, task: WriteTask) -> None:
        s = self.session
        assert s is not None
        params = s.params
        while (task.next_offset < task.edtl
               and len(task.r2ts) < params.max_outstanding_r2t):
            length = min(params.max_burst_length, task.edtl - task.next_offset)
            ttt = next(TRANSFER_TAGS) & 0x7FFFFFFF
            task.r2ts[ttt] = [task.next_offset, length, 0, 0]
            self._send(P.build_r2t(task.itt, task.lun_raw, ttt, self.statsn, s.exp_cmdsn,
                                   s.max_cmdsn, task.r2tsn, task.next_offset, length))
            task.r2tsn += 1
            task.next_offset += length

    def _on_data_out(self, pdu: P.Pdu) -> None:
        b = pdu.bhs
        itt = _U32.unpack_from(b, 16)[0]
        ttt = _U32.unpack_from(b, 20)[0]
        datasn = _U32.unpack_from(b, 36)[0]
        offset = _U32.unpack_from(b, 40)[0]
        task = self.tasks.get(itt)
        if task is None:
            if itt not in self.failed_itts:
                self._reject(pdu, P.REJECT_INVALID_FIELD, f"Data-Out for unknown task {itt:#x}")
            return  # the rest of a write already failed: dropped quietly
        data = pdu.data
        n = len(data)
        if offset + n > task.edtl:
            self._fail_write(task, DATA_OFFSET_ERROR,
                             f"Data-Out at {offset}+{n} beyond the {task.edtl}-byte transfer")
            return
        if ttt == P.RESERVED_TAG:
            if n > task.unsolicited_left:
                self._fail_write(task, TOO_MUCH_WRITE_DATA, f"{n} bytes of unsolicited "
                                 f"data, only {task.unsolicited_left} allowed")
                return
            if datasn != task.unsolicited_datasn:
                # ErrorRecoveryLevel 0 cannot recover a lost PDU (RFC 7143 7.1.5).
                self._fail_write(task, DATA_PHASE_ERROR, f"Data-Out DataSN {datasn}, "
                                 f"expected {task.unsolicited_datasn}")
                return
            task.unsolicited_datasn += 1
            task.unsolicited_left -= n
        else:
            burst = task.r2ts.get(ttt)
            if burst is None:
                self._fail_write(task, INVALID_TTT,
                                 f"Data-Out with unknown target transfer tag {ttt:#x}")
                return
            b_off, b_len, b_got, b_sn = burst
            if datasn != b_sn:
                self._fail_write(task, DATA_PHASE_ERROR,
                                 f"Data-Out DataSN {datasn}, expected {b_sn}")
                return
            if offset < b_off or offset + n > b_off + b_len:
                self._fail_write(task, DATA_OFFSET_ERROR, f"Data-Out at {offset}+{n} "
                                 f"outside the R2T's {b_off}+{b_len}")
                return
            burst[2] = b_got + n
            burst[3] = b_sn + 1
            if burst[2] >= b_len:
                del task.r2ts[ttt]
        task.buf[offset:offset + n] = data
        task.received += n
        if task.received >= task.edtl:
            self._finish_write(task)
        else:
            self._issue_r2ts(task)  # it keeps at most MaxOutstandingR2T in flight

    def _fail_write(self, task: WriteTask, sense: Sense, why: str) -> None:
        """End a write whose Data-Out broke the rules: nothing is written.

        ErrorRecoveryLevel 0 cannot ask for the PDU again (RFC 7143 7.1.5); the
        command ends with CHECK CONDITION / ABORTED COMMAND and the connection
        keeps serving the initiator's other tasks.
        """
        self.log.warning("connection %s: write task %#x failed: %s", self.peer, task.itt, why)
        self._abort(task)
        self.failed_itts.append(task.itt)
        self._respond(task.itt, task.lun_raw,
                      ScsiResponse(CHECK_CONDITION, b"", build_sense(sense)), 0, False,
                      datasn_base=task.r2tsn)

    def _finish_write(self, task: WriteTask) -> None:
        s = self.session
        assert s is not None
        del self.tasks[task.itt]
        if task.aborted or s.target is None:
            return
        lengths = self._write_lengths(task.lun, task.cdb, task.edtl)
        self._run_command(task.itt, task.lun, task.cdb, task.buf, lambda rsp: self._respond(
            task.itt, task.lun_raw, rsp, 0, False, datasn_base=task.r2tsn, write=lengths))

    def _write_lengths(self, lun: int, cdb: bytes, edtl: int) -> tuple[int, int] | None:
        """(EDTL, SPDTL) of a command with Data-Out, None when the CDB's length is unknown."""
        s = self.session
        assert s is not None and s.target is not None
        spdtl = s.scsi.data_out_length(lun, cdb)
        return None if spdtl is None else (edtl, spdtl)

    def _abort(self, task: WriteTask) -> None:
        task.aborted = True
        self.tasks.pop(task.itt, None)
