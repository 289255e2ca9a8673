# The targets a login is checked against and discovery answers from:
# ChapCredentials, TargetEntry (name, alias, CHAP, allow list), the
# TargetDirectory protocol the portal group implements, and SendTargets
# (RFC 7143 Appendix C, 13.3, 13.8).
"""The target directory of the login layer and the SendTargets answer.

A :class:`TargetEntry` is a target as the login layer sees it; a
:class:`TargetDirectory` (the portal group) lists them with the portals;
:func:`send_targets` answers ``SendTargets=<value>`` from a directory.  Pure.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Protocol

from netstore.iscsi.text import REJECT

__all__ = [
    "ChapCredentials",
    "TargetDirectory",
    "TargetEntry",
    "format_target_address",
    "send_targets",
]


@dataclass
class ChapCredentials:
    """CHAP secrets of a target (or of discovery): one-way, plus mutual if set."""

    user: str
    secret: str
    mutual_user: str | None = None
    mutual_secret: str | None = None


@dataclass
class TargetEntry:
    """A target as the login layer sees it."""

    name: str
    alias: str | None = None
    chap: ChapCredentials | None = None
    allow: list[str] = field(default_factory=list)  # fnmatch patterns of initiator IQNs

    def admits(self, initiator_name: str) -> bool:
        """True if the allow list is empty or a pattern matches the initiator.

        iSCSI names compare case-insensitively (RFC 3722 normalises to lower case).
        """
        if not self.allow:
            return True
        name = initiator_name.lower()
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.allow)


class TargetDirectory(Protocol):
    """The targets, portals and discovery CHAP a login is checked against."""

    discovery_chap: ChapCredentials | None
    portals: list[tuple[str, int]]

    def lookup(self, name: str) -> TargetEntry | None: ...

    def targets(self) -> list[TargetEntry]: ...


def format_target_address(host: str, port: int, portal_group_tag: int) -> str:
    """``host:port,tpgt``; an IPv6 literal goes in brackets (RFC 7143 13.8)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port},{portal_group_tag}"


def send_targets(
    directory: TargetDirectory,
    initiator_name: str,
    value: str,
    *,
    portal_group_tag: int = 1,
    session_target: str | None = None,
) -> list[tuple[str, str]]:
    """Answer ``SendTargets=<value>`` (RFC 7143 Appendix C).

    Args:
        directory: the targets and portals this server offers.
        initiator_name: who asks; targets whose allow list excludes it are hidden.
        value: ``All`` (every visible target; discovery sessions only), a
            target name (that one, if visible), or empty (the session's target,
            normal sessions only).
        portal_group_tag: the tag appended to every TargetAddress.
        session_target: the target of a Normal session, None in Discovery.

    Returns:
        ``TargetName`` pairs each followed by one ``TargetAddress`` per portal;
        ``[("SendTargets", "Reject")]`` for a value the session type does not
        allow; empty when nothing is visible.
    """
    if value == "All":
        if session_target is not None:
            # "All" is for discovery sessions only (RFC 7143 Appendix C).
            return [("SendTargets", REJECT)]
        entries = [t for t in directory.targets() if t.admits(initiator_name)]
    elif value == "":
        if session_target is None:
            return [("SendTargets", REJECT)]
        entry = directory.lookup(session_target)
        entries = [entry] if entry is not None else []
    else:
        entry = directory.lookup(value)
        visible = entry is not None and entry.admits(initiator_name)
        if session_target is not None and value != session_target:
            visible = False  # a normal session only reports its own target
        entries = [entry] if visible and entry is not None else []
    out: list[tuple[str, str]] = []
    for entry in entries:
        out.append(("TargetName", entry.name))
        for host, port in directory.portals:
            out.append(("TargetAddress", format_target_address(host, port, portal_group_tag)))
    return out
