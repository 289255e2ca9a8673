# CHAP authentication of an iSCSI login, target side: the challenge /
# response state machine and the binary value codec (hex / base64).
"""CHAP authentication for iSCSI login, target side (RFC 7143 12.1.3, RFC 1994).

This module holds ``ChapAuthenticator``, a small state machine driven by the
CHAP_* keys of successive security-stage Login requests, and the binary-value
codec those keys use (RFC 7143 6.1: ``0x`` hex or ``0b`` base64). Only MD5
(CHAP_A=5) is supported. Failures raise ``AuthenticationFailed`` whose reason
is for the target's log only: the initiator just sees status 0201.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping

__all__ = [
    "AuthenticationFailed",
    "ChapAuthenticator",
    "decode_binary",
    "encode_hex",
]

# CHAP algorithm number for MD5 (RFC 1994 / IANA PPP auth algorithms); the only one offered.
CHAP_MD5 = 5
# Challenge length: RFC 7143 12.1.3 asks for challenges unpredictable and not
# short; 16 bytes matches the MD5 output and what open-iscsi and LIO use.
CHALLENGE_LENGTH = 16
# Longest CHAP_C/CHAP_R binary value we accept (RFC 7143 12.1.3 limits
# challenges and responses to 1024 bytes).
MAX_BINARY_LENGTH = 1024
# CHAP_I is one octet (RFC 1994 4.1).
MAX_IDENTIFIER = 255
# An MD5 digest, the only valid CHAP_R length with CHAP_A=5.
MD5_RESPONSE_LENGTH = 16


class AuthenticationFailed(Exception):
    """CHAP did not succeed; ``reason`` is for the log, never for the initiator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_hex(data: bytes) -> str:
    """A binary-value as hex-constant, ``0x`` + lower-case hex (RFC 7143 6.1)."""
    return "0x" + data.hex()


def decode_binary(value: str) -> bytes:
    """Decode a binary-value: ``0x``/``0X`` hex or ``0b``/``0B`` base64 (RFC 7143 6.1).

    Raises:
        ValueError: no known prefix, bad digits, or empty.
    """
    prefix, body = value[:2], value[2:]
    if prefix not in ("0x", "0X", "0b", "0B"):
        raise ValueError(f"binary value {value[:40]!r} lacks a 0x or 0b prefix")
    if not body:
        raise ValueError(f"empty binary value {value!r}")
    try:
        if prefix in ("0x", "0X"):
            if len(body) % 2:
                body = "0" + body  # RFC 7143 6.1 allows an odd number of hex digits
            return bytes.fromhex(body)
        return base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"bad binary value {value[:40]!r}: {exc}") from None


def chap_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """MD5(identifier || secret || challenge), the CHAP response (RFC 1994 4.1)."""
    return hashlib.md5(bytes([identifier]) + secret + challenge).digest()


class _State(enum.Enum):
    AWAIT_ALGORITHM = "await CHAP_A"
    AWAIT_RESPONSE = "await CHAP_N/CHAP_R"
    DONE = "done"
    FAILED = "failed"


class ChapAuthenticator:
    """The target half of one CHAP exchange (RFC 7143 12.1.3).

    Feed it the CHAP_* keys of each security-stage request with ``step``:

    1. ``{"CHAP_A": "5,7"}`` -> ``{"CHAP_A": "5", "CHAP_I": .., "CHAP_C": ..}``
    2. ``{"CHAP_N": .., "CHAP_R": .. [, "CHAP_I": .., "CHAP_C": ..]}`` -> ``{}``
       for one-way CHAP, or ``{"CHAP_N": mutual_user, "CHAP_R": ..}`` when the
       initiator asks the target to authenticate itself (mutual CHAP).

    After step 2 ``done`` is True. Any failure raises ``AuthenticationFailed``
    and leaves the authenticator failed: every later ``step`` raises too.
    """

    def __init__(
        self,
        user: str,
        secret: str,
        mutual_user: str | None = None,
        mutual_secret: str | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.user = user
        self._secret = secret.encode("utf-8")
        self.mutual_user = mutual_user
        self._mutual_secret = mutual_secret.encode("utf-8") if mutual_secret else None
        self._random = random
        self._state = _State.AWAIT_ALGORITHM
        self._identifier = 0
        self._challenge = b""
        self.mutual = False  # True once the target has proven itself too

    @property
    def done(self) -> bool:
        """True once the initiator is authenticated (and the target, if asked)."""
        return self._state is _State.DONE

    def step(self, keys: Mapping[str, str]) -> dict[str, str]:
        """Consume one request's CHAP keys and return the keys to answer.

        Raises:
            AuthenticationFailed: missing or malformed keys, no MD5, wrong name,
                wrong response, mutual CHAP asked without a mutual secret, or the
                initiator reflecting our own challenge. The state becomes failed.
        """
        try:
            if self._state is _State.AWAIT_ALGORITHM:
                return self._offer_challenge(keys)
            if self._state is _State.AWAIT_RESPONSE:
                return self._verify(keys)
            raise AuthenticationFailed(f"CHAP keys {sorted(keys)} after CHAP {self._state.value}")
        except AuthenticationFailed:
            self._state = _State.FAILED
            raise

    def _offer_challenge(self, keys: Mapping[str, str]) -> dict[str, str]:
        if "CHAP_A" not in keys:
            raise AuthenticationFailed(f"expected CHAP_A, got {sorted(keys) or 'no CHAP keys'}")
        extra = set(keys) - {"CHAP_A"}
        if extra:
            raise AuthenticationFailed(f"unexpected keys with CHAP_A: {sorted(extra)}")
        algorithms = keys["CHAP_A"].split(",")
        if str(CHAP_MD5) not in algorithms:
            raise AuthenticationFailed(f"initiator offers CHAP_A={keys['CHAP_A']}, only MD5 (5)")
        self._identifier = self._random(1)[0]
        self._challenge = self._random(CHALLENGE_LENGTH)
        self._state = _State.AWAIT_RESPONSE
        return {
            "CHAP_A": str(CHAP_MD5),
            "CHAP_I": str(self._identifier),
            "CHAP_C": encode_hex(self._challenge),
        }

    def _verify(self, keys: Mapping[str, str]) -> dict[str, str]:
        missing = [k for k in ("CHAP_N", "CHAP_R") if k not in keys]
        if missing:
            raise AuthenticationFailed(f"missing {', '.join(missing)}")
        extra = set(keys) - {"CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"}
        if extra:
            raise AuthenticationFailed(f"unexpected keys with CHAP_R: {sorted(extra)}")
        if ("CHAP_I" in keys) != ("CHAP_C" in keys):
            raise AuthenticationFailed("mutual CHAP needs both CHAP_I and CHAP_C")
        response = self._binary(keys["CHAP_R"], "CHAP_R")
        # Check the name and the response together so that timing tells nothing.
        expected = chap_response(self._identifier, self._secret, self._challenge)
        name_ok = hmac.compare_digest(keys["CHAP_N"].encode("utf-8"), self.user.encode("utf-8"))
        response_ok = hmac.compare_digest(response, expected)
        if not name_ok:
            raise AuthenticationFailed(f"unknown CHAP_N {keys['CHAP_N']!r}")
        if not response_ok:
            raise AuthenticationFailed(f"wrong CHAP_R for user {self.user!r}")
        answer: dict[str, str] = {}
        if "CHAP_I" in keys:
            answer = self._prove_target(keys["CHAP_I"], keys["CHAP_C"])
        self._state = _State.DONE
        return answer

    def _prove_target(self, identifier_text: str, challenge_text: str) -> dict[str, str]:
        if self._mutual_secret is None or self.mutual_user is None:
            raise AuthenticationFailed("initiator asks mutual CHAP, target has no mutual secret")
        if self._mutual_secret == self._secret:
            # Same secret both ways lets a peer reflect responses (RFC 7143 12.1.3).
            raise AuthenticationFailed("mutual secret equals the initiator secret; refusing")
        if not identifier_text.isascii() or not identifier_text.isdigit():
            raise AuthenticationFailed(f"bad CHAP_I {identifier_text[:20]!r}")
        identifier = int(identifier_text)
        if identifier > MAX_IDENTIFIER:
            raise AuthenticationFailed(f"CHAP_I {identifier} out of range 0..255")
        challenge = self._binary(challenge_text, "CHAP_C")
        if challenge == self._challenge:
            # Reflection attack: our own challenge sent back (RFC 7143 12.1.3).
            raise AuthenticationFailed("initiator reused the target's challenge as its own")
        self.mutual = True
        return {
            "CHAP_N": self.mutual_user,
            "CHAP_R": encode_hex(chap_response(identifier, self._mutual_secret, challenge)),
        }

    @staticmethod
    def _binary(value: str, key: str) -> bytes:
        try:
            data = decode_binary(value)
        except ValueError as exc:
            raise AuthenticationFailed(f"{key}: {exc}") from None
        if len(data) > MAX_BINARY_LENGTH:
            raise AuthenticationFailed(f"{key} is {len(data)} bytes, over {MAX_BINARY_LENGTH}")
        if key == "CHAP_R" and len(data) != MD5_RESPONSE_LENGTH:
            raise AuthenticationFailed(f"CHAP_R is {len(data)} bytes, an MD5 response is 16")
        return data
