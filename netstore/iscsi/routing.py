# Which target a new connection is for, from its first Login Request (RFC 7143
# 11.12): the process that listens reads that one PDU and hands the connection
# to the worker serving the named target.  Pure: bytes in, a decision out.
"""The first PDU of a connection: how long it is, and the target it names."""

from __future__ import annotations

from dataclasses import dataclass

from netstore.iscsi import pdu as P

# A first Login Request carries the initiator's keys; initiators send far less
# (their MaxRecvDataSegmentLength for login is 8192).  A longer one is not
# read here: the worker that gets it answers with the protocol's refusal.
FIRST_PDU_MAX = 64 * 1024
DISCOVERY = "Discovery"


@dataclass(frozen=True, slots=True)
class FirstLogin:
    """What the first PDU says about where the connection goes.

    ``target`` is the TargetName key (None if absent), ``initiator`` the
    InitiatorName; ``discovery`` is SessionType=Discovery; ``readable`` is False for anything but a whole,
    plain Login Request whose keys are all in this PDU.
    """

    target: str | None = None
    discovery: bool = False
    readable: bool = False
    initiator: str | None = None


def first_pdu_length(bhs: bytes | bytearray | memoryview) -> int | None:
    """Bytes of the whole first PDU whose 48-byte header is `bhs`, or None
    when it is not a Login Request of a size worth reading here."""
    if len(bhs) < P.BHS_LEN or bhs[0] & 0x3F != P.OP_LOGIN_REQ:
        return None
    ahs = bhs[4] * 4
    dlen = int.from_bytes(bhs[5:8], "big")
    total = P.BHS_LEN + ahs + ((dlen + 3) & ~3)
    return total if total <= FIRST_PDU_MAX else None


def first_login(pdu: bytes | bytearray | memoryview) -> FirstLogin:
    """The routing facts of a whole first Login Request (see first_pdu_length)."""
    if first_pdu_length(pdu[:P.BHS_LEN]) != len(pdu):
        return FirstLogin()
    if pdu[1] & 0x40:  # C: the keys go on in the next PDU
        return FirstLogin()
    start = P.BHS_LEN + pdu[4] * 4
    dlen = int.from_bytes(pdu[5:8], "big")
    target = initiator = None
    discovery = False
    for pair in bytes(pdu[start:start + dlen]).split(b"\0"):
        key, sep, value = pair.partition(b"=")
        if not sep:
            continue
        if key == b"TargetName":
            target = value.decode("utf-8", "replace")
        elif key == b"InitiatorName":
            initiator = value.decode("utf-8", "replace")
        elif key == b"SessionType":
            discovery = value == DISCOVERY.encode()
    return FirstLogin(target=target, discovery=discovery, readable=True, initiator=initiator)
