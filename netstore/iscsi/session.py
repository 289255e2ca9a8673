# The iSCSI session (RFC 7143 4.2, 6.3): the CmdSN window and its serial
# number arithmetic, the I_T nexus, the negotiated parameters and the
# connections.  Pure: connections hand it their non-immediate commands.
"""The session of the iSCSI target (sans-IO).

A :class:`Session` holds what RFC 7143 makes session-wide: the CmdSN window
(ExpCmdSN .. MaxCmdSN, commands held until their turn), the I_T nexus, the
negotiated parameters and the connections.  A connection
(:mod:`netstore.iscsi.connection`) parses PDUs and hands each non-immediate
command to :meth:`Session.deliver`.  The target side (exported targets, the
portal group) is in :mod:`netstore.iscsi.portal`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

from netstore.iscsi import pdu as P
from netstore.iscsi.directory import TargetEntry
from netstore.iscsi.params import SessionParams
from netstore.iscsi.text import Negotiator
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.target import ScsiTarget

# Commands the target accepts ahead of ExpCmdSN: the CmdSN window is
# ExpCmdSN .. ExpCmdSN + QUEUE_DEPTH - 1 (RFC 7143 4.2.2.1).  128 is what LIO
# offers by default (default_cmdsn_depth) and more than any initiator queues.
QUEUE_DEPTH = 128
# Out-of-order commands held for a missing CmdSN (several connections).
MAX_HELD_COMMANDS = QUEUE_DEPTH


def sn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic a < b on 32 bits (RFC 1982, RFC 7143 4.2.2.1)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


# What a session asks of the objects it is given.  connection.py and portal.py
# import this module; the protocols keep the imports one way.
class SessionGroup(Protocol):
    """The portal group, as its sessions see it (portal.PortalGroup)."""

    log: logging.Logger
    sessions: dict[tuple[str, bytes], Session]

    def run_on_unit(self, lu: LogicalUnit, fn: Callable[[], object]) -> None: ...


class SessionTarget(Protocol):
    """An exported target, as a session sees it (portal.ExportedTarget)."""

    entry: TargetEntry

    def all_views(self) -> list[ScsiTarget]: ...


class SessionMember(Protocol):
    """One connection of a session (connection.Connection)."""

    cid: int

    def execute(self, pdu: P.Pdu) -> None: ...

    def wakeup(self) -> None: ...

    def shut(self, reason: str) -> None: ...

    def status(self) -> dict: ...


class Session:
    """Session-wide state (RFC 7143 4.2, 6.3): CmdSN window, nexus, connections."""

    def __init__(self, group: SessionGroup, *, initiator: str, isid: bytes, tsih: int,
                 target: SessionTarget | None, params: SessionParams, cmdsn: int) -> None:
        self.group = group
        self.initiator = initiator
        self.isid = bytes(isid)
        self.tsih = tsih
        self.target = target
        self.scsi: ScsiTarget | None = None  # the LUN map this session sees
        self.params = params
        self.exp_cmdsn = cmdsn
        self.connections: dict[int, SessionMember] = {}
        self.held: dict[int, tuple[SessionMember, P.Pdu]] = {}
        self.cancelled: set[int] = set()  # CmdSNs aborted before they arrived
        self.nexus = f"{initiator},i,0x{self.isid.hex()}"
        self.discovery = params.session_type == "Discovery"
        self.negotiator: Negotiator | None = None  # answers Text requests (RFC 7143 6.2)

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

    def deliver(self, conn: SessionMember, pdu: P.Pdu, cmdsn: int) -> None:
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
                # Each unit forgets the nexus in its turn (it may be busy).
                for lu in self.scsi.units():
                    self.group.run_on_unit(lu, partial(lu.nexus_gone, self.nexus))
            self.group.log.info("session %s to %s ended", self.nexus,
                                self.target.entry.name if self.target else "discovery")

    def connection_gone(self, conn: SessionMember) -> None:
        if self.connections.get(conn.cid) is conn:
            del self.connections[conn.cid]
        for k, (c, _) in list(self.held.items()):
            if c is conn:
                del self.held[k]
        if not self.connections:
            # ErrorRecoveryLevel 0: the session ends with its last connection.
            self.detach_all()
