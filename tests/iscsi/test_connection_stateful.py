# A hypothesis state machine (RuleBasedStateMachine) driving one connection of
# the pure iSCSI core in the full feature phase: the CmdSN window (in order,
# ahead, outside, immediate), NOP-Out, writes with R2T and Data-Out, broken
# Data-Out (bad TTT, offset, DataSN, unknown task) and unknown opcodes.
"""Stateful tests of a connection's command window (RFC 7143 4.2.2, 11.7-11.8).

A model of ExpCmdSN, the commands held ahead of it, StatSN and the write
tasks waiting for Data-Out predicts every answer; every PDU the target sends
is checked for monotonic ExpCmdSN/MaxCmdSN and the connection never closes
nor raises.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from netstore.iscsi import pdu as P
from netstore.iscsi.session import QUEUE_DEPTH, sn_le, sn_lt
from tests.iscsi.initiator import Initiator, Reply, bhs, make_group, wire, write10

TUR = bytes(6)
BS = 512
BURST = 4096  # MaxBurstLength and FirstBurstLength negotiated below
M32 = 0xFFFFFFFF
GOOD, CHECK_CONDITION = 0x00, 0x02
ABORTED_COMMAND = 0x0B
# ASCQ of ASC 4Bh (SPC-4 annex D) for each broken Data-Out
DATA_PHASE_ERROR, INVALID_TTT, DATA_OFFSET_ERROR = 0x00, 0x01, 0x05
# Opcodes the target answers with a Reject: unknown, and target-only ones.
UNKNOWN_OPCODES = [0x07, 0x08, 0x0D, 0x1B, 0x1F]


class CommandWindow(RuleBasedStateMachine):
    """The model: ExpCmdSN, held CmdSNs, StatSN, write tasks, failed ITTs."""

    @initialize()
    def log_in(self) -> None:
        fd, self.image = tempfile.mkstemp(prefix="netstore-window-", suffix=".img")
        os.write(fd, bytes(1 << 20))
        os.close(fd)
        self.ini = Initiator(make_group(self.image), keys={
            "InitialR2T": "Yes", "ImmediateData": "No", "MaxBurstLength": str(BURST),
            "FirstBurstLength": str(BURST), "MaxOutstandingR2T": "1"})
        self.ini.login()
        self.exp = self.ini.cmdsn
        self.statsn: int | None = None  # learnt from the first status
        self.last_exp = self.exp
        self.last_max = (self.exp + QUEUE_DEPTH - 1) & M32
        self.held: dict[int, int] = {}  # CmdSN -> ITT of a TEST UNIT READY held ahead
        self.tasks: dict[int, dict] = {}  # ITT -> the write's outstanding R2T
        self.failed: list[int] = []  # ITTs of writes ended by a bad Data-Out
        _, replies = self.command(TUR, self.exp)  # the power-on unit attention
        (ua,) = replies
        assert ua.opcode == P.OP_SCSI_RSP and ua.bhs[3] == CHECK_CONDITION

    def teardown(self) -> None:
        if hasattr(self, "image"):
            os.unlink(self.image)

    # -- sending and checking --------------------------------------------------------
    def check(self, replies: list[Reply]) -> list[Reply]:
        """What every PDU from the target obeys, whatever was sent."""
        for r in replies:
            exp, mx = r.u32(28), r.u32(32)
            assert sn_le(self.last_exp, exp), "ExpCmdSN went back"
            assert sn_le(self.last_max, mx), "MaxCmdSN went back"
            assert mx == (exp + QUEUE_DEPTH - 1) & M32
            self.last_exp, self.last_max = exp, mx
            carries_status = (r.opcode in (P.OP_SCSI_RSP, P.OP_REJECT)
                              or (r.opcode == P.OP_NOP_IN and r.itt != P.RESERVED_TAG))
            if r.opcode in (P.OP_SCSI_RSP, P.OP_REJECT, P.OP_NOP_IN, P.OP_R2T):
                statsn = r.u32(24)
                if self.statsn is None:
                    self.statsn = statsn
                assert statsn == self.statsn, f"StatSN {statsn}, expected {self.statsn}"
                if carries_status:
                    self.statsn = (statsn + 1) & M32
        if replies:
            assert replies[-1].u32(28) == self.exp
        assert not self.ini.conn.closing, self.ini.conn.close_reason
        return replies

    def command(self, cdb: bytes, cmdsn: int, *, immediate: bool = False,
                write: int = 0) -> tuple[int, list[Reply]]:
        itt = self.ini.next_itt()
        flags = 0x80 | 0x01 | (0x20 if write else 0)
        b = bhs(P.OP_SCSI_CMD, flags, immediate=immediate, itt=itt, f20=write, f24=cmdsn)
        b[32:32 + len(cdb)] = cdb
        raw = self.ini.send(wire(b))
        if not immediate and cmdsn == self.exp:
            self.exp = (self.exp + 1) & M32
            while self.exp in self.held:
                del self.held[self.exp]
                self.exp = (self.exp + 1) & M32
        return itt, self.check(raw)

    # -- the CmdSN window (RFC 7143 4.2.2.1) -------------------------------------------
    @rule()
    def in_order(self) -> None:
        """The command at ExpCmdSN runs, and with it every held one that follows."""
        released = []
        n = (self.exp + 1) & M32
        while n in self.held:
            released.append(self.held[n])
            n = (n + 1) & M32
        itt, replies = self.command(TUR, self.exp)
        assert [r.itt for r in replies] == [itt, *released]
        assert all(r.opcode == P.OP_SCSI_RSP and r.bhs[3] == GOOD for r in replies)

    @precondition(lambda self: len(self.held) < QUEUE_DEPTH - 2)
    @rule(ahead=st.integers(1, QUEUE_DEPTH - 1))
    def ahead_in_window(self, ahead: int) -> None:
        """Ahead of ExpCmdSN inside the window: held silently until its turn."""
        cmdsn = (self.exp + ahead) & M32
        itt, replies = self.command(TUR, cmdsn)
        assert replies == []
        self.held.setdefault(cmdsn, itt)  # a second command with that CmdSN is dropped

    @rule(beyond=st.integers(QUEUE_DEPTH, 1 << 31), behind=st.booleans())
    def outside_window(self, beyond: int, behind: bool) -> None:
        """Beyond MaxCmdSN or behind ExpCmdSN (already used): ignored."""
        cmdsn = (self.exp - beyond if behind else self.exp + beyond) & M32
        before = self.exp
        _, replies = self.command(TUR, cmdsn)
        assert replies == [] and self.exp == before

    @rule(offset=st.sampled_from([0, 0, 1, 5, -1]))
    def immediate_command(self, offset: int) -> None:
        """An immediate command runs at once and does not move ExpCmdSN."""
        before = self.exp
        itt, replies = self.command(TUR, (self.exp + offset) & M32, immediate=True)
        assert [(r.opcode, r.itt, r.bhs[3]) for r in replies] == [(P.OP_SCSI_RSP, itt, GOOD)]
        assert self.exp == before

    @rule(data=st.binary(max_size=64), immediate=st.booleans())
    def nop_out(self, data: bytes, immediate: bool) -> None:
        """A NOP-Out with an ITT is echoed; a non-immediate one takes its CmdSN turn."""
        itt = self.ini.next_itt()
        b = bhs(P.OP_NOP_OUT, 0x80, immediate=immediate, itt=itt, f20=P.RESERVED_TAG,
                f24=self.exp)
        raw = self.ini.send(wire(b, data))
        released = []
        if not immediate:
            self.exp = (self.exp + 1) & M32
            while self.exp in self.held:
                released.append(self.held.pop(self.exp))
                self.exp = (self.exp + 1) & M32
        replies = self.check(raw)
        assert replies[0].opcode == P.OP_NOP_IN and replies[0].itt == itt
        assert replies[0].data == data
        assert [r.itt for r in replies[1:]] == released

    # -- writes: R2T and Data-Out (RFC 7143 4.2.3, 11.7-11.8) ----------------------------
    @precondition(lambda self: len(self.tasks) < 8)
    @rule(blocks=st.integers(1, 24), lba=st.integers(0, 2000))
    def start_write(self, blocks: int, lba: int) -> None:
        """A write without immediate data gets one R2T (MaxOutstandingR2T=1)."""
        released = [self.held[n] for n in self._following()]
        itt, replies = self.command(write10(lba, blocks), self.exp, write=blocks * BS)
        r2t = replies[0]
        assert r2t.opcode == P.OP_R2T and r2t.itt == itt
        assert r2t.u32(40) == 0 and r2t.u32(44) == min(BURST, blocks * BS)
        assert [r.itt for r in replies[1:]] == released
        self.tasks[itt] = {"edtl": blocks * BS, "ttt": r2t.u32(20), "offset": 0,
                           "length": r2t.u32(44)}

    def _following(self) -> list[int]:
        out, n = [], (self.exp + 1) & M32
        while n in self.held:
            out.append(n)
            n = (n + 1) & M32
        return out

    def data_out(self, itt: int, ttt: int, datasn: int, offset: int, length: int) -> list[Reply]:
        b = bhs(P.OP_DATA_OUT, 0x80, itt=itt, f20=ttt, f36=datasn, f40=offset)
        return self.check(self.ini.send(wire(b, os.urandom(length))))

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 7))
    def burst(self, pick: int) -> None:
        """The whole burst an R2T asked for: the next R2T, or the write's GOOD status."""
        itt = sorted(self.tasks)[pick % len(self.tasks)]
        t = self.tasks[itt]
        replies = self.data_out(itt, t["ttt"], 0, t["offset"], t["length"])
        (r,) = replies
        end = t["offset"] + t["length"]
        assert r.itt == itt
        if end == t["edtl"]:
            assert r.opcode == P.OP_SCSI_RSP and r.bhs[3] == GOOD
            del self.tasks[itt]
        else:
            assert r.opcode == P.OP_R2T and r.u32(40) == end
            t.update(ttt=r.u32(20), offset=end, length=min(BURST, t["edtl"] - end))
            assert r.u32(44) == t["length"]

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 7), fault=st.sampled_from(["ttt", "before", "after", "beyond", "datasn"]),
          wrong=st.integers(1, 1 << 20))
    def broken_data_out(self, pick: int, fault: str, wrong: int) -> None:
        """A Data-Out breaking the R2T's terms ends the write with CHECK CONDITION."""
        itt = sorted(self.tasks)[pick % len(self.tasks)]
        t = self.tasks.pop(itt)
        ttt, datasn, offset, length = t["ttt"], 0, t["offset"], t["length"]
        if fault == "ttt":
            ttt = (ttt + wrong) & 0x7FFFFFFF or 1
            if ttt == t["ttt"]:
                ttt ^= 1
            want = INVALID_TTT
        elif fault == "before" and offset >= BS:
            offset, length = offset - BS, BS  # starts before the R2T's burst
            want = DATA_OFFSET_ERROR
        elif fault in ("after", "before"):
            offset, length = offset + length, BS  # past the burst (or the transfer)
            want = DATA_OFFSET_ERROR
        elif fault == "beyond":
            offset, length = t["edtl"] - BS // 2, BS
            want = DATA_OFFSET_ERROR
        else:
            datasn = wrong
            want = DATA_PHASE_ERROR
        (r,) = self.data_out(itt, ttt, datasn, offset, length)
        assert r.opcode == P.OP_SCSI_RSP and r.itt == itt and r.bhs[3] == CHECK_CONDITION
        sense = r.data[2:]
        assert sense[2] & 0x0F == ABORTED_COMMAND and sense[12] == 0x4B
        assert sense[13] == want, f"{fault}: ASCQ {sense[13]:#x}, expected {want:#x}"
        self.failed = [*self.failed, itt][-16:]

    @rule(pick=st.integers(0, 1 << 16), failed=st.booleans())
    def data_out_for_no_task(self, pick: int, failed: bool) -> None:
        """Data-Out for an ITT with no write: Reject, or dropped if that write just failed."""
        if failed and self.failed:
            itt = self.failed[pick % len(self.failed)]
            assert self.data_out(itt, 1, 0, 0, BS) == []
            return
        itt = 0x40000000 | pick
        (r,) = self.data_out(itt, 1, 0, 0, BS)
        assert r.opcode == P.OP_REJECT and r.bhs[2] == P.REJECT_INVALID_FIELD

    # -- other PDUs --------------------------------------------------------------------
    @rule(opcode=st.sampled_from(UNKNOWN_OPCODES), immediate=st.booleans())
    def unknown_opcode(self, opcode: int, immediate: bool) -> None:
        b = bhs(opcode, 0x80, immediate=immediate, itt=self.ini.next_itt(), f24=self.exp)
        (r,) = self.check(self.ini.send(wire(b)))
        assert r.opcode == P.OP_REJECT and r.bhs[2] == P.REJECT_NOT_SUPPORTED

    @invariant()
    def window_holds(self) -> None:
        if not hasattr(self, "ini"):
            return
        s = self.ini.conn.session
        assert s is not None and s.exp_cmdsn == self.exp
        assert set(s.held) == set(self.held)
        assert all(sn_lt(self.exp, n) for n in s.held)
        assert set(self.ini.conn.tasks) == set(self.tasks)


CommandWindow.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_command_window = CommandWindow.TestCase
