# What an iSCSI worker process serves: target plans (plain values from the
# supervisor's wiring) turned into TargetExports with open logical units, each
# machine's own units of immutable and multiattach media opened at its login.
"""Target plans -> :class:`~netstore.iscsi.portal.TargetExport` with open units."""

from __future__ import annotations

import logging
from pathlib import Path

from netstore.iscsi.portal import PrivateLunOpener, TargetExport
from netstore.registry import Registry
from netstore.scsi.lun import LogicalUnit

from .multipath import take_over
from .targets import PrivateSpec, TargetPlan
from .units import UnitCache, UnitSpec


class TargetUnits:
    """Opens the units of the plans a worker serves and keeps them while unchanged.

    Args:
        state_dir: the daemon's state directory (registry, reservation files).
        registry_url: a shared registry's URL ([registry] url), None for SQLite.
        restarted: this worker replaces one that died: a machine's first login
            here is not a power-on, so its own layer is kept, not reset.
    """

    def __init__(self, state_dir: Path, log: logging.Logger | None = None, *,
                 restarted: bool = False, registry_url: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.registry_url = registry_url
        self.log = log or logging.getLogger("netstore.exports")
        self.units = UnitCache(self.state_dir, self.log, registry_url)
        self.restarted = restarted
        # (target, lun, machine) -> the spec of that machine's own unit now
        self._private: dict[tuple[str, int, str], UnitSpec] = {}
        self._seen: set[tuple[str, int, str]] = set()
        # (target, lun, machine) -> (power-on?, spec) opened ahead of a login
        self._prepared: dict[tuple[str, int, str], tuple[bool, UnitSpec]] = {}
        self._plans: dict[str, TargetPlan] = {}
        # (target, LUN) -> the unit it was served by last (ALUA take-over)
        self._lun_units: dict[tuple[str, int], tuple[UnitSpec, LogicalUnit]] = {}

    def exports(self, plans: list[TargetPlan]) -> list[TargetExport]:
        """The exports of `plans`, their units open; units of no plan are closed.

        A target whose units cannot be opened is left out (and logged), so
        one bad image does not take the others down.
        """
        out: list[TargetExport] = []
        served: set[tuple[str, int]] = set()
        self._plans = {p.entry.name: p for p in plans}
        keep: set[UnitSpec] = set(self._private.values())
        keep.update(spec for _, spec in list(self._prepared.values()))
        for plan in plans:
            try:
                luns = {i: self.units.get(spec) for i, spec in plan.luns.items()}
            except Exception as e:
                self.log.error("target %s not served: %s", plan.entry.name, e)
                continue
            self._set_access(plan, luns)
            served.update((plan.entry.name, i) for i in luns)
            keep.update(plan.luns.values())
            private = {i: self._opener(p) for i, p in plan.private.items()}
            out.append(TargetExport(entry=plan.entry, luns=luns, private=private,
                                    claims=plan.claims, end_sessions=plan.end_sessions))
        self.units.retain(keep)
        self._lun_units = {k: v for k, v in self._lun_units.items() if k in served}
        return out

    def _set_access(self, plan: TargetPlan, luns: dict[int, LogicalUnit]) -> None:
        """Give each unit its ALUA port groups; a unit opened afresh for a LUN
        (its owner host changed) takes over the old unit's nexuses."""
        for i, lu in luns.items():
            groups = plan.access.get(i)
            if groups is None:
                continue
            spec = plan.luns[i]
            old = self._lun_units.get((plan.entry.name, i))
            # the same run of the same disk, reopened because its writer moved
            if old is not None and old[1] is not lu and old[0].epoch == spec.epoch:
                take_over(old[1], lu)
            self._lun_units[(plan.entry.name, i)] = (spec, lu)
            lu.set_port_groups(groups)

    def _opener(self, p: PrivateSpec) -> PrivateLunOpener:
        """Opens `machine`'s own layer of an immutable or multiattach medium;
        until the VM registry names the machine, the machine is the initiator."""

        def open_for(machine: str, power_on: bool) -> LogicalUnit:
            key = (p.target, p.index, machine)
            ready = self._prepared.pop(key, None)
            if ready is not None and ready[0] == power_on:
                return self.units.get(ready[1])  # opened ahead by prepare()
            # Not prepared (the login did not come through the acceptor): the
            # registry is read here, on the caller's thread.
            return self.units.get(self._open_private(p, machine, power_on))

        return open_for

    def preparable(self, target: str, initiator: str) -> bool:
        """Whether `initiator`'s own units of `target` may be opened before its
        login ends: the target has such units, admits the initiator and asks
        no CHAP (so the name is all a login proves; with CHAP, a failed login
        must not reset the machine's layer, and the units open at login)."""
        plan = self._plans.get(target)
        return (plan is not None and bool(plan.private) and plan.entry.chap is None
                and plan.entry.admits(initiator))

    def prepare(self, target: str, machine: str, power_on: bool) -> list[LogicalUnit]:
        """Open `machine`'s own units of `target` ahead of its login, so the
        login finds them open (the registry and the layer files are touched
        here: call it from a worker thread).  Returns the units opened."""
        plan = self._plans.get(target)
        opened = []
        for p in plan.private.values() if plan is not None else ():
            spec = self._open_private(p, machine, power_on)
            opened.append(self.units.get(spec))
            self._prepared[(p.target, p.index, machine)] = (power_on, spec)
        return opened

    def _open_private(self, p: PrivateSpec, machine: str, power_on: bool) -> UnitSpec:
        """The spec of `machine`'s own layer of `p` now (a new one at power-on;
        not after this worker replaced one that died, see `restarted`)."""
        key = (p.target, p.index, machine)
        if self.restarted and key not in self._seen:
            power_on = False  # the machine did not power on: its worker died
        self._seen.add(key)
        old = self._private.pop(key, None)
        if old is not None and power_on:
            self.units.close(old)  # a power-on may make its layer afresh in place
        with Registry.open(self.state_dir, self.registry_url) as reg:
            if power_on:
                path = reg.layer_at_power_on(p.medium, machine)
            else:
                path = reg.layer_for(p.medium, machine)
        if power_on:
            self.log.info("target %s LUN %d: %s powered on, layer %s", p.target, p.index,
                          machine, path)
        spec = UnitSpec(target=p.target, index=p.index, path=str(path), identity_path=p.base,
                        owner=machine)
        if old is not None and old != spec:
            self.units.close(old)
        self._private[key] = spec
        return spec

    def flush(self) -> None:
        """Flush every open unit (a clean stop)."""
        self.units.flush_all()
