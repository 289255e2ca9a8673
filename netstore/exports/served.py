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

from .targets import PrivateSpec, TargetPlan
from .units import UnitCache, UnitSpec


class TargetUnits:
    """Opens the units of the plans a worker serves and keeps them while unchanged.

    Args:
        state_dir: the daemon's state directory (registry, reservation files).
        restarted: this worker replaces one that died: a machine's first login
            here is not a power-on, so its own layer is kept, not reset.
    """

    def __init__(self, state_dir: Path, log: logging.Logger | None = None, *,
                 restarted: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.log = log or logging.getLogger("netstore.exports")
        self.units = UnitCache(self.state_dir, self.log)
        self.restarted = restarted
        # (target, lun, machine) -> the spec of that machine's own unit now
        self._private: dict[tuple[str, int, str], UnitSpec] = {}
        self._seen: set[tuple[str, int, str]] = set()

    def exports(self, plans: list[TargetPlan]) -> list[TargetExport]:
        """The exports of `plans`, their units open; units of no plan are closed.

        A target whose units cannot be opened is left out (and logged), so
        one bad image does not take the others down.
        """
        out: list[TargetExport] = []
        keep: set[UnitSpec] = set(self._private.values())
        for plan in plans:
            try:
                luns = {i: self.units.get(spec) for i, spec in plan.luns.items()}
            except Exception as e:
                self.log.error("target %s not served: %s", plan.entry.name, e)
                continue
            keep.update(plan.luns.values())
            private = {i: self._opener(p) for i, p in plan.private.items()}
            out.append(TargetExport(entry=plan.entry, luns=luns, private=private,
                                    claims=plan.claims, end_sessions=plan.end_sessions))
        self.units.retain(keep)
        return out

    def _opener(self, p: PrivateSpec) -> PrivateLunOpener:
        """Opens `machine`'s own layer of an immutable or multiattach medium;
        until the VM registry names the machine, the machine is the initiator."""

        def open_for(machine: str, power_on: bool) -> LogicalUnit:
            key = (p.target, p.index, machine)
            if self.restarted and key not in self._seen:
                power_on = False  # the machine did not power on: its worker died
            self._seen.add(key)
            old = self._private.pop(key, None)
            if old is not None:
                self.units.close(old)
            with Registry.open(self.state_dir) as reg:
                if power_on:
                    path = reg.layer_at_power_on(p.medium, machine)
                else:
                    path = reg.layer_for(p.medium, machine)
            if power_on:
                self.log.info("target %s LUN %d: %s powered on, layer %s", p.target, p.index,
                              machine, path)
            spec = UnitSpec(target=p.target, index=p.index, path=str(path),
                            identity_path=p.base, owner=machine)
            self._private[key] = spec
            return self.units.get(spec)

        return open_for

    def flush(self) -> None:
        """Flush every open unit (a clean stop)."""
        self.units.flush_all()
