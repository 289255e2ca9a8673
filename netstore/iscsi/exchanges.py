# The iSCSI requests of the full feature phase that are no SCSI task:
# NOP-Out (RFC 7143 11.18-11.19), Text (11.10-11.11, with continuation),
# Logout (11.14-11.15) and SNACK (refused at ErrorRecoveryLevel 0).
"""NOP, Text, Logout and SNACK exchanges of a connection (sans-IO).

:class:`Exchanges` is mixed into :class:`netstore.iscsi.connection.Connection`
and answers through its ``_send`` and ``_reject``.
"""

from __future__ import annotations

from netstore.iscsi import pdu as P
from netstore.iscsi.dataout import TRANSFER_TAGS
from netstore.iscsi.directory import send_targets
from netstore.iscsi.text import Phase, TextError, encode_text, parse_text

# Text requests and responses longer than this are refused (SendTargets with
# many targets fits easily; RFC 7143 6.1 allows continuation, implemented here).
MAX_TEXT_RESPONSE = 1 << 20

LOGOUT_CLOSE_SESSION = 0
LOGOUT_CLOSE_CONNECTION = 1
LOGOUT_REMOVE_FOR_RECOVERY = 2


class Exchanges:
    """NOP-Out, Text, Logout and SNACK requests (mixed into Connection)."""

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
        ttt = next(TRANSFER_TAGS) & 0x7FFFFFFF
        self.text_pending = (ttt, data[self.max_send:])
        self._text_reply(itt, data[:self.max_send], final=False, cont=True, ttt=ttt)

    def _text_reply(self, itt: int, data: bytes, *, final: bool, cont: bool = False,
                    ttt: int = P.RESERVED_TAG) -> None:
        s = self.session
        assert s is not None
        if not final and ttt == P.RESERVED_TAG:
            ttt = next(TRANSFER_TAGS) & 0x7FFFFFFF
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
        # The answer waits for the commands still running on the units
        # (RFC 7143 11.14: logout ends the tasks of what it closes).
        closing = list(s.connections.values()) if reason == LOGOUT_CLOSE_SESSION else [self]
        steps = dict.fromkeys(lu for c in closing for (_, lu, _) in c.inflight.values())

        def answer() -> None:
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

        self._after_units(steps, answer)

    def _on_snack(self, pdu: P.Pdu) -> None:
        # SNACK needs ErrorRecoveryLevel > 0, which is never negotiated.
        self._reject(pdu, P.REJECT_SNACK, "SNACK at ErrorRecoveryLevel 0")
