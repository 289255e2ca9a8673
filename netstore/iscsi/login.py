# The iSCSI login phase, target side: Login PDU fields, the login state
# machine (security -> operational -> full feature) and its status codes.
"""The iSCSI login phase of one connection, target side (RFC 7143 6.3, 11.12, 11.13).

This module holds:

* ``LoginRequest`` / ``LoginResponse``: the fields of the Login PDUs that the
  state machine reads and writes (pdu.py does the bytes).
* ``TargetDirectory`` and its entries (directory.py, re-exported here): what
  the machine needs to know about targets, access lists and CHAP secrets.
* ``LoginMachine``: fed each Login Request, returns the Login Response; walks
  the security and operational stages to full feature phase or refuses with
  the status class and detail of RFC 7143 11.13.5.

No sockets here: the shell sends the response, and closes the connection
when ``failed`` becomes True (RFC 7143 11.13.5: a non-zero status class ends
the connection).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from netstore.iscsi.chap import AuthenticationFailed, ChapAuthenticator
from netstore.iscsi.directory import (
    ChapCredentials,
    TargetDirectory,
    TargetEntry,
    send_targets,
)
from netstore.iscsi.params import SessionParams, TargetLimits
from netstore.iscsi.text import (
    REJECT,
    SESSION_TYPES,
    Negotiator,
    Phase,
    TextError,
    encode_text,
    parse_text,
)

__all__ = [
    "ChapCredentials",
    "LoginMachine",
    "LoginOutcome",
    "LoginRequest",
    "LoginResponse",
    "LoginStatus",
    "TargetDirectory",
    "TargetEntry",
]

# The only iSCSI version there is: version-max and version-active are 0 (RFC 7143 11.12.4).
ISCSI_VERSION = 0
# Bound on the key=value text one login may accumulate across C-bit PDUs:
# RFC 7143 6.1 requires accepting 8192 bytes per negotiation; 64 KiB leaves
# room for long CHAP values while keeping a hostile peer's memory use small.
MAX_LOGIN_TEXT = 65536
# Bound on Login PDUs per connection, so a peer that never completes (or
# never sets T) cannot keep the exchange going forever; real logins use < 10.
MAX_LOGIN_PDUS = 64
# Stage transitions an initiator may ask for (RFC 7143 6.3): 0->1, 0->3, 1->3.
VALID_TRANSITIONS = frozenset({(0, 1), (0, 3), (1, 3)})


class LoginStatus(enum.IntEnum):
    """Status-Class << 8 | Status-Detail of a Login Response (RFC 7143 11.13.5)."""

    SUCCESS = 0x0000
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302

    @property
    def status_class(self) -> int:
        return self.value >> 8

    @property
    def status_detail(self) -> int:
        return self.value & 0xFF


@dataclass
class LoginRequest:
    """The fields of a Login Request PDU (RFC 7143 11.12), parsed by pdu.py."""

    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_max: int
    version_min: int
    isid: bytes
    tsih: int
    itt: int
    cid: int
    cmdsn: int
    exp_statsn: int
    data: bytes


@dataclass
class LoginResponse:
    """The fields of a Login Response PDU (RFC 7143 11.13) the machine decides.

    ``isid`` and ``itt`` echo the request. StatSN, ExpCmdSN and MaxCmdSN are
    the session shell's to fill in.
    """

    transit: bool
    cont: bool
    csg: int
    nsg: int
    status_class: int
    status_detail: int
    tsih: int
    data: bytes
    version_max: int = ISCSI_VERSION
    version_active: int = ISCSI_VERSION
    isid: bytes = b""
    itt: int = 0


@dataclass
class LoginOutcome:
    """What a successful login established, for the session shell.

    ``negotiator`` keeps answering Text requests in full feature phase
    (``negotiator.respond(pairs, Phase.FULL_FEATURE)``); ``leading`` is False
    when this connection joins an existing session (TSIH given in the request).
    """

    params: SessionParams
    target: TargetEntry | None
    initiator_name: str
    isid: bytes
    tsih: int
    cid: int
    leading: bool
    negotiator: Negotiator
    auth_method: str = "None"
    mutual_chap: bool = False


class LoginRefused(Exception):
    """Internal: the login must end with ``status``; ``reason`` is for the log."""

    def __init__(self, status: LoginStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_SECURITY_KEY_PREFIX = "CHAP_"


class LoginMachine:
    """Target side of the login phase of one connection (RFC 7143 6.3).

    Feed each Login Request to ``receive``; send back what it returns. When
    ``done`` is True the connection is in full feature phase and ``outcome``
    holds the session's parameters; when ``failed`` is True the response
    carried a non-zero status class and the shell must close the connection.
    """

    def __init__(
        self,
        directory: TargetDirectory,
        *,
        portal_group_tag: int,
        limits: TargetLimits,
        log: logging.Logger,
        find_session: Callable[[str, bytes, int], object | None],
        new_tsih: Callable[[], int],
    ) -> None:
        self.directory = directory
        self.portal_group_tag = portal_group_tag
        self.limits = limits
        self.log = log
        self.find_session = find_session
        self.new_tsih = new_tsih
        self.done = False
        self.failed = False
        self.outcome: LoginOutcome | None = None
        self.stage: int | None = None  # current stage; None before the first PDU
        self._first: LoginRequest | None = None
        self._pending = bytearray()  # text of C-bit PDUs not yet complete
        self._pdus = 0
        self._negotiator: Negotiator | None = None
        self._initiator_name: str | None = None
        self._target: TargetEntry | None = None
        self._chap_credentials: ChapCredentials | None = None
        self._chap: ChapAuthenticator | None = None
        self._authenticated = False

    # -- public ------------------------------------------------------------------

    def receive(self, req: LoginRequest) -> LoginResponse:
        """Process one Login Request and return the Login Response to send.

        Returns:
            The response. A refusal has a non-zero status class, no data, and
            sets ``failed``; the final response (T=1, NSG=3) carries the TSIH
            and sets ``done`` and ``outcome``.

        Raises:
            RuntimeError: called after the login already finished or failed;
                the shell must stop feeding Login PDUs then.
        """
        if self.done or self.failed:
            raise RuntimeError("login already finished; no more Login PDUs expected")
        try:
            return self._receive(req)
        except LoginRefused as refusal:
            return self._refuse(req, refusal)

    # -- the steps ---------------------------------------------------------------

    def _receive(self, req: LoginRequest) -> LoginResponse:
        self._pdus += 1
        if self._pdus > MAX_LOGIN_PDUS:
            raise LoginRefused(
                LoginStatus.INITIATOR_ERROR, f"more than {MAX_LOGIN_PDUS} Login PDUs"
            )
        self._check_header(req)
        self._pending += req.data
        if len(self._pending) > MAX_LOGIN_TEXT:
            raise LoginRefused(
                LoginStatus.INITIATOR_ERROR, f"login text over {MAX_LOGIN_TEXT} bytes"
            )
        if req.cont:
            # More text follows: acknowledge with an empty response (RFC 7143 6.2, 11.12.2).
            return self._response(req, transit=False, data=b"")
        text, self._pending = bytes(self._pending), bytearray()
        try:
            pairs = parse_text(text)
        except TextError as exc:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"bad login text: {exc}") from None
        if self._negotiator is None:
            self._begin(req, pairs)
        assert self._negotiator is not None
        phase = Phase(req.csg)
        security = [(k, v) for k, v in pairs if k.startswith(_SECURITY_KEY_PREFIX)]
        other = [(k, v) for k, v in pairs if not k.startswith(_SECURITY_KEY_PREFIX)]
        answers = self._negotiator.respond(other, phase)
        answers += self._authenticate(req, pairs, security, answers)
        transit = req.transit and self._may_leave(req)
        response = self._response(req, transit=transit, data=encode_text(answers))
        if transit:
            self.stage = req.nsg
            if req.nsg == Phase.FULL_FEATURE:
                response.tsih = self._finish(req)
        return response

    def _check_header(self, req: LoginRequest) -> None:
        """Flags, stages and identity fields (RFC 7143 6.3, 11.12)."""
        if req.transit and req.cont:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, "T and C both set (RFC 7143 11.12.2)")
        if req.csg not in (Phase.SECURITY, Phase.OPERATIONAL):
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"invalid CSG {req.csg}")
        if req.transit and (req.csg, req.nsg) not in VALID_TRANSITIONS:
            raise LoginRefused(
                LoginStatus.INITIATOR_ERROR,
                f"invalid stage transition {req.csg}->{req.nsg} (RFC 7143 6.3)",
            )
        first = self._first
        if first is None:
            self._first = req
            self.stage = req.csg
            if req.version_min > ISCSI_VERSION:
                raise LoginRefused(
                    LoginStatus.UNSUPPORTED_VERSION,
                    f"version range {req.version_min}..{req.version_max}, we speak {ISCSI_VERSION}",
                )
            return
        if req.csg != self.stage:
            raise LoginRefused(
                LoginStatus.INITIATOR_ERROR, f"PDU for stage {req.csg} while in stage {self.stage}"
            )
        if (req.isid, req.tsih, req.cid) != (first.isid, first.tsih, first.cid):
            raise LoginRefused(
                LoginStatus.INITIATOR_ERROR, "ISID, TSIH or CID changed during login (RFC 7143 6.3)"
            )

    def _begin(self, req: LoginRequest, pairs: list[tuple[str, str]]) -> None:
        """Identify initiator, session type and target from the first request."""
        keys = dict(pairs)
        initiator = keys.get("InitiatorName")
        if not initiator:
            # InitiatorName MUST be in the first Login Request (RFC 7143 13.5).
            raise LoginRefused(LoginStatus.MISSING_PARAMETER, "no InitiatorName")
        self._initiator_name = initiator
        session_type = keys.get("SessionType", "Normal")  # default Normal (RFC 7143 13.21)
        if session_type not in SESSION_TYPES:
            raise LoginRefused(
                LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType={session_type!r}"
            )
        target_name = keys.get("TargetName")
        if session_type == "Normal":
            if not target_name:
                # TargetName MUST be in the first request of a Normal session (RFC 7143 13.4).
                raise LoginRefused(LoginStatus.MISSING_PARAMETER, "no TargetName")
            target = self.directory.lookup(target_name)
            if target is None:
                raise LoginRefused(LoginStatus.NOT_FOUND, f"no target {target_name!r}")
            self._target = target
            if not target.admits(initiator):
                raise LoginRefused(
                    LoginStatus.AUTHORIZATION_FAILURE, "initiator not in the target's allow list"
                )
            self._chap_credentials = target.chap
        else:
            self._chap_credentials = self.directory.discovery_chap
        if self._chap_credentials is not None and req.csg != Phase.SECURITY:
            # Starting in the operational stage skips authentication (RFC 7143 6.3).
            raise LoginRefused(
                LoginStatus.AUTHENTICATION_FAILURE,
                "CHAP required, login began in operational stage",
            )
        leading = req.tsih == 0
        if not leading and self.find_session(initiator, req.isid, req.tsih) is None:
            raise LoginRefused(
                LoginStatus.SESSION_DOES_NOT_EXIST, f"no session with TSIH {req.tsih}"
            )
        negotiator = Negotiator(
            self.limits,
            session_type,
            leading,
            portal_group_tag=self.portal_group_tag,
            target_alias=self._target.alias if self._target else None,
        )
        # A target with CHAP accepts nothing else; one without takes None only.
        negotiator.auth_methods = ["CHAP"] if self._chap_credentials else ["None"]
        self._negotiator = negotiator

    def _authenticate(
        self,
        req: LoginRequest,
        pairs: list[tuple[str, str]],
        security: list[tuple[str, str]],
        answers: list[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """Run the security stage: AuthMethod outcome and CHAP (RFC 7143 6.3.1, 12)."""
        negotiator = self._negotiator
        assert negotiator is not None
        if req.csg == Phase.OPERATIONAL:
            if security:
                return [(k, REJECT) for k, _ in security]  # security keys only in stage 0
            return []
        if ("AuthMethod", REJECT) in answers:
            offered = dict(pairs).get("AuthMethod")
            raise LoginRefused(
                LoginStatus.AUTHENTICATION_FAILURE,
                f"AuthMethod={offered} not acceptable (target wants {negotiator.auth_methods})",
            )
        if negotiator.auth_method == "CHAP" and self._chap is None:
            creds = self._chap_credentials
            assert creds is not None
            self._chap = ChapAuthenticator(
                creds.user, creds.secret, creds.mutual_user, creds.mutual_secret
            )
        if self._chap is None:
            if security:
                raise LoginRefused(
                    LoginStatus.AUTHENTICATION_FAILURE, "CHAP keys without AuthMethod=CHAP"
                )
            if negotiator.auth_method == "None":
                self._authenticated = True
            return []
        if not security and ("AuthMethod" in dict(pairs) or self._chap.done):
            return []  # CHAP_A comes next, or CHAP is over and only T is awaited
        try:
            reply = self._chap.step(dict(security))
        except AuthenticationFailed as exc:
            raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE, f"CHAP: {exc.reason}") from None
        self._authenticated = self._chap.done
        return list(reply.items())

    def _may_leave(self, req: LoginRequest) -> bool:
        """Whether the target agrees to the transit the initiator asked for."""
        if req.csg != Phase.SECURITY:
            return True
        if self._authenticated:
            return True
        negotiator = self._negotiator
        assert negotiator is not None
        if self._chap is not None:
            return False  # CHAP still running: stay, the initiator continues (RFC 7143 12.1.3)
        # Leaving security without any AuthMethod agreed: fine only for a target that needs none.
        if self._chap_credentials is None:
            self._authenticated = True
            return True
        raise LoginRefused(
            LoginStatus.AUTHENTICATION_FAILURE, "left security stage unauthenticated"
        )

    def _finish(self, req: LoginRequest) -> int:
        """Enter full feature phase: build the outcome and hand out the TSIH."""
        negotiator = self._negotiator
        assert negotiator is not None and self._initiator_name is not None
        if self._chap_credentials is not None and not self._authenticated:
            # Skipping the security stage of a target that needs CHAP (RFC 7143 6.3, 12).
            raise LoginRefused(
                LoginStatus.AUTHENTICATION_FAILURE, "target requires CHAP, security stage skipped"
            )
        # A new session gets its TSIH only in the final response (RFC 7143 11.13.4).
        tsih = req.tsih if req.tsih else self.new_tsih()
        params = negotiator.params
        params.initiator_name = self._initiator_name
        params.target_name = self._target.name if self._target is not None else None
        directory, initiator = self.directory, self._initiator_name
        session_target = self._target.name if self._target else None
        negotiator.send_targets = lambda value: send_targets(
            directory,
            initiator,
            value,
            portal_group_tag=self.portal_group_tag,
            session_target=session_target,
        )
        self.outcome = LoginOutcome(
            params=params,
            target=self._target,
            initiator_name=self._initiator_name,
            isid=req.isid,
            tsih=tsih,
            cid=req.cid,
            leading=req.tsih == 0,
            negotiator=negotiator,
            auth_method=negotiator.auth_method or "None",
            mutual_chap=bool(self._chap and self._chap.mutual),
        )
        self.done = True
        self.log.info(
            "login: %s -> %s, session type %s, TSIH %d, CID %d",
            self._initiator_name,
            session_target or "(discovery)",
            params.session_type,
            tsih,
            req.cid,
        )
        return tsih

    # -- responses ---------------------------------------------------------------

    def _response(self, req: LoginRequest, *, transit: bool, data: bytes) -> LoginResponse:
        return LoginResponse(
            transit=transit,
            cont=False,
            csg=req.csg,
            nsg=req.nsg if transit else 0,  # NSG is reserved when T=0 (RFC 7143 11.13)
            status_class=0,
            status_detail=0,
            tsih=req.tsih,
            data=data,
            isid=req.isid,
            itt=req.itt,
        )

    def _refuse(self, req: LoginRequest, refusal: LoginRefused) -> LoginResponse:
        """Log a refusal at warning and build the response ending the login."""
        self.failed = True
        self.log.warning(
            "login refused: initiator %s, target %s, status %04x (%s): %s",
            self._initiator_name or "(unknown)",
            self._target.name if self._target else "(none)",
            refusal.status.value,
            refusal.status.name.lower().replace("_", " "),
            refusal.reason,
        )
        return LoginResponse(
            transit=False,
            cont=False,
            csg=req.csg if req.csg in (0, 1) else 0,
            nsg=0,
            status_class=refusal.status.status_class,
            status_detail=refusal.status.status_detail,
            tsih=req.tsih,
            data=b"",
            isid=req.isid,
            itt=req.itt,
        )
