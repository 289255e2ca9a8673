# One iSCSI connection (RFC 7143 4, 6, 11): login phase, then the full
# feature phase's per-PDU dispatch, SCSI commands and their Data-In /
# SCSI Response.  The fast path, Data-Out / R2T, the commands queued on
# their units (tasks.py), task management and the NOP / Text / Logout
# exchanges are mixed in from their own modules.
"""Connections of the iSCSI target (sans-IO).

A :class:`Connection` is fed the bytes a socket received
(:meth:`Connection.receive_data`) and collects the buffers to send in
``outbox``; the shell sends them all with one ``sendmsg``.  Its session
(:mod:`netstore.iscsi.session`) orders the commands by CmdSN.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netstore.iscsi import pdu as P
from netstore.iscsi.dataout import DataOut, WriteTask
from netstore.iscsi.exchanges import Exchanges
from netstore.iscsi.fastpath import FastPath
from netstore.iscsi.login import LoginMachine, LoginRequest
from netstore.iscsi.session import QUEUE_DEPTH, Session
from netstore.iscsi.tasks import Commands
from netstore.iscsi.tmf import TaskManagement
from netstore.scsi.lun import ScsiResponse
from netstore.scsi.sense import GOOD

if TYPE_CHECKING:
    from netstore.iscsi.portal import PortalGroup

_U32 = struct.Struct(">I")

# A login must reach the full feature phase within this many seconds, or the
# connection is dropped (LIO: 15 s, tgt: none).
LOGIN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Timeouts:
    """The connection's clocks: NOP-In pings of an idle initiator, login time.

    ``nop_interval_s`` 0 sends no pings; a ping unanswered for
    ``nop_timeout_s`` (and no other PDU since) drops the connection.
    """

    nop_interval_s: float = 0.0
    nop_timeout_s: float = 0.0
    login_s: float = LOGIN_TIMEOUT_S


class Connection(FastPath, DataOut, Commands, TaskManagement, Exchanges):
    """One TCP connection to the target, from login to logout (sans-IO).

    Args:
        group: the portal group this connection arrived at.
        peer: the initiator's address, for logs.
        wakeup: called when output appears or the connection must close
            from outside :meth:`receive_data` (another connection's logout,
            a target reset, a NOP ping); the shell then flushes ``outbox``.
        timeouts: NOP ping and login limits, applied by :meth:`tick`.

    The core reads no clock: the shell gives it the time with :meth:`tick`.
    """

    def __init__(self, group: PortalGroup, peer: str = "?",
                 wakeup: Callable[[], None] = lambda: None,
                 timeouts: Timeouts = Timeouts()) -> None:
        self.group = group
        self.timeouts = timeouts
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
        # Commands queued on their units' task sets, by ITT: (task, unit, LUN).
        self.inflight: dict = {}
        self.max_inflight = QUEUE_DEPTH
        # Writes that failed on a bad Data-Out: their remaining Data-Out PDUs
        # are dropped without a Reject each.
        self.failed_itts: deque[int] = deque(maxlen=16)
        self.text_pending: tuple[int, bytes] | None = None  # (TTT, rest) of a long text answer
        self.text_partial: bytes = b""  # Text Request data continued with the C bit
        # Times as given by tick(): the first tick, the last tick that saw
        # received bytes, the last ping.  receive_data only sets `received`.
        self.started: float | None = None
        self.last_rx = 0.0
        self.received = False
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
                "pending_writes": len(self.tasks), "queued": len(self.inflight)}

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process received bytes; answers accumulate in ``outbox``."""
        self.received = True
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

    def tick(self, now: float) -> None:
        """Give the connection the time (monotonic seconds); the core reads no clock.

        The shell calls this when the connection starts, whenever it wakes
        and about once a second.  A login that outlasts ``timeouts.login_s``
        ends; in the full feature phase an initiator silent for
        ``nop_interval_s`` gets a NOP-In ping (RFC 7143 11.19) and one that
        leaves it unanswered for ``nop_timeout_s`` is dropped.  The ping lands
        in ``outbox``; a drop sets ``closing`` (both call ``wakeup``).
        """
        if self.closing:
            return
        if self.started is None:
            self.started = self.last_rx = now
        if self.received:
            self.received = False
            self.last_rx = now
        t = self.timeouts
        if self.login is not None:
            if now - self.started > t.login_s:
                self.shut(f"login not finished within {t.login_s:.0f} s")
            return
        if self.nop_ttt is not None:
            if now - self.nop_sent_at > t.nop_timeout_s and self.last_rx < self.nop_sent_at:
                self.shut(f"no answer to a NOP-In ping in {t.nop_timeout_s:g} s")
        elif t.nop_interval_s > 0 and now - self.last_rx > t.nop_interval_s:
            self._nop_ping(now)

    def _nop_ping(self, now: float) -> None:
        """Ping an idle initiator (NOP-In with a TTT, RFC 7143 11.19)."""
        s = self.session
        if s is None or self.closing:
            return
        self.nop_ttt = next(self._nop_ttt) & 0x7FFFFFFF
        self.nop_sent_at = now
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
        self.fast = not (session.discovery or session.target is None)

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
        read = bool(flags & P.CMD_READ)
        self._run_command(itt, lun, cdb, None,
                          lambda rsp: self._respond(itt, lun_raw, rsp, edtl, read),
                          simple=flags & P.TASK_ATTR_MASK in P.UNORDERED_TASK_ATTRS)

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
        status_in_data = status == GOOD and not rsp.sense
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

    def _on_login_in_ffp(self, pdu: P.Pdu) -> None:
        self._reject(pdu, P.REJECT_PROTOCOL_ERROR, "Login PDU in the full feature phase")
        self.shut("Login PDU in the full feature phase")
