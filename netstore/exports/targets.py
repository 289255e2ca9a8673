# The targets the iSCSI service exports, built from the configuration's
# [[iscsi.targets]] and the registry's running VMs.  The medium types' rules
# for serving (semantics.md 1) live here: which file a machine reads and
# writes, which units are a machine's own, which media one machine at a time.
"""Config targets and running VMs -> :class:`~netstore.iscsi.portal.TargetExport`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from netstore.config import ChapConfig, TargetConfig
from netstore.iscsi.login import ChapCredentials, TargetEntry
from netstore.iscsi.portal import Claim, TargetExport
from netstore.registry import Registry
from netstore.scsi.lun import LogicalUnit

from .units import UnitCache, UnitSpec
from .watcher import RegistryView, RunningVm

# Types whose writes go to a layer of each machine's own.
PRIVATE_TYPES = ("immutable", "multiattach")
# Types one machine at a time may run (semantics.md 1: "only one running").
EXCLUSIVE_TYPES = ("normal", "writethrough")
EXCLUSIVE_RULE = "normal and writethrough disks run in one machine at a time"
VM_POWERED_OFF = "the VM was powered off"


def vm_target_name(base_iqn: str, vm: str) -> str:
    """The target a running VM's disks are served as: ``<base-iqn>:vm.<name>``."""
    return f"{base_iqn}:vm.{vm}"


def chap_credentials(c: ChapConfig | None) -> ChapCredentials | None:
    """The login machine's CHAP credentials for a ``chap = {...}`` table."""
    if c is None:
        return None
    return ChapCredentials(user=c.user, secret=c.secret, mutual_user=c.mutual_user,
                           mutual_secret=c.mutual_secret)


class TargetWiring:
    """Keeps the exports of the configuration and of the registry's VMs.

    ``exports()`` is the whole list the iSCSI service should serve; it changes
    when :meth:`set_config` (start, SIGHUP) or :meth:`set_registry` (the
    registry watcher) is called.  Units whose description did not change stay
    the same objects, so their sessions go on.
    """

    def __init__(self, state_dir: Path, base_iqn: str,
                 log: logging.Logger | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.base_iqn = base_iqn
        self.log = log or logging.getLogger("netstore.exports")
        self.units = UnitCache(self.state_dir, self.log)
        self._config: list[TargetExport] = []
        self._vms: dict[str, TargetExport] = {}
        self._vm_specs: set[UnitSpec] = set()
        # (target, lun, machine) -> the spec of that machine's own unit now
        self._private: dict[tuple[str, int, str], UnitSpec] = {}

    def exports(self) -> list[TargetExport]:
        """Every target to serve: the configuration's, then the running VMs'."""
        return [*self._config, *self._vms.values()]

    # -- the configuration's targets ----------------------------------------------
    def set_config(self, targets: list[TargetConfig], base_iqn: str | None = None) -> None:
        """Export the configuration's targets (all of them, or none on error).

        Raises:
            ExportError: a LUN cannot be opened as described.
        """
        self._config = [self._config_target(t) for t in targets]
        if base_iqn is not None:
            self.base_iqn = base_iqn

    def _config_target(self, t: TargetConfig) -> TargetExport:
        luns: dict[int, LogicalUnit] = {}
        private: dict[int, Callable[[str, bool], LogicalUnit]] = {}
        claims: list[Claim] = []
        for i, spec in enumerate(t.luns):
            if getattr(spec, "medium", None):
                lu = self._medium_lun(private, claims, t.iqn, spec, i)
                if lu is not None:
                    luns[i] = lu
            else:
                luns[i] = self.units.get(UnitSpec(
                    target=t.iqn, index=i, path=str(spec), kind=getattr(spec, "kind", "disk"),
                    readonly=getattr(spec, "readonly", False),
                    removable=getattr(spec, "removable", False),
                    thin=getattr(spec, "thin", None)))
        entry = TargetEntry(name=t.iqn, alias=t.alias, chap=chap_credentials(t.chap),
                            allow=list(t.allow))
        return TargetExport(entry=entry, luns=luns, private=private, claims=tuple(claims))

    def _medium_lun(self, private: dict, claims: list[Claim], target: str, spec,
                    index: int) -> LogicalUnit | None:
        """A LUN on a registered medium, served as its type says.

        Returns the shared unit, or None after putting an opener for a unit
        of each machine's own (immutable, multiattach) in `private`.
        """
        with Registry.open(self.state_dir) as reg:
            m = reg.medium(spec.medium)
            top = reg.current_top(m) if m.type == "normal" else None
        if m.type in PRIVATE_TYPES:
            private[index] = self._private_opener(target, index, m.name, m.location)
            return None
        if m.type in EXCLUSIVE_TYPES:
            claims.append(Claim(key=m.uuid, label=f"disk {m.name}", rule=EXCLUSIVE_RULE))
        kind = "dvd" if m.kind == "dvd" else getattr(spec, "kind", "disk")
        return self.units.get(UnitSpec(
            target=target, index=index, path=str(top) if top is not None else m.location,
            kind=kind, readonly=m.type == "readonly" or getattr(spec, "readonly", False),
            removable=getattr(spec, "removable", False), thin=getattr(spec, "thin", None),
            identity_path=m.location,
            epoch=("medium", m.type)))

    def _private_opener(self, target: str, index: int, medium: str,
                        base: str) -> Callable[[str, bool], LogicalUnit]:
        """Opens `machine`'s own layer of an immutable or multiattach medium;
        until the VM registry names the machine, the machine is the initiator."""

        def open_for(machine: str, power_on: bool) -> LogicalUnit:
            old = self._private.pop((target, index, machine), None)
            if old is not None:
                self.units.close(old)
            with Registry.open(self.state_dir) as reg:
                if power_on:
                    path = reg.layer_at_power_on(medium, machine)
                else:
                    path = reg.layer_for(medium, machine)
            if power_on:
                self.log.info("target %s LUN %d: %s powered on, layer %s", target, index,
                              machine, path)
            spec = UnitSpec(target=target, index=index, path=str(path), identity_path=base,
                            owner=machine)
            self._private[(target, index, machine)] = spec
            return self.units.get(spec)

        return open_for

    # -- the registry's running VMs --------------------------------------------------
    def set_registry(self, view: RegistryView) -> None:
        """Export every running VM of `view` as target ``<base-iqn>:vm.<name>``.

        Its LUNs are its attached media in controller/port order, each served
        as its type says (the VM's own layer for immutable and multiattach
        media, reset by ``vm start``); a stopped VM's target ends its sessions.
        """
        vms: dict[str, TargetExport] = {}
        specs: set[UnitSpec] = set()
        for vm in view.running:
            iqn = vm_target_name(self.base_iqn, vm.name)
            luns = {}
            for i, spec in enumerate(self._vm_units(iqn, vm)):
                luns[i] = self.units.get(spec)
                specs.add(spec)
            vms[iqn] = TargetExport(entry=TargetEntry(name=iqn, alias=vm.name), luns=luns,
                                    end_sessions=VM_POWERED_OFF)
        for iqn in vms.keys() - self._vms.keys():
            self.log.info("VM %s running: target %s with %d LUN(s)", vms[iqn].entry.alias,
                          iqn, len(vms[iqn].luns))
        for iqn in self._vms.keys() - vms.keys():
            self.log.info("VM target %s stopped", iqn)
        for spec in self._vm_specs - specs:  # units no running VM uses any more
            self.units.close(spec)
        self._vms, self._vm_specs = vms, specs

    @staticmethod
    def _vm_units(iqn: str, vm: RunningVm) -> list[UnitSpec]:
        return [UnitSpec(target=iqn, index=i, path=a.image,
                         kind="dvd" if a.slot_kind == "dvd" else "disk",
                         readonly=a.type == "readonly", removable=a.slot_kind == "dvd",
                         identity_path=a.location, epoch=(a.medium_uuid, a.type, vm.started))
                for i, a in enumerate(vm.attachments)]

    def flush(self) -> None:
        """Flush every open unit (a clean stop)."""
        self.units.flush_all()
