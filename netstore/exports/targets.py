# The targets the iSCSI service exports, built from the configuration's
# [[iscsi.targets]] and the registry's running VMs.  The medium types' rules
# for serving (semantics.md 1) live here: which file a machine reads and
# writes, which units are a machine's own, which media one machine at a time.
"""Config targets and running VMs -> :class:`TargetPlan` values (nothing opened)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from netstore.config import ChapConfig, TargetConfig
from netstore.disk.media import EXCLUSIVE_TYPES, LAYERED_TYPES
from netstore.iscsi.login import ChapCredentials, TargetEntry
from netstore.iscsi.portal import Claim
from netstore.registry import Registry
from netstore.scsi.alua import PortGroups

from .multipath import HostGroup, exported_here, port_groups
from .units import UnitSpec, check_image
from .watcher import RegistryView, RunningVm

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


@dataclass(frozen=True, slots=True)
class PrivateSpec:
    """A LUN whose unit is each machine's own layer of an immutable or
    multiattach medium (opened at the machine's login, see TargetUnits)."""

    target: str
    index: int
    medium: str
    base: str  # the medium's base image: it names the unit


@dataclass(frozen=True)
class TargetPlan:
    """One target as plain values: what a worker process needs to serve it.

    The unit specs say which images to open; nothing here is open.
    """

    entry: TargetEntry
    luns: dict[int, UnitSpec]
    private: dict[int, PrivateSpec] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    end_sessions: str | None = None
    # ALUA port groups per LUN (multipath.py; none: the one host's single group)
    access: dict[int, PortGroups] = field(default_factory=dict)


class TargetWiring:
    """Keeps the plans of the configuration's targets and of the registry's VMs.

    ``plans()`` is the whole list the iSCSI target should serve; it changes
    when :meth:`set_config` (start, SIGHUP) or :meth:`set_registry` (the
    registry watcher) is called.  It opens no image: the worker that serves a
    target opens its units (:class:`TargetUnits`).  ``set_config`` reads the
    registry: call it from a worker thread.
    """

    def __init__(self, state_dir: Path, base_iqn: str,
                 log: logging.Logger | None = None, *, registry_url: str | None = None,
                 host: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.registry_url = registry_url
        self.host = host  # this host's name in a shared registry (None: one host)
        self.isolated = False  # it cannot reach the shared registry: its paths are unavailable
        self._view: RegistryView | None = None
        self.base_iqn = base_iqn
        self.log = log or logging.getLogger("netstore.exports")
        self._config: list[TargetPlan] = []
        self._vms: dict[str, TargetPlan] = {}

    def plans(self) -> list[TargetPlan]:
        """Every target to serve: the configuration's, then the running VMs'."""
        return [*self._config, *self._vms.values()]

    # -- the configuration's targets ----------------------------------------------
    def set_config(self, targets: list[TargetConfig], base_iqn: str | None = None) -> None:
        """Plan the configuration's targets (all of them, or none on error).

        Raises:
            ExportError: a LUN's image is missing.
            RegistryError: a LUN's medium is not registered.
        """
        self._config = [self._config_target(t) for t in targets]
        if base_iqn is not None:
            self.base_iqn = base_iqn

    def _config_target(self, t: TargetConfig) -> TargetPlan:
        luns: dict[int, UnitSpec] = {}
        private: dict[int, PrivateSpec] = {}
        claims: list[Claim] = []
        for i, spec in enumerate(t.luns):
            if getattr(spec, "medium", None):
                unit = self._medium_lun(private, claims, t.iqn, spec, i)
            else:
                unit = UnitSpec(
                    target=t.iqn, index=i, path=str(spec), kind=getattr(spec, "kind", "disk"),
                    readonly=getattr(spec, "readonly", False),
                    removable=getattr(spec, "removable", False),
                    thin=getattr(spec, "thin", None))
            if unit is not None:
                check_image(unit)
                luns[i] = unit
        entry = TargetEntry(name=t.iqn, alias=t.alias, chap=chap_credentials(t.chap),
                            allow=list(t.allow))
        return TargetPlan(entry=entry, luns=luns, private=private, claims=tuple(claims))

    def _medium_lun(self, private: dict, claims: list[Claim], target: str, spec,
                    index: int) -> UnitSpec | None:
        """A LUN on a registered medium, served as its type says.

        Returns the shared unit's spec, or None after putting the medium in
        `private` (immutable, multiattach: each machine's own unit).
        """
        with Registry.open(self.state_dir, self.registry_url) as reg:
            m = reg.medium(spec.medium)
            top = reg.current_top(m) if m.type == "normal" else None
        if m.type in LAYERED_TYPES:
            private[index] = PrivateSpec(target=target, index=index, medium=m.name,
                                         base=m.location)
            return None
        if m.type in EXCLUSIVE_TYPES:
            claims.append(Claim(key=m.uuid, label=f"disk {m.name}", rule=EXCLUSIVE_RULE))
        kind = "dvd" if m.kind == "dvd" else getattr(spec, "kind", "disk")
        return UnitSpec(
            target=target, index=index, path=str(top) if top is not None else m.location,
            kind=kind, readonly=m.type == "readonly" or getattr(spec, "readonly", False),
            removable=getattr(spec, "removable", False), thin=getattr(spec, "thin", None),
            identity_path=m.location,
            epoch=("medium", m.type))

    # -- the registry's running VMs --------------------------------------------------
    def set_registry(self, view: RegistryView) -> None:
        """Plan every running VM of `view` as target ``<base-iqn>:vm.<name>``.

        Its LUNs are its attached media in controller/port order, each served
        as its type says (the VM's own layer for immutable and multiattach
        media, reset by ``vm start``); a stopped VM's target ends its sessions.
        """
        self._view = view
        vms: dict[str, TargetPlan] = {}
        for vm in view.running:
            iqn = vm_target_name(self.base_iqn, vm.name)
            luns, access = self._vm_units(iqn, vm, view.hosts)
            vms[iqn] = TargetPlan(entry=TargetEntry(name=iqn, alias=vm.name), luns=luns,
                                  end_sessions=VM_POWERED_OFF, access=access)
        for iqn in vms.keys() - self._vms.keys():
            self.log.info("VM %s running: target %s with %d LUN(s)", vms[iqn].entry.alias,
                          iqn, len(vms[iqn].luns))
        for iqn in self._vms.keys() - vms.keys():
            self.log.info("VM target %s stopped", iqn)
        self._vms = vms

    def set_isolated(self, isolated: bool) -> None:
        """This host fenced itself (it cannot reach the shared registry), or
        reaches it again: re-plan the VMs' units with its paths' new state."""
        self.isolated = isolated
        if self._view is not None:
            self.set_registry(self._view)

    def _vm_units(self, iqn: str, vm: RunningVm, hosts: tuple[HostGroup, ...]
                  ) -> tuple[dict[int, UnitSpec], dict[int, PortGroups]]:
        """The units of a running VM's target here, and their ALUA port groups
        when several hosts share the registry (multipath.py)."""
        luns: dict[int, UnitSpec] = {}
        access: dict[int, PortGroups] = {}
        me = self.host
        for i, a in enumerate(vm.attachments):
            groups = port_groups(hosts, me, vm.host, a.type, isolated=self.isolated) if me else None
            if groups is not None and not exported_here(a.type, me, vm.host):
                continue
            luns[i] = UnitSpec(target=iqn, index=i, path=a.image,
                               kind="dvd" if a.slot_kind == "dvd" else "disk",
                               readonly=a.type == "readonly", removable=a.slot_kind == "dvd",
                               identity_path=a.location,
                               epoch=(a.medium_uuid, a.type, vm.started),
                               group=groups.own if groups is not None else 1,
                               shared=groups is not None, writer=vm.host)
            if groups is not None:
                access[i] = groups
        return luns, access
