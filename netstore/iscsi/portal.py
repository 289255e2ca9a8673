# The target side of a portal group: the targets it exports (each with the LUN
# map every initiator shares, the units each initiator gets of its own, and
# what one initiator at a time may hold) and every live session.  The wiring
# layer says which targets to export (set_targets); this module knows nothing
# of media, VMs or configuration files.
"""Exported targets and the portal group (sans-IO)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from netstore.iscsi.login import TargetEntry
from netstore.iscsi.params import TargetLimits
from netstore.iscsi.session import Session
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.target import ScsiTarget
from netstore.scsi.taskset import Task, TaskSet

# Opens an initiator's own logical unit of a LUN: (initiator name, power-on) -> unit.
PrivateLunOpener = Callable[[str, bool], LogicalUnit]


@dataclass(frozen=True, slots=True)
class Claim:
    """Something a target holds that one initiator at a time may use.

    Two targets holding a claim with one ``key`` cannot be in use by two
    initiators at once; the refusal names ``label`` and gives ``rule``.
    """

    key: str
    label: str
    rule: str


@dataclass(frozen=True)
class TargetExport:
    """One target as the wiring layer asks the portal group to serve it.

    Attributes:
        entry: its name, alias, CHAP and access list (what login checks).
        luns: the units every initiator shares, by LUN.
        private: LUNs whose unit is each initiator's own, opened at its login
            (a power-on, a login while it has no other session to the target,
            opens a fresh one).
        claims: what one initiator at a time may hold.
        end_sessions: when the target is no longer exported: None, it only
            refuses new logins and its sessions go on; a text, its sessions
            end with that reason.
    """

    entry: TargetEntry
    luns: Mapping[int, LogicalUnit]
    private: Mapping[int, PrivateLunOpener] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    end_sessions: str | None = None


@dataclass(eq=False)
class ExportedTarget:
    """A target served at the portal group: its login entry and its SCSI LUN maps.

    ``scsi`` holds the LUNs every initiator shares.  LUNs in ``private`` give
    each initiator a logical unit of its own; such a target hands every
    initiator a view of its own (:meth:`view`).
    """

    entry: TargetEntry
    scsi: ScsiTarget
    accepting: bool = True  # False once no longer exported
    private: dict[int, PrivateLunOpener] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    end_sessions: str | None = None
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
        # Every target of the portal group in order, when other processes
        # serve some of them: discovery names them all, login only ours.
        self.directory: list[TargetEntry] | None = None
        self._tsih = itertools.count(1)
        # Gets a unit's task set drained once it has work: the shell sets a
        # worker-thread drainer; without one the work runs here and now.
        self.schedule: Callable[[TaskSet], None] = TaskSet.drain_now

    def run_on_unit(self, lu: LogicalUnit, fn: Callable[[], object]) -> None:
        """Run `fn` (a change of `lu`'s state) now if the unit is idle, else in
        its turn on its task set, after what is queued there."""
        ts = lu.tasks
        if ts.idle:
            fn()
        elif ts.submit(Task(fn, lambda _: None)):
            self.schedule(ts)

    # -- TargetDirectory -------------------------------------------------
    def lookup(self, name: str) -> TargetEntry | None:
        t = self.exported.get(name)
        return t.entry if t is not None and t.accepting else None

    def targets(self) -> list[TargetEntry]:
        if self.directory is not None:
            return list(self.directory)
        return [t.entry for t in self.exported.values() if t.accepting]

    # -- what is exported ------------------------------------------------
    def set_targets(self, targets: list[TargetExport]) -> None:
        """Export exactly `targets` from now on.

        A new target appears; a changed LUN map raises REPORTED LUNS DATA HAS
        CHANGED to its sessions (initiators pick up their own units at their
        next power-on); a target no longer wanted refuses new logins, and its
        sessions end too when its export said ``end_sessions``.
        """
        wanted = {t.entry.name: t for t in targets}
        for name, exported in list(self.exported.items()):
            if name in wanted or not exported.accepting:
                continue
            exported.accepting = False
            if exported.end_sessions is None:
                self.log.info("target %s removed: new logins are refused", name)
                continue
            del self.exported[name]
            for session in [s for s in self.sessions.values() if s.target is exported]:
                session.close(exported.end_sessions)
        for t in targets:
            luns, private = dict(t.luns), dict(t.private)
            exported = self.exported.get(t.entry.name)
            if exported is None or (not exported.accepting and t.end_sessions is not None):
                self.exported[t.entry.name] = ExportedTarget(
                    t.entry, ScsiTarget(t.entry.name, luns), private=private,
                    claims=t.claims, end_sessions=t.end_sessions)
                self.log.info("target %s: %d LUN(s)", t.entry.name, len(luns) + len(private))
                continue
            exported.entry = t.entry
            exported.accepting = True
            exported.claims = t.claims
            exported.end_sessions = t.end_sessions
            if exported.scsi.luns != luns or set(exported.private) != set(private):
                exported.private = private
                exported.scsi.set_luns(luns)
                exported.views.clear()
                self.log.info("target %s: LUNs changed, now %d", t.entry.name,
                              len(luns) + len(private))

    def units(self) -> list[LogicalUnit]:
        """Every logical unit served now, shared and private (to flush them)."""
        seen: dict[int, LogicalUnit] = {}
        for t in self.exported.values():
            for view in t.all_views():
                for lu in view.luns.values():
                    seen[id(lu)] = lu
        return list(seen.values())

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
        """Why `initiator` may not open a session to `entry` now, or None:
        another initiator holds one of the target's claims."""
        target = self.exported.get(entry.name) if entry is not None else None
        if target is None or not target.claims:
            return None
        for other in self.sessions.values():
            if other.initiator == initiator or other.target is None:
                continue
            held = {c.key for c in other.target.claims}
            for claim in target.claims:
                if claim.key in held:
                    return (f"{claim.label} is in use by {other.initiator} "
                            f"(target {other.target.entry.name}); {claim.rule}")
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
