# The iSCSI session and connection state machines of the full feature phase
# (RFC 7143 sections 4, 7, 11): CmdSN ordering, SCSI commands with Data-In,
# R2T and Data-Out, NOP, task management, text, logout, reject.  Pure: the
# Trio shell in server.py feeds received bytes in and sends the buffers out.
"""Sessions and connections of the iSCSI target (sans-IO).

A :class:`Connection` is fed the bytes a socket received
(:meth:`Connection.receive_data`) and collects the buffers to send in
``outbox``; the shell sends them all with one ``sendmsg``.  A
:class:`Session` holds what RFC 7143 makes session-wide: the CmdSN window,
the I_T nexus, the negotiated parameters and the connections.  The target
side (exported targets, the portal group) is in :mod:`netstore.iscsi.portal`.
"""

from __future__ import annotations

import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netstore.iscsi import pdu as P
from netstore.iscsi.login import (
    LoginMachine,
    LoginRequest,
)
from netstore.iscsi.text import (
    Negotiator,
    Phase,
    SessionParams,
    TextError,
    encode_text,
    parse_text,
    send_targets,
)
from netstore.scsi.lun import ScsiResponse
from netstore.scsi.sense import ABORTED_COMMAND, Sense, build_sense
from netstore.scsi.target import ScsiTarget

if TYPE_CHECKING:  # portal.py imports this module; the group is a parameter here
    from netstore.iscsi.portal import ExportedTarget, PortalGroup

# Commands the target accepts ahead of ExpCmdSN: the CmdSN window is
# ExpCmdSN .. ExpCmdSN + QUEUE_DEPTH - 1 (RFC 7143 4.2.2.1).  128 is what LIO
# offers by default (default_cmdsn_depth) and more than any initiator queues.
QUEUE_DEPTH = 128
# Out-of-order commands held for a missing CmdSN (several connections).
MAX_HELD_COMMANDS = QUEUE_DEPTH
# Write tasks waiting for Data-Out per connection; above this new writes get
# TASK SET FULL instead of buffers (memory bound: EDTL * this).
MAX_WRITE_TASKS = QUEUE_DEPTH
# Largest EDTL a write may announce: bounded so a lying initiator cannot make
# the target allocate gigabytes (32 MiB, the B0 VPD maximum transfer length).
MAX_WRITE_LENGTH = 32 * 1024 * 1024
# Text responses longer than this are refused (SendTargets with many targets
# fits easily; RFC 7143 6.1 allows continuation, which we implement).
MAX_TEXT_RESPONSE = 1 << 20

SAM_GOOD = 0x00
SAM_CHECK_CONDITION = 0x02
SAM_TASK_SET_FULL = 0x28

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

LOGOUT_CLOSE_SESSION = 0
LOGOUT_CLOSE_CONNECTION = 1
LOGOUT_REMOVE_FOR_RECOVERY = 2

# Transport errors of a write's Data-Out (SPC-4 annex D, ASC 4Bh).
DATA_PHASE_ERROR = Sense(ABORTED_COMMAND, 0x4B, 0x00, "DATA PHASE ERROR")
INVALID_TTT = Sense(ABORTED_COMMAND, 0x4B, 0x01, "INVALID TARGET PORT TRANSFER TAG RECEIVED")
TOO_MUCH_WRITE_DATA = Sense(ABORTED_COMMAND, 0x4B, 0x02, "TOO MUCH WRITE DATA")
DATA_OFFSET_ERROR = Sense(ABORTED_COMMAND, 0x4B, 0x05, "DATA OFFSET ERROR")

_U32 = struct.Struct(">I")
# The fast path's layouts: SCSI Command bytes 1..27 (flags, TotalAHSLength with
# DataSegmentLength, LUN, ITT, EDTL, CmdSN); a Data-In carrying status; a
# SCSI Response with no sense (RFC 7143 11.3, 11.7, 11.4).
_FAST_CMD = struct.Struct(">xBxxI8sIII")
_FAST_DATA_IN = struct.Struct(">BBBBI8sIIIIIIII")
_FAST_RSP = struct.Struct(">BBBBI8xIIIIIIII")
_FAST_OPS = frozenset({0x28, 0x88, 0x2A, 0x8A})  # READ/WRITE 10 and 16
_WRITE_TTT = itertools.count(1)


def sn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic a < b on 32 bits (RFC 1982, RFC 7143 4.2.2.1)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


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


class Session:
    """Session-wide state (RFC 7143 4.2, 6.3): CmdSN window, nexus, connections."""

    def __init__(self, group: PortalGroup, *, initiator: str, isid: bytes, tsih: int,
                 target: ExportedTarget | None, params: SessionParams, cmdsn: int) -> None:
        self.group = group
        self.initiator = initiator
        self.isid = bytes(isid)
        self.tsih = tsih
        self.target = target
        self.scsi: ScsiTarget | None = None  # the LUN map this session sees
        self.params = params
        self.exp_cmdsn = cmdsn
        self.connections: dict[int, Connection] = {}
        self.held: dict[int, tuple[Connection, P.Pdu]] = {}
        self.cancelled: set[int] = set()  # CmdSNs aborted before they arrived
        self.nexus = f"{initiator},i,0x{self.isid.hex()}"
        self.discovery = params.session_type == "Discovery"
        self.negotiator: Negotiator | None = None  # answers Text requests (RFC 7143 6.2)
        self.started = time.time()

    @property
    def max_cmdsn(self) -> int:
        return (self.exp_cmdsn + QUEUE_DEPTH - 1) & 0xFFFFFFFF

    def status(self) -> dict:
        return {
            "initiator": self.initiator, "isid": self.isid.hex(), "tsih": self.tsih,
            "target": self.target.entry.name if self.target else None,
            "type": self.params.session_type,
            "connections": [c.status() for c in self.connections.values()],
        }

    def deliver(self, conn: Connection, pdu: P.Pdu, cmdsn: int) -> None:
        """Run a non-immediate command in CmdSN order (RFC 7143 4.2.2.1)."""
        exp = self.exp_cmdsn
        if cmdsn == exp:
            self.exp_cmdsn = (exp + 1) & 0xFFFFFFFF
            conn.execute(pdu)
            while self.held:
                nxt = self.held.pop(self.exp_cmdsn, None)
                if nxt is None:
                    break
                self.exp_cmdsn = (self.exp_cmdsn + 1) & 0xFFFFFFFF
                nxt[0].execute(nxt[1])
                if nxt[0] is not conn:
                    nxt[0].wakeup()  # its answer goes out on its own connection
        elif sn_lt(exp, cmdsn) and sn_le(cmdsn, self.max_cmdsn):
            if len(self.held) < MAX_HELD_COMMANDS and cmdsn not in self.held:
                self.held[cmdsn] = (conn, pdu)
        else:
            # Out of the window: silently ignored (RFC 7143 4.2.2.1), but logged.
            self.group.log.warning("%s: ignoring CmdSN %d outside %d..%d", self.nexus, cmdsn,
                                 exp, self.max_cmdsn)

    def close(self, reason: str) -> None:
        """End the session: every connection closes, the I_T nexus goes."""
        for c in list(self.connections.values()):
            c.shut(reason)
        self.detach_all()

    def detach_all(self) -> None:
        if self.group.sessions.get((self.initiator, self.isid)) is self:
            del self.group.sessions[(self.initiator, self.isid)]
            if self.scsi is not None:
                self.scsi.nexus_gone(self.nexus)
            self.group.log.info("session %s to %s ended", self.nexus,
                                self.target.entry.name if self.target else "discovery")

    def connection_gone(self, conn: Connection) -> None:
        if self.connections.get(conn.cid) is conn:
            del self.connections[conn.cid]
        for k, (c, _) in list(self.held.items()):
            if c is conn:
                del self.held[k]
        if not self.connections:
            # ErrorRecoveryLevel 0: the session ends with its last connection.
            self.detach_all()


class Connection:
    """One TCP connection to the target, from login to logout (sans-IO).

    Args:
        group: the portal group this connection arrived at.
        peer: the initiator's address, for logs.
        wakeup: called when output appears or the connection must close
            from outside :meth:`receive_data` (another connection's logout,
            a target reset, a NOP ping); the shell then flushes ``outbox``.
    """

    def __init__(self, group: PortalGroup, peer: str = "?",
                 wakeup: Callable[[], None] = lambda: None) -> None:
        self.group = group
        self.peer = peer
        self.wakeup = wakeup
        self.log = group.log
        self.reader = P.PduReader()
        self.outbox: list = []
        self.closing = False  # close once outbox is sent
        self.close_reason = ""
        self.session: Session | None = None
        self.cid = 0
        self.statsn = 0
        self.hd = False
        self.dd = False
        self.fast = False  # plain READ/WRITE may take _fast_path
        self.max_send = 8192  # the initiator's MaxRecvDataSegmentLength
        self.tasks: dict[int, WriteTask] = {}
        # Writes that failed on a bad Data-Out: their remaining Data-Out PDUs
        # are dropped without a Reject each.
        self.failed_itts: deque[int] = deque(maxlen=16)
        self.text_pending: tuple[int, bytes] | None = None  # (TTT, rest) of a long text answer
        self.text_partial: bytes = b""  # Text Request data continued with the C bit
        self.last_rx = time.monotonic()
        self.nop_ttt: int | None = None
        self.nop_sent_at = 0.0
        self._nop_ttt = itertools.count(1)
        self.login: LoginMachine | None = LoginMachine(
            group, portal_group_tag=group.tag, limits=group.limits, log=group.log,
            find_session=group.find_session, new_tsih=group.new_tsih,
        )
        self._login_cmdsn: int | None = None
        self._handlers = {
            P.OP_SCSI_CMD: self._on_scsi_cmd,
            P.OP_DATA_OUT: self._on_data_out,
            P.OP_NOP_OUT: self._on_nop_out,
            P.OP_TASK_MGMT_REQ: self._on_task_mgmt,
            P.OP_TEXT_REQ: self._on_text,
            P.OP_LOGOUT_REQ: self._on_logout,
            P.OP_SNACK: self._on_snack,
            P.OP_LOGIN_REQ: self._on_login_in_ffp,
        }

    # -- shell interface ----------------------------------------------------
    def status(self) -> dict:
        return {"cid": self.cid, "peer": self.peer, "statsn": self.statsn,
                "header_digest": self.hd, "data_digest": self.dd,
                "pending_writes": len(self.tasks)}

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process received bytes; answers accumulate in ``outbox``."""
        self.last_rx = time.monotonic()
        reader = self.reader
        reader.feed(data)
        while not self.closing:
            if self.fast:
                self._fast_path()
            try:
                pdu = reader.next()
            except P.DataDigestError as e:
                self._on_data_digest_error(e.pdu)
                continue
            except P.ProtocolError as e:
                self.shut(f"protocol error: {e}")
                return
            if pdu is None:
                return
            if self.login is not None:
                self._on_login(pdu)
            else:
                self._dispatch(pdu)

    def connection_lost(self) -> None:
        """The socket is gone: release the session's hold on this connection."""
        self.closing = True
        for t in self.tasks.values():
            t.aborted = True
        self.tasks.clear()
        if self.session is not None:
            self.session.connection_gone(self)

    def shut(self, reason: str) -> None:
        """Close after what is queued has been sent."""
        if not self.closing:
            self.closing = True
            self.close_reason = reason
            level = logging.INFO if reason.startswith("logout") else logging.WARNING
            self.log.log(level, "connection %s cid %d: closing: %s", self.peer, self.cid, reason)
            self.wakeup()

    def nop_ping(self) -> None:
        """Ping an idle initiator (NOP-In with a TTT, RFC 7143 11.19)."""
        s = self.session
        if s is None or self.closing:
            return
        self.nop_ttt = next(self._nop_ttt) & 0x7FFFFFFF
        self.nop_sent_at = time.monotonic()
        self._send(P.build_nop_in(P.RESERVED_TAG, self.nop_ttt, bytes(8), self.statsn,
                                  s.exp_cmdsn, s.max_cmdsn))
        self.wakeup()

    def async_logout_request(self, seconds: int = 2) -> None:
        """Ask the initiator to log out (Asynchronous Message event 1)."""
        s = self.session
        if s is None or self.closing:
            return
        self._send(P.build_async_message(P.ASYNC_LOGOUT_REQUEST, self.statsn, s.exp_cmdsn,
                                         s.max_cmdsn, param3=seconds))
        self.wakeup()

    # -- output helpers ----------------------------------------------------------
    def _send(self, bhs: bytearray, data: bytes | memoryview = b"") -> None:
        self.outbox += P.frame(bhs, data, header_digest=self.hd, data_digest=self.dd)

    def _reject(self, pdu: P.Pdu, reason: int, why: str) -> None:
        s = self.session
        self.log.warning("connection %s: rejecting %s PDU (reason %#04x): %s", self.peer,
                         P.OPCODE_NAMES.get(pdu.opcode, f"opcode {pdu.opcode:#04x}"), reason, why)
        exp, mx = (s.exp_cmdsn, s.max_cmdsn) if s else (0, 0)
        bhs, data = P.build_reject(reason, pdu.bhs, self.statsn, exp, mx)
        self.statsn = (self.statsn + 1) & 0xFFFFFFFF
        self._send(bhs, data)

    # -- login phase ---------------------------------------------------------------
    def _on_login(self, pdu: P.Pdu) -> None:
        if pdu.opcode != P.OP_LOGIN_REQ:
            # RFC 7143 6.2: only Login PDUs before the full feature phase.
            self.shut(f"{P.OPCODE_NAMES.get(pdu.opcode, hex(pdu.opcode))} PDU during login")
            return
        b = pdu.bhs
        flags = b[1]
        req = LoginRequest(
            transit=bool(flags & 0x80), cont=bool(flags & 0x40), csg=(flags >> 2) & 3,
            nsg=flags & 3, version_max=b[2], version_min=b[3], isid=bytes(b[8:14]),
            tsih=int.from_bytes(b[14:16], "big"), itt=pdu.itt,
            cid=int.from_bytes(b[20:22], "big"), cmdsn=pdu.u32(24), exp_statsn=pdu.u32(28),
            data=pdu.data,
        )
        if self._login_cmdsn is None:
            self._login_cmdsn = req.cmdsn
            self.statsn = req.exp_statsn
        machine = self.login
        assert machine is not None
        rsp = machine.receive(req)
        if machine.done and machine.outcome is not None and not req.tsih:
            refusal = self.group.admit(machine.outcome.initiator_name,
                                       machine.outcome.target)
            if refusal is not None:
                # Status 0301: service unavailable, the initiator may retry later.
                self.log.warning("login of %s refused: %s", machine.outcome.initiator_name,
                                 refusal)
                rsp.status_class, rsp.status_detail = 3, 1
                rsp.transit, rsp.nsg, rsp.data = False, 0, b""
                machine.failed, machine.done = True, False
        existing = None
        if machine.done and machine.outcome is not None and machine.outcome.tsih:
            existing = self.group.find_session(machine.outcome.initiator_name,
                                               machine.outcome.isid, machine.outcome.tsih)
        exp = existing.exp_cmdsn if existing is not None else req.cmdsn
        bhs = P.build_login_response(
            transit=rsp.transit, cont=rsp.cont, csg=rsp.csg, nsg=rsp.nsg,
            version_max=rsp.version_max, version_active=rsp.version_active, isid=req.isid,
            tsih=rsp.tsih, itt=req.itt, statsn=self.statsn, expcmdsn=exp,
            maxcmdsn=(exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF, status_class=rsp.status_class,
            status_detail=rsp.status_detail,
        )
        self.statsn = (self.statsn + 1) & 0xFFFFFFFF
        self.outbox += P.frame(bhs, rsp.data)
        if machine.failed:
            self.shut(f"login refused (status {rsp.status_class:02x}{rsp.status_detail:02x})")
            return
        if machine.done:
            self._enter_full_feature(machine, req)

    def _enter_full_feature(self, machine: LoginMachine, req: LoginRequest) -> None:
        out = machine.outcome
        assert out is not None
        params = out.params
        self.login = None
        self.cid = out.cid
        g = self.group
        key = (out.initiator_name, bytes(out.isid))
        session = g.find_session(out.initiator_name, out.isid, out.tsih) if req.tsih else None
        if session is None:
            target = g.exported.get(out.target.name) if out.target is not None else None
            # The machine's power-on: a login while it has no other session to
            # the target (a reinstated session still counts as open).
            power_on = target is not None and not any(
                x.initiator == out.initiator_name and x.target is target
                for x in g.sessions.values())
            old = g.sessions.get(key)
            if old is not None:
                # Session reinstatement (RFC 7143 6.3.5): the old one goes.
                old.close("session reinstated by a new login with the same ISID")
            session = Session(g, initiator=out.initiator_name, isid=out.isid, tsih=out.tsih,
                              target=target, params=params, cmdsn=self._login_cmdsn or 0)
            if target is not None:
                session.scsi = target.view(out.initiator_name, power_on=power_on)
            session.negotiator = out.negotiator
            g.sessions[key] = session
            self.log.info("session %s logged in to %s from %s (tsih %d)", session.nexus,
                          target.entry.name if target else "discovery", self.peer, out.tsih)
        else:
            old_conn = session.connections.get(self.cid)
            if old_conn is not None:
                # Connection reinstatement (RFC 7143 6.3.4): same CID replaces.
                old_conn.shut("connection reinstated by a new login with the same CID")
                old_conn.connection_lost()
            params = session.params
            self.log.info("connection %s joined session %s (cid %d)", self.peer,
                          session.nexus, self.cid)
        session.connections[self.cid] = self
        self.session = session
        self.hd = params.header_digest
        self.dd = params.data_digest
        self.max_send = params.initiator_mrdsl
        r = self.reader
        r.header_digest = self.hd
        r.data_digest = self.dd
        r.max_data = params.target_mrdsl
        self.fast = not (self.hd or self.dd or session.discovery or session.target is None)

    # -- the fast path: plain READ/WRITE commands straight from the receive buffer --
    def _fast_path(self) -> None:
        """Answer the plain READ and WRITE commands at the head of the buffer.

        A command qualifies when it is the next in CmdSN order, has no AHS, no
        digests are on, a READ asks exactly one Data-In PDU's worth and a WRITE
        carries all its data as immediate data.  Each is executed exactly as the
        general path would and answered with one pre-packed header; anything
        else stops the loop and goes through :meth:`_dispatch`.  This is where
        batching pays: a receive holding 32 commands costs 32 trips through
        this loop and one sendmsg.
        """
        s = self.session
        r = self.reader
        buf = r._buf
        pos = r._pos
        end = len(buf)
        if end - pos < P.BHS_LEN or s.held:
            return
        scsi = s.scsi  # type: ignore[union-attr]
        out = self.outbox
        nexus = s.nexus
        exp = s.exp_cmdsn
        statsn = self.statsn
        limit = min(self.max_send, s.params.max_burst_length)
        unpack = _FAST_CMD.unpack_from
        pack_data_in = _FAST_DATA_IN.pack
        pack_rsp = _FAST_RSP.pack
        try:
            while end - pos >= P.BHS_LEN and buf[pos] == P.OP_SCSI_CMD:
                op = buf[pos + 32]
                if op not in _FAST_OPS:
                    break
                flags, lens, lun_raw, itt, edtl, cmdsn = unpack(buf, pos)
                if cmdsn != exp or (lens >> 24) or buf[pos + 8]:
                    break
                lu = scsi.unit(buf[pos + 9])
                if lu is None:
                    break
                dlen = lens & 0xFFFFFF
                flags &= 0xF8  # the task attribute bits do not matter here
                if flags == 0xC0 and not dlen:  # F + R: a read
                    cdb = bytes(buf[pos + 32:pos + 48])
                    pos += P.BHS_LEN
                    r._pos = pos
                    exp = (exp + 1) & 0xFFFFFFFF
                    s.exp_cmdsn = exp
                    rsp = lu.execute(nexus, cdb, None)
                    data = rsp.data
                    if (rsp.status or rsp.sense or len(data) != edtl or edtl > limit
                            or edtl & 3):
                        self.statsn = statsn
                        self._respond(itt, lun_raw, rsp, edtl, True)
                        statsn = self.statsn
                        continue
                    out.append(pack_data_in(
                        P.OP_DATA_IN, P.FLAG_FINAL | P.DATA_STATUS, 0, 0, edtl, lun_raw, itt,
                        P.RESERVED_TAG, statsn, exp, (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF,
                        0, 0, 0))
                    out.append(data)
                    statsn = (statsn + 1) & 0xFFFFFFFF
                elif flags == 0xA0 and dlen == edtl and s.params.immediate_data:  # F + W
                    total = P.BHS_LEN + ((dlen + 3) & ~3)
                    if end - pos < total or dlen > s.params.first_burst_length:
                        break
                    cdb = bytes(buf[pos + 32:pos + 48])
                    if lu.data_out_length(cdb) != dlen:
                        break  # a residual to report: the general path does it
                    data = bytes(buf[pos + P.BHS_LEN:pos + P.BHS_LEN + dlen])
                    pos += total
                    r._pos = pos
                    exp = (exp + 1) & 0xFFFFFFFF
                    s.exp_cmdsn = exp
                    rsp = lu.execute(nexus, cdb, data)
                    if rsp.status or rsp.sense or rsp.data:
                        self.statsn = statsn
                        self._respond(itt, lun_raw, rsp, 0, False)
                        statsn = self.statsn
                        continue
                    out.append(pack_rsp(P.OP_SCSI_RSP, P.FLAG_FINAL, 0, 0, 0, itt, 0, statsn,
                                        exp, (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF, 0, 0, 0))
                    statsn = (statsn + 1) & 0xFFFFFFFF
                else:
                    break
        finally:
            self.statsn = statsn

    # -- full feature phase ------------------------------------------------------------
    def _dispatch(self, pdu: P.Pdu) -> None:
        handler = self._handlers.get(pdu.opcode)
        if handler is None:
            self._reject(pdu, P.REJECT_NOT_SUPPORTED, "unknown opcode")
            return
        s = self.session
        assert s is not None
        op = pdu.opcode
        if op == P.OP_DATA_OUT or op == P.OP_SNACK:
            handler(pdu)
            return
        # ExpStatSN acknowledges our responses; nothing to free at ERL 0.
        if op == P.OP_NOP_OUT and pdu.u32(16) == P.RESERVED_TAG:
            handler(pdu)  # a NOP-Out answering our ping, or one wanting no answer
            return
        if pdu.immediate:
            handler(pdu)
        else:
            s.deliver(self, pdu, pdu.u32(24))

    def execute(self, pdu: P.Pdu) -> None:
        """Run a command whose CmdSN turn has come (called by the session)."""
        if self.closing:
            return
        s = self.session
        if s is not None and s.cancelled and not pdu.immediate:
            sn = pdu.u32(24)
            if sn in s.cancelled:
                s.cancelled.discard(sn)
                return
        self._handlers[pdu.opcode](pdu)

    # SCSI Command (RFC 7143 11.3) ------------------------------------------------
    def _on_scsi_cmd(self, pdu: P.Pdu) -> None:
        s = self.session
        assert s is not None
        if s.discovery or s.target is None:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "SCSI command in a discovery session")
            return
        b = pdu.bhs
        flags = b[1]
        itt = _U32.unpack_from(b, 16)[0]
        edtl = _U32.unpack_from(b, 20)[0]
        cdb = b[32:48]
        if pdu.ahs:
            cdb = self._extended_cdb(pdu, cdb)
            if cdb is None:
                return
        lun_raw = b[8:16]
        lun = P.decode_lun(lun_raw)
        if flags & P.CMD_WRITE:
            self._start_write(pdu, itt, lun, lun_raw, cdb, edtl, flags)
            return
        if pdu.data:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "data with a command that has no W bit")
            return
        rsp = s.scsi.execute(s.nexus, lun, cdb, None)
        self._respond(itt, lun_raw, rsp, edtl, bool(flags & P.CMD_READ))

    def _extended_cdb(self, pdu: P.Pdu, cdb: bytes) -> bytes | None:
        ahs = pdu.ahs
        pos = 0
        while pos + 4 <= len(ahs):
            alen = int.from_bytes(ahs[pos:pos + 2], "big")
            atype = ahs[pos + 2]
            body = ahs[pos + 4:pos + 3 + alen]  # the length counts the reserved byte
            if pos + 3 + alen > len(ahs):
                break
            if atype == 1:  # Extended CDB AHS (RFC 7143 11.2.2.3)
                cdb = cdb + body
            pos += (3 + alen + 3) & ~3
        else:
            return cdb
        self._reject(pdu, P.REJECT_INVALID_FIELD, "AHS length runs past the header")
        return None

    def _respond(self, itt: int, lun_raw: bytes, rsp: ScsiResponse, edtl: int,
                 read: bool, datasn_base: int = 0, write: tuple[int, int] | None = None) -> None:
        """Data-In and/or SCSI Response for a finished command.

        ``write`` is (EDTL, SPDTL) of a command that carried Data-Out: their
        difference is the residual (RFC 7143 11.4.5).
        """
        s = self.session
        assert s is not None
        data = rsp.data
        dlen = len(data)
        resid_flags = 0
        residual = 0
        if write is not None:
            w_edtl, spdtl = write
            if spdtl > w_edtl:
                resid_flags, residual = P.RESID_OVERFLOW, spdtl - w_edtl
            elif spdtl < w_edtl:
                resid_flags, residual = P.RESID_UNDERFLOW, w_edtl - spdtl
        elif read or dlen:
            if dlen > edtl:
                resid_flags, residual = P.RESID_OVERFLOW, dlen - edtl
                data = memoryview(data)[:edtl]
                dlen = edtl
            elif dlen < edtl:
                resid_flags, residual = P.RESID_UNDERFLOW, edtl - dlen
        elif edtl:
            resid_flags, residual = P.RESID_UNDERFLOW, edtl
        status = rsp.status
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        exp = s.exp_cmdsn
        mx = (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF
        if not dlen:
            bhs, sense = P.build_scsi_response(itt, status, rsp.sense, statsn, exp, mx,
                                               expdatasn=datasn_base, resid_flags=resid_flags,
                                               residual=residual)
            self._send(bhs, sense)
            return
        # Status rides in the last Data-In when there is no sense (RFC 7143 11.7.4).
        status_in_data = status == SAM_GOOD and not rsp.sense
        seg = self.max_send
        burst = s.params.max_burst_length
        mv = memoryview(data) if not isinstance(data, memoryview) else data
        out = self.outbox
        hd, dd = self.hd, self.dd
        datasn = datasn_base
        offset = 0
        while offset < dlen:
            n = min(seg, dlen - offset, burst - offset % burst)
            end = offset + n
            last = end == dlen
            bhs = P.build_data_in(
                itt, lun_raw, datasn, offset, final=last or end % burst == 0,
                status=status if (last and status_in_data) else None,
                statsn=statsn, expcmdsn=exp, maxcmdsn=mx, resid_flags=resid_flags,
                residual=residual)
            out += P.frame(bhs, mv[offset:end], header_digest=hd, data_digest=dd)
            datasn += 1
            offset = end
        if not status_in_data:
            bhs, sense = P.build_scsi_response(itt, status, rsp.sense, statsn, exp, mx,
                                               expdatasn=datasn, resid_flags=resid_flags,
                                               residual=residual)
            self._send(bhs, sense)

    def _check_condition_now(self, itt: int, lun_raw: bytes, status: int, edtl: int) -> None:
        self._respond(itt, lun_raw, ScsiResponse(status), edtl, False)

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
            self._check_condition_now(itt, lun_raw, SAM_TASK_SET_FULL, 0)
            return
        if edtl == imm:
            rsp = s.scsi.execute(s.nexus, lun, cdb, pdu.data)
            self._respond(itt, lun_raw, rsp, 0, False,
                          write=self._write_lengths(lun, cdb, edtl))
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
            ttt = next(_WRITE_TTT) & 0x7FFFFFFF
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
                      ScsiResponse(SAM_CHECK_CONDITION, b"", build_sense(sense)), 0, False,
                      datasn_base=task.r2tsn)

    def _finish_write(self, task: WriteTask) -> None:
        s = self.session
        assert s is not None
        del self.tasks[task.itt]
        if task.aborted or s.target is None:
            return
        rsp = s.scsi.execute(s.nexus, task.lun, task.cdb, task.buf)
        self._respond(task.itt, task.lun_raw, rsp, 0, False, datasn_base=task.r2tsn,
                      write=self._write_lengths(task.lun, task.cdb, task.edtl))

    def _write_lengths(self, lun: int, cdb: bytes, edtl: int) -> tuple[int, int] | None:
        """(EDTL, SPDTL) of a command with Data-Out, None when the CDB's length is unknown."""
        s = self.session
        assert s is not None and s.target is not None
        spdtl = s.scsi.data_out_length(lun, cdb)
        return None if spdtl is None else (edtl, spdtl)

    def _on_data_digest_error(self, pdu: P.Pdu) -> None:
        # RFC 7143 7.8: reject the PDU; at ErrorRecoveryLevel 0 a lost Data-Out
        # cannot be recovered, so the command's task is ended by the initiator.
        if self.login is not None:
            self.shut("data digest error during login")
            return
        self._reject(pdu, P.REJECT_DATA_DIGEST, "data digest mismatch")
        if pdu.opcode == P.OP_SCSI_CMD and not pdu.immediate and self.session is not None:
            # The command is consumed: keep the CmdSN window moving.
            self._consume_cmdsn(pdu.u32(24))

    def _consume_cmdsn(self, cmdsn: int) -> None:
        s = self.session
        if s is not None and cmdsn == s.exp_cmdsn:
            s.exp_cmdsn = (cmdsn + 1) & 0xFFFFFFFF

    # NOP (RFC 7143 11.18-11.19) ------------------------------------------------------
    def _on_nop_out(self, pdu: P.Pdu) -> None:
        s = self.session
        assert s is not None
        itt = pdu.itt
        ttt = pdu.u32(20)
        if itt == P.RESERVED_TAG:
            if ttt != P.RESERVED_TAG and ttt == self.nop_ttt:
                self.nop_ttt = None  # our ping was answered
            return
        if ttt != P.RESERVED_TAG:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "NOP-Out with both ITT and TTT set")
            return
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        self._send(P.build_nop_in(itt, P.RESERVED_TAG, pdu.bhs[8:16], statsn, s.exp_cmdsn,
                                  s.max_cmdsn), pdu.data)

    # Task management (RFC 7143 11.5-11.6) --------------------------------------------
    def _on_task_mgmt(self, pdu: P.Pdu) -> None:
        s = self.session
        assert s is not None
        b = pdu.bhs
        function = b[1] & 0x7F
        itt = pdu.itt
        response = TMF_RSP_COMPLETE
        cold = False
        if s.target is None:
            response = TMF_RSP_REJECTED
        elif function == TMF_ABORT_TASK:
            ref = pdu.u32(20)
            task = self.tasks.get(ref)
            if task is not None and P.decode_lun(b[8:16]) == task.lun:
                self._abort(task)
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
            for sess in sessions:
                for c in sess.connections.values():
                    for t in list(c.tasks.values()):
                        if t.lun == lun:
                            c._abort(t)
        elif function == TMF_LOGICAL_UNIT_RESET:
            lun = P.decode_lun(b[8:16])
            if lun not in s.scsi.luns:
                response = TMF_RSP_NO_LUN
            else:
                for sess in self._target_sessions():
                    for c in sess.connections.values():
                        for t in list(c.tasks.values()):
                            if t.lun == lun:
                                c._abort(t)
                s.scsi.lun_reset(lun, s.nexus)
                self.log.warning("%s: LOGICAL UNIT RESET of LUN %d", s.nexus, lun)
        elif function in (TMF_TARGET_WARM_RESET, TMF_TARGET_COLD_RESET):
            for sess in self._target_sessions():
                for c in sess.connections.values():
                    for t in list(c.tasks.values()):
                        c._abort(t)
            cold = function == TMF_TARGET_COLD_RESET
            for view in s.target.all_views():
                view.target_reset(s.nexus, cold=cold)
            self.log.warning("%s: TARGET %s RESET", s.nexus, "COLD" if cold else "WARM")
        elif function == TMF_TASK_REASSIGN:
            response = TMF_RSP_REASSIGN_UNSUPPORTED
        else:
            response = TMF_RSP_NOT_SUPPORTED
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        self._send(P.build_task_mgmt_response(itt, response, statsn, s.exp_cmdsn, s.max_cmdsn))
        if cold:
            # A cold reset drops every connection to the target (RFC 7143 11.5.1).
            for sess in self._target_sessions():
                sess.close("target cold reset")

    def _target_sessions(self) -> list[Session]:
        s = self.session
        assert s is not None
        return [x for x in s.group.sessions.values() if x.target is s.target]

    def _abort(self, task: WriteTask) -> None:
        task.aborted = True
        self.tasks.pop(task.itt, None)

    # Text (RFC 7143 11.10-11.11) -------------------------------------------------------
    def _on_text(self, pdu: P.Pdu) -> None:
        s = self.session
        assert s is not None
        b = pdu.bhs
        itt = pdu.itt
        ttt = pdu.u32(20)
        final = bool(b[1] & P.FLAG_FINAL)
        cont = bool(b[1] & P.FLAG_CONTINUE)
        if ttt != P.RESERVED_TAG and self.text_pending and self.text_pending[0] == ttt:
            self._text_chunk(itt, self.text_pending[1])
            return
        if cont or not final:
            self.text_partial += pdu.data
            if len(self.text_partial) > MAX_TEXT_RESPONSE:
                self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "text request too long")
                self.text_partial = b""
                return
            self._text_reply(itt, b"", final=False)  # ask for the rest
            return
        data = self.text_partial + pdu.data
        self.text_partial = b""
        try:
            pairs = parse_text(data)
        except TextError as e:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR, f"bad text: {e}")
            return
        answer: list[tuple[str, str]] = []
        rest: list[tuple[str, str]] = []
        for k, v in pairs:
            if k == "SendTargets":
                if not s.discovery and v not in ("", s.target.entry.name if s.target else ""):
                    answer.append(("SendTargets", "Irrelevant"))
                    continue
                answer += send_targets(
                    self.group, s.initiator, v, portal_group_tag=self.group.tag,
                    session_target=None if s.discovery or s.target is None
                    else s.target.entry.name)
            else:
                rest.append((k, v))
        if rest:
            answer += s.negotiator.respond(  # type: ignore[union-attr]
                rest, Phase.FULL_FEATURE)
            self.max_send = s.params.initiator_mrdsl
        self._text_chunk(itt, encode_text(answer))

    def _text_chunk(self, itt: int, data: bytes) -> None:
        if len(data) <= self.max_send:
            self.text_pending = None
            self._text_reply(itt, data, final=True)
            return
        ttt = next(_WRITE_TTT) & 0x7FFFFFFF
        self.text_pending = (ttt, data[self.max_send:])
        self._text_reply(itt, data[:self.max_send], final=False, cont=True, ttt=ttt)

    def _text_reply(self, itt: int, data: bytes, *, final: bool, cont: bool = False,
                    ttt: int = P.RESERVED_TAG) -> None:
        s = self.session
        assert s is not None
        if not final and ttt == P.RESERVED_TAG:
            ttt = next(_WRITE_TTT) & 0x7FFFFFFF
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        self._send(P.build_text_response(itt, ttt, final, cont, statsn, s.exp_cmdsn,
                                         s.max_cmdsn), data)

    # Logout (RFC 7143 11.14-11.15) --------------------------------------------------------
    def _on_logout(self, pdu: P.Pdu) -> None:
        s = self.session
        assert s is not None
        reason = pdu.bhs[1] & 0x7F
        cid = int.from_bytes(pdu.bhs[20:22], "big")
        response = 0
        close_self = False
        if reason == LOGOUT_CLOSE_SESSION:
            close_self = True
        elif reason == LOGOUT_CLOSE_CONNECTION:
            if cid == self.cid:
                close_self = True
            elif cid in s.connections:
                s.connections[cid].shut("logout of this connection from another")
            else:
                response = 1  # CID not found
        elif reason == LOGOUT_REMOVE_FOR_RECOVERY:
            response = 2  # connection recovery is not supported (ERL 0)
        else:
            self._reject(pdu, P.REJECT_INVALID_FIELD, f"logout reason code {reason}")
            return
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        self._send(P.build_logout_response(pdu.itt, response, statsn, s.exp_cmdsn,
                                           s.max_cmdsn, 0, 0))
        if reason == LOGOUT_CLOSE_SESSION:
            for c in list(s.connections.values()):
                if c is not self:
                    c.shut("logout of the session")
            self.shut("logout of the session")
        elif close_self:
            self.shut("logout of the connection")

    def _on_snack(self, pdu: P.Pdu) -> None:
        # SNACK needs ErrorRecoveryLevel > 0, which is never negotiated.
        self._reject(pdu, P.REJECT_SNACK, "SNACK at ErrorRecoveryLevel 0")

    def _on_login_in_ffp(self, pdu: P.Pdu) -> None:
        self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "Login PDU in the full feature phase")
        self.shut("Login PDU in the full feature phase")
