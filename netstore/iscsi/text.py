# iSCSI text keys: the key=value codec, the key table (KEYS) and the
# Negotiator answering offers in login stages and full feature phase.
"""iSCSI text keys: the key=value codec and the target side of key negotiation.

This module holds:

* ``parse_text`` / ``encode_text``: the NUL-separated ``key=value`` format of
  Login and Text PDU data segments (RFC 7143 6.1).
* ``KEYS``: one table with every key this target knows, its negotiation kind
  (RFC 7143 6.2), default, range, the stages it may appear in and whether it
  is leading-only (RFC 7143 13).
* ``Negotiator``: answers the initiator's offers from that table and keeps the
  agreed values in ``SessionParams``; used in the login stages and for Text
  requests in full feature phase.

``SessionParams`` and ``TargetLimits`` live in params.py (re-exported here);
the answer to ``SendTargets`` is ``directory.send_targets``.

It does no I/O; the login state machine (login.py) and the session shell feed
it decoded data segments.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netstore.iscsi.params import SessionParams, TargetLimits

__all__ = [
    "KEYS",
    "KeyKind",
    "KeySpec",
    "Negotiator",
    "Phase",
    "SessionParams",
    "TargetLimits",
    "TextError",
    "encode_text",
    "parse_text",
]

log = logging.getLogger(__name__)

# --- limits of the text format (RFC 7143 6.1) ---------------------------------

# A key name (standard-label or private X- key) "must not exceed 63 characters".
MAX_KEY_LENGTH = 63
# Absolute cap on one value: every implementation must accept 8192 bytes of
# key=value data in a negotiation (RFC 7143 6.1), so no single value can
# legitimately be longer; binary values (CHAP_C/CHAP_R) are the long ones.
MAX_VALUE_LENGTH = 8192
# A simple-value "not otherwise specified" is at most 255 bytes (RFC 7143 6.1);
# the negotiator rejects longer values for every non-binary key.
MAX_SIMPLE_VALUE_LENGTH = 255
# numerical-value: "an unsigned integer always less than 2**64" (RFC 7143 6.1).
MAX_NUMERICAL_VALUE = 2**64 - 1

# Answers an initiator may give to our offers; never offers themselves (RFC 7143 6.2).
NOT_UNDERSTOOD = "NotUnderstood"
IRRELEVANT = "Irrelevant"
REJECT = "Reject"
_ANSWER_CONSTANTS = frozenset({NOT_UNDERSTOOD, IRRELEVANT, REJECT})


class TextError(ValueError):
    """A data segment that is not a well-formed list of key=value pairs."""


def parse_text(data: bytes, *, allow_duplicates: bool = False) -> list[tuple[str, str]]:
    """Decode a Login/Text data segment into ``(key, value)`` pairs.

    Args:
        data: the data segment; every pair ends with a NUL byte (RFC 7143 6.1).
            Trailing NUL padding after the last pair is tolerated.
        allow_duplicates: accept a key given twice (used to read SendTargets
            answers, where TargetAddress repeats); requests never do this.

    Returns:
        The pairs in the order given.

    Raises:
        TextError: the data is not NUL terminated, a pair has no ``=``, an empty
            or over-long key, an over-long value, is not UTF-8, or repeats a key
            (RFC 7143 6.2: a key appears at most once in a request).
    """
    raw = bytes(data)
    if not raw:
        return []
    if raw[-1] != 0:
        raise TextError("text data does not end with a NUL byte (RFC 7143 6.1)")
    body = raw.rstrip(b"\x00")
    if not body:
        return []
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, chunk in enumerate(body.split(b"\x00")):
        if not chunk:
            raise TextError(f"empty key=value pair at position {index}")
        key_bytes, sep, value_bytes = chunk.partition(b"=")
        if not sep:
            raise TextError(f"pair {index} has no '=': {chunk[:40]!r}")
        if not key_bytes:
            raise TextError(f"pair {index} has an empty key")
        if len(key_bytes) > MAX_KEY_LENGTH:
            raise TextError(
                f"key {key_bytes[:40]!r}... is {len(key_bytes)} bytes, "
                f"longer than {MAX_KEY_LENGTH} (RFC 7143 6.1)"
            )
        if len(value_bytes) > MAX_VALUE_LENGTH:
            raise TextError(
                f"value of {key_bytes!r} is {len(value_bytes)} bytes, "
                f"longer than {MAX_VALUE_LENGTH} (RFC 7143 6.1)"
            )
        try:
            key = key_bytes.decode("utf-8")
            value = value_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError(f"pair {index} is not UTF-8 (RFC 7143 6.1): {exc}") from None
        if not allow_duplicates and key in seen:
            raise TextError(f"key {key!r} given twice in one request (RFC 7143 6.2)")
        seen.add(key)
        pairs.append((key, value))
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode ``(key, value)`` pairs as NUL-terminated ``key=value`` strings.

    Raises:
        TextError: a key is empty, too long or contains ``=`` or NUL, or a value
            contains NUL; such pairs cannot be read back.
    """
    out = bytearray()
    for key, value in pairs:
        if not key or "=" in key or "\x00" in key:
            raise TextError(f"cannot encode key {key!r}")
        if "\x00" in value:
            raise TextError(f"cannot encode a NUL inside the value of {key!r}")
        encoded_key = key.encode("utf-8")
        if len(encoded_key) > MAX_KEY_LENGTH:
            raise TextError(f"key {key!r} is longer than {MAX_KEY_LENGTH} bytes")
        out += encoded_key + b"=" + value.encode("utf-8") + b"\x00"
    return bytes(out)


# --- the key table (RFC 7143 13) ----------------------------------------------


class Phase(enum.IntEnum):
    """Where a key is exchanged: the login stage numbers (CSG/NSG) and FFP."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class KeyKind(enum.Enum):
    """How the answer to an offer is computed (RFC 7143 6.2)."""

    DECLARATIVE = "declarative"  # no answer; the sender states its value
    LIST = "list"  # the responder picks the first acceptable value
    MIN = "numerical min"  # result is the smaller of offer and ours
    MAX = "numerical max"  # result is the larger of offer and ours
    AND = "boolean AND"
    OR = "boolean OR"
    SEND_TARGETS = "SendTargets"  # a query, answered by send_targets()
    OBSOLETE = "obsolete"  # RFC 7143 13.24: always answered Reject


_LOGIN = frozenset({Phase.SECURITY, Phase.OPERATIONAL})
_OPERATIONAL = frozenset({Phase.OPERATIONAL})
_ALL = frozenset(Phase)


@dataclass(frozen=True)
class KeySpec:
    """One row of the key table.

    ``param`` names the SessionParams field that holds the agreed value; keys
    without one are answered but not recorded. ``initiator_sends`` is False for
    keys only a target may send (an initiator offering them gets Reject).
    """

    name: str
    kind: KeyKind
    default: str
    phases: frozenset[Phase] = _OPERATIONAL
    leading_only: bool = False
    low: int | None = None
    high: int | None = None
    irrelevant_in_discovery: bool = False
    initiator_sends: bool = True
    param: str | None = None
    rfc: str = ""


# Data segment lengths and burst lengths: 512 to 2**24-1 (RFC 7143 13.12-13.14).
_MIN_SEGMENT = 512
_MAX_SEGMENT = 2**24 - 1

KEYS: dict[str, KeySpec] = {
    spec.name: spec
    for spec in [
        KeySpec("AuthMethod", KeyKind.LIST, "None", frozenset({Phase.SECURITY}), rfc="12"),
        KeySpec("HeaderDigest", KeyKind.LIST, "None", param="header_digest", rfc="13.1"),
        KeySpec("DataDigest", KeyKind.LIST, "None", param="data_digest", rfc="13.1"),
        KeySpec(
            "MaxConnections",
            KeyKind.MIN,
            "1",
            leading_only=True,
            low=1,
            high=65535,
            irrelevant_in_discovery=True,
            param="max_connections",
            rfc="13.2",
        ),
        KeySpec(
            "SendTargets", KeyKind.SEND_TARGETS, "", frozenset({Phase.FULL_FEATURE}), rfc="13.3"
        ),
        KeySpec("TargetName", KeyKind.DECLARATIVE, "", _LOGIN, param="target_name", rfc="13.4"),
        KeySpec(
            "InitiatorName", KeyKind.DECLARATIVE, "", _LOGIN, param="initiator_name", rfc="13.5"
        ),
        KeySpec("TargetAlias", KeyKind.DECLARATIVE, "", _ALL, initiator_sends=False, rfc="13.6"),
        KeySpec(
            "InitiatorAlias", KeyKind.DECLARATIVE, "", _ALL, param="initiator_alias", rfc="13.7"
        ),
        KeySpec("TargetAddress", KeyKind.DECLARATIVE, "", _ALL, initiator_sends=False, rfc="13.8"),
        KeySpec(
            "TargetPortalGroupTag",
            KeyKind.DECLARATIVE,
            "",
            _LOGIN,
            low=0,
            high=65535,
            initiator_sends=False,
            rfc="13.9",
        ),
        KeySpec(
            "InitialR2T",
            KeyKind.OR,
            "Yes",
            leading_only=True,
            irrelevant_in_discovery=True,
            param="initial_r2t",
            rfc="13.10",
        ),
        KeySpec(
            "ImmediateData",
            KeyKind.AND,
            "Yes",
            leading_only=True,
            irrelevant_in_discovery=True,
            param="immediate_data",
            rfc="13.11",
        ),
        KeySpec(
            "MaxRecvDataSegmentLength",
            KeyKind.DECLARATIVE,
            "8192",
            frozenset({Phase.OPERATIONAL, Phase.FULL_FEATURE}),
            low=_MIN_SEGMENT,
            high=_MAX_SEGMENT,
            param="initiator_mrdsl",
            rfc="13.12",
        ),
        KeySpec(
            "MaxBurstLength",
            KeyKind.MIN,
            "262144",
            leading_only=True,
            low=_MIN_SEGMENT,
            high=_MAX_SEGMENT,
            irrelevant_in_discovery=True,
            param="max_burst_length",
            rfc="13.13",
        ),
        KeySpec(
            "FirstBurstLength",
            KeyKind.MIN,
            "65536",
            leading_only=True,
            low=_MIN_SEGMENT,
            high=_MAX_SEGMENT,
            irrelevant_in_discovery=True,
            param="first_burst_length",
            rfc="13.14",
        ),
        KeySpec(
            "DefaultTime2Wait",
            KeyKind.MAX,
            "2",
            leading_only=True,
            low=0,
            high=3600,
            param="default_time2wait",
            rfc="13.15",
        ),
        KeySpec(
            "DefaultTime2Retain",
            KeyKind.MIN,
            "20",
            leading_only=True,
            low=0,
            high=3600,
            param="default_time2retain",
            rfc="13.16",
        ),
        KeySpec(
            "MaxOutstandingR2T",
            KeyKind.MIN,
            "1",
            leading_only=True,
            low=1,
            high=65535,
            irrelevant_in_discovery=True,
            param="max_outstanding_r2t",
            rfc="13.17",
        ),
        KeySpec(
            "DataPDUInOrder",
            KeyKind.OR,
            "Yes",
            leading_only=True,
            irrelevant_in_discovery=True,
            param="data_pdu_in_order",
            rfc="13.18",
        ),
        KeySpec(
            "DataSequenceInOrder",
            KeyKind.OR,
            "Yes",
            leading_only=True,
            irrelevant_in_discovery=True,
            param="data_sequence_in_order",
            rfc="13.19",
        ),
        KeySpec(
            "ErrorRecoveryLevel",
            KeyKind.MIN,
            "0",
            leading_only=True,
            low=0,
            high=2,
            param="error_recovery_level",
            rfc="13.20",
        ),
        KeySpec(
            "SessionType",
            KeyKind.DECLARATIVE,
            "Normal",
            _LOGIN,
            leading_only=True,
            param="session_type",
            rfc="13.21",
        ),
        KeySpec(
            "TaskReporting",
            KeyKind.LIST,
            "RFC3720",
            leading_only=True,
            irrelevant_in_discovery=True,
            rfc="13.23",
        ),
        # RFC 7143 13.24: markers are obsolete; IFMarker/OFMarker MAY be answered
        # No (what RFC 3720 initiators such as old open-iscsi expect), the
        # intervals MUST be answered Reject.
        KeySpec("IFMarker", KeyKind.AND, "No", rfc="13.24"),
        KeySpec("OFMarker", KeyKind.AND, "No", rfc="13.24"),
        KeySpec("IFMarkInt", KeyKind.OBSOLETE, "", rfc="13.24"),
        KeySpec("OFMarkInt", KeyKind.OBSOLETE, "", rfc="13.24"),
    ]
}

# Values the target accepts for the enumerated declarative keys.
SESSION_TYPES = ("Normal", "Discovery")
# TaskReporting values this target implements (RFC 7143 13.23): plain RFC 3720 semantics.
TASK_REPORTING_SUPPORTED = ("RFC3720",)


def _parse_number(value: str) -> int | None:
    """A numerical-value: decimal or 0x hex, below 2**64 (RFC 7143 6.1); None if bad."""
    if value[:2] in ("0x", "0X"):
        digits, base = value[2:], 16
        if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
            return None
    else:
        digits, base = value, 10
        if not digits or not digits.isascii() or not digits.isdigit():
            return None
    number = int(digits, base)
    return number if number <= MAX_NUMERICAL_VALUE else None


def _parse_bool(value: str) -> bool | None:
    """A boolean-value is exactly Yes or No (RFC 7143 6.1)."""
    return {"Yes": True, "No": False}.get(value)


def _yes_no(flag: bool) -> str:
    return "Yes" if flag else "No"


class Negotiator:
    """Target side of text negotiation for one connection (RFC 7143 6.2, 13).

    Create one per connection once the session type is known (after the first
    Login PDU), feed it every complete set of offered pairs with ``respond``,
    and read the agreed values from ``params``. After login the same object
    answers Text requests in full feature phase (``phase=Phase.FULL_FEATURE``).

    Attributes:
        params: the values agreed so far (defaults until negotiated).
        auth_methods: the AuthMethod values this target accepts, in its order
            of preference; the login machine sets it from the target's CHAP
            configuration.
        auth_method: the AuthMethod agreed, or None before/after a failure.
        send_targets: callable answering SendTargets=<value>; None = Reject.
    """

    def __init__(
        self,
        limits: TargetLimits,
        session_type: str = "Normal",
        leading: bool = True,
        *,
        portal_group_tag: int | None = None,
        target_alias: str | None = None,
        params: SessionParams | None = None,
    ) -> None:
        self.limits = limits
        self.leading = leading
        self.params = params if params is not None else SessionParams()
        self.params.session_type = session_type
        self.portal_group_tag = portal_group_tag
        self.target_alias = target_alias
        self.auth_methods: list[str] = ["None"]
        self.auth_method: str | None = None
        self.send_targets: Callable[[str], list[tuple[str, str]]] | None = None
        self._negotiated: set[str] = set()  # keys already settled in this login
        self._pending_targets: list[tuple[str, str]] = []  # SendTargets answer being built
        self._declared_first = False
        self._declared_mrdsl = False

    @property
    def discovery(self) -> bool:
        return self.params.session_type == "Discovery"

    def respond(
        self, offered: list[tuple[str, str]], phase: Phase = Phase.OPERATIONAL
    ) -> list[tuple[str, str]]:
        """Answer one request's offers and update ``params``.

        Args:
            offered: the pairs of one complete request (all C-bit PDUs joined).
            phase: where the request came: a login stage or full feature phase.

        Returns:
            The pairs to send back, answers in the order offered, followed by
            what the target declares unasked: TargetPortalGroupTag and
            TargetAlias in its first login response to a Normal session, and
            MaxRecvDataSegmentLength in its first operational-stage response.

        Never raises on bad input: unknown keys get NotUnderstood, bad values
        and keys out of place get Reject (RFC 7143 6.2), the defaults stay.
        """
        answers: list[tuple[str, str]] = []
        for key, value in offered:
            answer = self._answer(key, value, phase)
            if answer is not None:
                answers.append((key, answer))
        self._finish(answers)
        answers.extend(self._declarations(phase))
        return answers

    # -- one key ---------------------------------------------------------------

    def _answer(self, key: str, value: str, phase: Phase) -> str | None:
        spec = KEYS.get(key)
        if spec is None:
            # Unknown keys, including X- and X# private/vendor extensions (RFC 7143 6.2, 13.25).
            return NOT_UNDERSTOOD
        if value in _ANSWER_CONSTANTS:
            # An answer to an offer we never make: nothing to agree (RFC 7143 6.2).
            log.debug("ignoring %s=%s: an answer, not an offer", key, value)
            return None
        if not spec.initiator_sends or phase not in spec.phases:
            # A key the initiator may not send, or not in this stage (RFC 7143 6.3, 13).
            return REJECT
        if spec.leading_only and not self.leading:
            return REJECT  # LO keys only on the leading connection (RFC 7143 13)
        if phase is not Phase.FULL_FEATURE:
            if key in self._negotiated:
                return REJECT  # a key is negotiated once per login (RFC 7143 6.2)
            self._negotiated.add(key)
        if spec.irrelevant_in_discovery and self.discovery:
            return IRRELEVANT  # "Irrelevant when: SessionType=Discovery" (RFC 7143 13)
        if spec.kind is not KeyKind.SEND_TARGETS and len(value.encode()) > MAX_SIMPLE_VALUE_LENGTH:
            return REJECT
        handler = _HANDLERS[spec.kind]
        return handler(self, spec, value)

    def _declarative(self, spec: KeySpec, value: str) -> str | None:
        if spec.low is not None:
            number = _parse_number(value)
            if number is None or not spec.low <= number <= (spec.high or MAX_NUMERICAL_VALUE):
                return REJECT
            if spec.param:
                setattr(self.params, spec.param, number)
            return None
        if spec.name == "SessionType":
            return None if value == self.params.session_type else REJECT
        if not value:
            return REJECT
        if spec.param:
            setattr(self.params, spec.param, value)
        return None

    def _list(self, spec: KeySpec, value: str) -> str:
        offered = value.split(",")
        if spec.name == "AuthMethod":
            acceptable = self.auth_methods
        elif spec.name == "TaskReporting":
            acceptable = list(TASK_REPORTING_SUPPORTED)
        else:
            acceptable = self.limits.digests
        # The responder takes the first value in the offerer's order that it supports.
        choice = next((v for v in offered if v in acceptable), None)
        if spec.name == "AuthMethod":
            self.auth_method = choice
        if choice is None:
            return REJECT
        if spec.param:
            setattr(self.params, spec.param, choice == "CRC32C")
        return choice

    def _numeric(self, spec: KeySpec, value: str) -> str:
        number = _parse_number(value)
        assert spec.low is not None and spec.high is not None
        if number is None or not spec.low <= number <= spec.high:
            return REJECT
        ours = self._target_value(spec)
        result = min(number, ours) if spec.kind is KeyKind.MIN else max(number, ours)
        if spec.param:
            setattr(self.params, spec.param, result)
        return str(result)

    def _target_value(self, spec: KeySpec) -> int:
        limits = self.limits
        return {
            "MaxConnections": limits.max_connections,
            "MaxBurstLength": limits.max_burst_length,
            "FirstBurstLength": min(limits.first_burst_length, self._burst_ceiling()),
            "DefaultTime2Wait": limits.default_time2wait,
            "DefaultTime2Retain": limits.default_time2retain,
            "MaxOutstandingR2T": limits.max_outstanding_r2t,
            "ErrorRecoveryLevel": limits.error_recovery_level,
        }[spec.name]

    def _burst_ceiling(self) -> int:
        """The MaxBurstLength FirstBurstLength must not exceed (RFC 7143 13.14)."""
        if "MaxBurstLength" in self._negotiated:
            return self.params.max_burst_length
        return min(self.params.max_burst_length, self.limits.max_burst_length)

    def _boolean(self, spec: KeySpec, value: str) -> str:
        offered = _parse_bool(value)
        if offered is None:
            return REJECT
        ours = {
            "InitialR2T": self.limits.initial_r2t,
            "ImmediateData": self.limits.immediate_data,
            "DataPDUInOrder": self.limits.data_pdu_in_order,
            "DataSequenceInOrder": self.limits.data_sequence_in_order,
            "IFMarker": False,
            "OFMarker": False,
        }[spec.name]
        result = (offered and ours) if spec.kind is KeyKind.AND else (offered or ours)
        if spec.param:
            setattr(self.params, spec.param, result)
        return _yes_no(result)

    def _send_targets(self, spec: KeySpec, value: str) -> str | None:
        # The answer is a list of TargetName/TargetAddress pairs, not a value;
        # respond() splices them in through _pending_targets.
        if self.send_targets is None:
            return REJECT
        self._pending_targets = self.send_targets(value)
        return None

    def _obsolete(self, spec: KeySpec, value: str) -> str:
        return REJECT

    # -- cross-key rules and declarations --------------------------------------

    def _finish(self, answers: list[tuple[str, str]]) -> None:
        """Splice in the SendTargets list; tie FirstBurstLength to other keys."""
        answers.extend(self._pending_targets)
        self._pending_targets = []
        for i, (key, answer) in enumerate(answers):
            if key != "FirstBurstLength" or answer in _ANSWER_CONSTANTS:
                continue
            params = self.params
            if params.initial_r2t and not params.immediate_data:
                # No unsolicited data at all: the key is irrelevant (RFC 7143 13.14).
                answers[i] = (key, IRRELEVANT)
            elif params.first_burst_length > params.max_burst_length:
                # FirstBurstLength MUST NOT exceed MaxBurstLength (RFC 7143 13.14).
                params.first_burst_length = params.max_burst_length
                answers[i] = (key, str(params.first_burst_length))
        if self.params.first_burst_length > self.params.max_burst_length:
            # MaxBurstLength agreed below the (default or earlier) FirstBurstLength
            # the initiator left standing: keep the RFC 7143 13.14 invariant in
            # what we enforce rather than accept bursts over MaxBurstLength.
            log.info(
                "FirstBurstLength %d above MaxBurstLength %d; using %d",
                self.params.first_burst_length,
                self.params.max_burst_length,
                self.params.max_burst_length,
            )
            self.params.first_burst_length = self.params.max_burst_length

    def _declarations(self, phase: Phase) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if phase is Phase.FULL_FEATURE:
            return out
        if not self._declared_first:
            self._declared_first = True
            if not self.discovery:
                # "MUST be sent in the first Login Response of a Normal session" (RFC 7143 13.9).
                if self.portal_group_tag is not None:
                    out.append(("TargetPortalGroupTag", str(self.portal_group_tag)))
                if self.target_alias:
                    out.append(("TargetAlias", self.target_alias))  # RFC 7143 13.6
        if phase is Phase.OPERATIONAL and not self._declared_mrdsl:
            # Each side declares what it can receive, per connection (RFC 7143 13.12).
            self._declared_mrdsl = True
            self.params.target_mrdsl = self.limits.max_recv_data_segment_length
            out.append(("MaxRecvDataSegmentLength", str(self.params.target_mrdsl)))
        return out


_HANDLERS: dict[KeyKind, Callable[[Negotiator, KeySpec, str], str | None]] = {
    KeyKind.DECLARATIVE: Negotiator._declarative,
    KeyKind.LIST: Negotiator._list,
    KeyKind.MIN: Negotiator._numeric,
    KeyKind.MAX: Negotiator._numeric,
    KeyKind.AND: Negotiator._boolean,
    KeyKind.OR: Negotiator._boolean,
    KeyKind.SEND_TARGETS: Negotiator._send_targets,
    KeyKind.OBSOLETE: Negotiator._obsolete,
}
