# The target side of the iSCSI portal group: the exported targets (login
# entry plus SCSI LUN maps, per-initiator views) and the PortalGroup that
# holds them with every live session and answers the login machine's
# TargetDirectory questions.  Pure: no sockets, no clock.
"""Exported targets and the portal group of the iSCSI target (sans-IO).

An :class:`ExportedTarget` is what one target name serves: its login entry
and its LUN maps.  The :class:`PortalGroup` is the target side of every
connection: the exported targets and every live session.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from netstore.iscsi.login import TargetEntry
from netstore.iscsi.params import TargetLimits
from netstore.iscsi.session import Session
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.target import ScsiTarget

# Opens a machine's own logical unit of a LUN: (initiator name, power-on) -> unit.
PrivateLunOpener = Callable[[str, bool], LogicalUnit]


@dataclass(eq=False)
class ExportedTarget:
    """A target served at the portal group: its login entry and its SCSI LUN maps.

    ``scsi`` holds the LUNs every initiator shares.  Immutable and
    multiattach media give each machine (until the VM registry: each
    initiator) a logical unit of its own, opened by ``private[lun]``; such a
    target hands every initiator a view of its own (:meth:`view`).
    ``exclusive`` names the normal and writethrough media of the target
    (uuid -> name): those run in one machine at a time.
    """

    entry: TargetEntry
    scsi: ScsiTarget
    accepting: bool = True  # False once removed from the configuration
    private: dict[int, PrivateLunOpener] = field(default_factory=dict)
    exclusive: dict[str, str] = field(default_factory=dict)
    views: dict[str, ScsiTarget] = field(default_factory=dict)

    def view(self, initiator: str, *, power_on: bool) -> ScsiTarget:
        """The LUN map `initiator` sees; a power-on reopens its own units."""
        if not self.private:
            return self.scsi
        v = self.views.get(initiator)
        if v is not None and not power_on:
            return v
        luns = self.scsi.luns
        for lun, opener in self.private.items():
            luns[lun] = opener(initiator, power_on)
        v = ScsiTarget(self.entry.name, luns)
        self.views[initiator] = v
        return v

    def all_views(self) -> list[ScsiTarget]:
        """Every LUN map of the target (a reset reaches them all)."""
        return [self.scsi, *self.views.values()]


class PortalGroup:
    """The target side of every connection: exported targets and live sessions.

    It implements the ``TargetDirectory`` the login machine consults.
    """

    def __init__(self, *, portals: list[tuple[str, int]], tag: int = 1,
                 limits: TargetLimits | None = None, discovery_chap=None,
                 log: logging.Logger | None = None) -> None:
        self.portals = list(portals)
        self.tag = tag
        self.limits = limits or TargetLimits()
        self.discovery_chap = discovery_chap
        self.log = log or logging.getLogger("netstore.iscsi")
        self.exported: dict[str, ExportedTarget] = {}
        self.sessions: dict[tuple[str, bytes], Session] = {}
        self._tsih = itertools.count(1)

    # -- TargetDirectory -------------------------------------------------
    def lookup(self, name: str) -> TargetEntry | None:
        t = self.exported.get(name)
        return t.entry if t is not None and t.accepting else None

    def targets(self) -> list[TargetEntry]:
        return [t.entry for t in self.exported.values() if t.accepting]

    # -- sessions --------------------------------------------------------
    def new_tsih(self) -> int:
        while True:
            tsih = next(self._tsih) & 0xFFFF
            if tsih and not any(s.tsih == tsih for s in self.sessions.values()):
                return tsih

    def find_session(self, initiator: str, isid: bytes, tsih: int) -> Session | None:
        s = self.sessions.get((initiator, bytes(isid)))
        return s if s is not None and s.tsih == tsih else None

    def admit(self, initiator: str, entry: TargetEntry | None) -> str | None:
        """Why `initiator` may not open a session to `entry` now, or None.

        Normal and writethrough media run in one machine at a time
        (semantics.md section 1); until the VM registry the machine is the
        initiator.
        """
        target = self.exported.get(entry.name) if entry is not None else None
        if target is None or not target.exclusive:
            return None
        for other in self.sessions.values():
            if other.initiator == initiator or other.target is None:
                continue
            for uuid, name in target.exclusive.items():
                if uuid in other.target.exclusive:
                    kind = "normal and writethrough disks run in one machine at a time"
                    return (f"disk {name} is in use by {other.initiator} "
                            f"(target {other.target.entry.name}); {kind}")
        return None

    def status(self) -> dict:
        """JSON-able summary of targets and sessions."""
        return {
            "targets": [
                {"iqn": name, "accepting": t.accepting,
                 "luns": sorted(t.scsi.luns) if hasattr(t.scsi, "luns") else []}
                for name, t in self.exported.items()
            ],
            "sessions": [s.status() for s in self.sessions.values()],
        }
