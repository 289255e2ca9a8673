# Machines (VMs) in the registry, semantics.md section 2: the limits and
# rules of a VM's CPUs (count, hot-plug, cap, weight), memory (fixed or a
# range, balloon), page fusion, chipset and power state; creating, changing,
# starting (with the media rules of section 1), stopping and removing VMs.
# Machines is the VM API of the registry (reg.machines): its storage
# (attachments.py), NICs (nics.py) and snapshots (snapshots.py) are kept in
# their own modules and reached through it.  Every change is one BEGIN
# IMMEDIATE transaction (db.py), so two CLIs at once lose nothing; a change
# bumps the registry generation, which the daemon polls.
"""The machines of the registry: create, modify, attach, NICs, start, stop, remove."""

from __future__ import annotations

import json
import re
import uuid as uuidlib
import warnings
from typing import Any

from netstore.disk.media import LAYERED_TYPES
from netstore.registry import host
from netstore.registry.attachments import (
    BUSES,
    EXCLUSIVE_TYPES,
    Attachment,
    Attachments,
    Bus,
    Controller,
    attachments_of,
    check_can_run,
)
from netstore.registry.boot import apply_boot
from netstore.registry.db import now, remove_file
from netstore.registry.errors import (
    MachineRuleError,
    MachineStateError,
    MachineWarning,
    NameTakenError,
)
from netstore.registry.host import host_cores, host_memory_mb, host_report
from netstore.registry.hosts import claim_writes, power_off
from netstore.registry.layers import Layers, power_on_layer
from netstore.registry.media import get_medium
from netstore.registry.nics import (
    NIC_MODELS,
    NIC_PORT_RANGE,
    NIC_PORTS_ENV,
    NIC_SLOTS,
    TRANSPORTS,
    ImpairmentChange,
    Nic,
    Nics,
    nic_port_range,
    normal_mac,
)
from netstore.registry.snapshots import Snapshot, Snapshots
from netstore.registry.startup import group_members, set_startup
from netstore.registry.vm import Machine, all_machines, cpu_text, get_machine

# VM names become iSCSI target names (<base-iqn>:vm.<name>), which RFC 3720
# section 3.2.6.2 limits to lowercase letters, digits, '.', '-' and ':'.
MACHINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
MAX_CPUS = 32  # semantics.md section 2; VirtualBox's limit is 32 too
MIN_MEMORY_MB = 4  # VirtualBox's smallest
MAX_MEMORY_MB = 2 << 20  # 2 TiB, VirtualBox's largest
MAX_WEIGHT = 10_000  # as cgroup v2 cpu.weight (1..10000, default 100)
DEFAULT_WEIGHT = 100
CHIPSETS = ("piix3", "ich9")  # VirtualBox's; QEMU's pc and q35
POWER_STATES = ("poweroff", "running")
# Who runs a running VM's QEMU: the daemon ("headless") or the user ("external").
RUN_TYPES = ("headless", "external")


def check_machine_name(name: str) -> str:
    """`name` if it is a VM name, else MachineRuleError."""
    if not MACHINE_NAME_RE.fullmatch(name):
        raise MachineRuleError(
            f"{name!r} is not a VM name (1-63 lowercase letters, digits, '.', '-', starting "
            "with a letter or digit; it becomes the iSCSI target name <base-iqn>:vm.<name>)"
        )
    return name


def check_cpus(name: str, cpus: int, cores: int | None = None) -> str | None:
    """Refuse a vCPU count; return the warning for one above the host's cores.

    Raises:
        MachineRuleError: below 1, above MAX_CPUS, or above twice the host's cores.
    """
    cores = cores or host.host_cores()
    if cpus < 1:
        raise MachineRuleError(f"{name}: {cpus} vCPUs; a VM has at least 1")
    if cpus > MAX_CPUS:
        raise MachineRuleError(f"{name}: {cpus} vCPUs is more than {MAX_CPUS}, the most a VM has")
    if cpus > 2 * cores:
        raise MachineRuleError(
            f"{name}: {cpus} vCPUs is more than twice this host's {cores} cores ({2 * cores}); "
            "give it fewer"
        )
    if cpus > cores:
        return (f"{name}: {cpus} vCPUs is more than this host's {cores} cores; "
                "oversubscribed vCPUs run slower")
    return None


def _check_memory(name: str, mb: int, what: str = "memory") -> None:
    if not MIN_MEMORY_MB <= mb <= MAX_MEMORY_MB:
        raise MachineRuleError(
            f"{name}: {what} {mb} MB is outside {MIN_MEMORY_MB}..{MAX_MEMORY_MB} MB"
        )


class Machines:
    """The VMs of one registry (``reg.machines``).  Methods take a VM's name;
    each one raising is a refusal that changed nothing."""

    def __init__(self, reg: Layers) -> None:
        self.reg = reg
        self._storage = Attachments(reg)
        self._nics = Nics(reg)
        self._snapshots = Snapshots(reg)

    # -- reading -----------------------------------------------------------

    def get(self, name: str) -> Machine:
        """The VM of that name or UUID.  Raises NotFoundError."""
        with self.reg.reading() as conn:
            return get_machine(conn, name)

    def list(self) -> list[Machine]:
        """Every VM, by name."""
        with self.reg.reading() as conn:
            return all_machines(conn)

    def controllers(self, name: str) -> list[Controller]:
        """The VM's storage controllers in the order they were added."""
        return self._storage.controllers(name)

    def attachments(self, name: str) -> list[Attachment]:
        """The VM's attached media in controller (as added), port, device order:
        the order of its LUNs."""
        return self._storage.attachments(name)

    def nics(self, name: str) -> list[Nic]:
        """The VM's NICs by slot."""
        return self._nics.nics(name)

    def info(self, name: str) -> dict[str, Any]:
        """Everything about the VM as plain data (what `vm info --json` prints)."""
        vm = self.get(name)
        d = vm.to_dict()
        d["controllers"] = [c.to_dict() for c in self.controllers(name)]
        d["attachments"] = [a.to_dict() for a in self.attachments(name)]
        d["nics"] = [n.to_dict() for n in self.nics(name)]
        d["snapshots"] = [s.to_dict() for s in self._snapshots.list(name)]
        return d

    # -- creating and changing ---------------------------------------------

    def create(self, name: str, *, cpus: int = 1, memory_mb: int = 1024, ostype: str = "Other",
               chipset: str = "piix3") -> Machine:
        """Register a new powered-off VM.

        Warns:
            MachineWarning: more vCPUs than the host has cores.

        Raises:
            MachineRuleError: a bad name, CPU count, memory size or chipset.
            NameTakenError: a VM of that name exists.
        """
        check_machine_name(name)
        warning = check_cpus(name, cpus)
        _check_memory(name, memory_mb)
        if chipset.lower() not in CHIPSETS:
            raise MachineRuleError(
                f"{name}: unknown chipset {chipset!r} (one of {', '.join(CHIPSETS)})"
            )
        with self.reg.transaction() as conn:
            if conn.execute("SELECT 1 FROM machines WHERE name = ?", (name,)).fetchone():
                raise NameTakenError(f"a VM named {name} is registered already")
            conn.execute(
                "INSERT INTO machines (uuid, name, ostype, cpus, memory_mb, chipset, weight, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(uuidlib.uuid4()), name, ostype, cpus, memory_mb, chipset.lower(),
                 DEFAULT_WEIGHT, now()),
            )
            vm = get_machine(conn, name)
        if warning:
            warnings.warn(MachineWarning(warning), stacklevel=2)
        return vm

    def modify(self, name: str, *, cpus: int | None = None, cpu_hotplug: bool | None = None,
               plug_cpu: int | None = None, unplug_cpu: int | None = None,
               cpu_cap: int | None = None, weight: int | None = None,
               memory_mb: int | None = None, memory_range: tuple[int, int] | None = None,
               balloon_mb: int | None = None, page_fusion: bool | None = None,
               ostype: str | None = None, chipset: str | None = None,
               boot_order: str | None = None, kernel: str | None = None,
               initrd: str | None = None, append: str | None = None) -> Machine:
        """Change what is asked; everything is checked before anything changes.

        Boot settings (``boot_order`` like ``disk,dvd,net``; direct kernel
        boot: ``kernel``, ``initrd``, ``append``, ``kernel="none"`` forgets
        them) change only while powered off (netstore.registry.boot).

        Hardware (cpus, cpu_hotplug, memory, memory_range, page fusion,
        chipset) changes only while powered off; the balloon only while
        running; CPUs plug and unplug (by index) only with hot-plug on, and
        vCPU 0 never unplugs.  Enabling hot-plug plugs every vCPU up to
        ``cpus`` (then the maximum); lowering ``cpus`` unplugs those above.

        Warns:
            MachineWarning: more vCPUs than the host has cores.

        Raises:
            MachineStateError: the change needs the other power state.
            MachineRuleError: a limit or rule (the message names it).
        """
        warning = None
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            off_only = [(cpus, "its CPU count"), (cpu_hotplug, "CPU hot-plug"),
                        (memory_mb, "its memory"), (memory_range, "its memory range"),
                        (page_fusion, "page fusion"), (chipset, "its chipset")]
            if vm.running:
                for value, what in off_only:
                    if value is not None:
                        raise MachineStateError(
                            f"{name} is running; {what} can be changed only while it is "
                            f"powered off (netstore vm stop {name})"
                        )
            new_cpus = vm.cpus if cpus is None else cpus
            if cpus is not None:
                warning = check_cpus(name, cpus)
            hotplug = vm.cpu_hotplug if cpu_hotplug is None else cpu_hotplug
            plugged = set(vm.plugged_cpus)
            if hotplug and not vm.cpu_hotplug:
                plugged = set(range(new_cpus))
            elif not hotplug:
                plugged = set()
            elif cpus is not None:
                plugged = {c for c in plugged if c < new_cpus} | {0}
            for index, plug in ((plug_cpu, True), (unplug_cpu, False)):
                if index is None:
                    continue
                verb = "plugged" if plug else "unplugged"
                if not hotplug:
                    raise MachineRuleError(
                        f"CPU hot-plug of {name} is off; a vCPU is {verb} only with it on "
                        f"(netstore vm modify {name} --cpuhotplug on, while powered off)"
                    )
                if not 0 <= index < new_cpus:
                    raise MachineRuleError(
                        f"vCPU {index} is beyond {name}'s maximum of {new_cpus} "
                        f"(indexes 0..{new_cpus - 1}; raise --cpus while powered off)"
                    )
                if not plug and index == 0:
                    raise MachineRuleError(f"vCPU 0 of {name} can never be unplugged")
                if plug and index in plugged:
                    raise MachineRuleError(f"vCPU {index} of {name} is plugged already")
                if not plug and index not in plugged:
                    raise MachineRuleError(f"vCPU {index} of {name} is not plugged")
                (plugged.add if plug else plugged.discard)(index)
            if cpu_cap is not None and not 1 <= cpu_cap <= 100:
                raise MachineRuleError(
                    f"{name}: execution cap {cpu_cap} % is outside 1..100 %"
                )
            if weight is not None and not 1 <= weight <= MAX_WEIGHT:
                raise MachineRuleError(f"{name}: weight {weight} is outside 1..{MAX_WEIGHT}")
            mem, mem_min = vm.memory_mb, vm.memory_min_mb
            if memory_mb is not None:
                _check_memory(name, memory_mb)
                mem, mem_min = memory_mb, None
            if memory_range is not None:
                lo, hi = memory_range
                _check_memory(name, lo, "minimum memory")
                _check_memory(name, hi, "maximum memory")
                if lo > hi:
                    raise MachineRuleError(
                        f"{name}: memory range {lo}:{hi} MB has its minimum above its maximum"
                    )
                mem, mem_min = hi, lo
            balloon = vm.balloon_mb
            if balloon_mb is not None:
                if not vm.running:
                    raise MachineStateError(
                        f"{name} is powered off; a balloon is set only while the VM runs"
                    )
                if not 0 <= balloon_mb <= mem:
                    raise MachineRuleError(
                        f"{name}: balloon {balloon_mb} MB is more than its memory ({mem} MB); "
                        "a balloon never exceeds the VM's memory"
                    )
                balloon = balloon_mb
            if chipset is not None and chipset.lower() not in CHIPSETS:
                raise MachineRuleError(
                    f"{name}: unknown chipset {chipset!r} (one of {', '.join(CHIPSETS)})"
                )
            conn.execute(
                "UPDATE machines SET cpus = ?, cpu_hotplug = ?, plugged_cpus = ?, cpu_cap = ?, "
                "weight = ?, memory_mb = ?, memory_min_mb = ?, balloon_mb = ?, page_fusion = ?, "
                "ostype = ?, chipset = ? WHERE id = ?",
                (new_cpus, int(hotplug), cpu_text(plugged),
                 vm.cpu_cap if cpu_cap is None else cpu_cap,
                 vm.weight if weight is None else weight, mem, mem_min, balloon,
                 int(vm.page_fusion if page_fusion is None else page_fusion),
                 vm.ostype if ostype is None else ostype,
                 vm.chipset if chipset is None else chipset.lower(), vm.id),
            )
            apply_boot(conn, vm.name, vm.running, vm.boot, order=boot_order, kernel=kernel,
                       initrd=initrd, append=append)
            vm = get_machine(conn, name)
        if warning:
            warnings.warn(MachineWarning(warning), stacklevel=2)
        return vm

    # -- storage (attachments.py) --------------------------------------------

    def add_controller(self, name: str, controller: str, bus: str,
                       chipset: str | None = None) -> Controller:
        """Add a storage controller (Attachments.add_controller)."""
        return self._storage.add_controller(name, controller, bus, chipset)

    def remove_controller(self, name: str, controller: str) -> None:
        """Remove a controller that holds no media (Attachments.remove_controller)."""
        self._storage.remove_controller(name, controller)

    def attach(self, name: str, controller: str, port: int, medium: str, *, device: int = 0,
               slot_kind: str | None = None) -> Attachment:
        """Attach a registered medium at controller/port/device (Attachments.attach)."""
        return self._storage.attach(name, controller, port, medium, device=device,
                                    slot_kind=slot_kind)

    def detach(self, name: str, controller: str, port: int, *, device: int = 0) -> Attachment:
        """Take the medium out of the slot (Attachments.detach)."""
        return self._storage.detach(name, controller, port, device=device)

    # -- NICs (nics.py) --------------------------------------------------------

    def set_nic(self, name: str, slot: int, switch: str | None = None, *,
                mac: str | None = None, vlan: int | None = None,
                transport: str | None = None, port_security: bool | None = None,
                impair_in: ImpairmentChange = None,
                impair_out: ImpairmentChange = None, model: str | None = None) -> Nic:
        """Add the NIC in `slot`, or change it (Nics.set_nic)."""
        return self._nics.set_nic(name, slot, switch, mac=mac, vlan=vlan, transport=transport,
                                  port_security=port_security, impair_in=impair_in,
                                  impair_out=impair_out, model=model)

    def remove_nic(self, name: str, slot: int) -> Nic:
        """Remove the NIC in `slot` (Nics.remove_nic)."""
        return self._nics.remove_nic(name, slot)

    # -- power -------------------------------------------------------------

    def start(self, name: str, run_type: str = "external", *, host: str | None = None) -> Machine:
        """Power the VM on: apply the media rules of semantics.md section 1 to
        every attached disk, reset the VM's layer of each immutable disk with
        autoreset (to its current snapshot's state; reg.layer_at_power_on),
        make its layer of each multiattach disk, and mark it running (the
        registry generation moves; a daemon polling it opens the target).
        ``run_type`` says who runs its QEMU: "headless" (the daemon) or
        "external" (the user); ``host`` the host that runs it (a shared registry).
        Every check and the claim of its disks happen in this one transaction,
        which holds the registry's write lock: of two hosts starting a VM at
        once, one wins and the other is refused naming it.

        Raises:
            MachineStateError: it runs already (on the host named).
            MediumBusyError: a normal or writethrough disk is attached to another
                running VM (named).
            MachineRuleError, MediumRuleError: a disk's file is missing, or an
                immutable/multiattach disk is not raw or qcow2.
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if vm.running:
                on = f" on {vm.host}" if vm.host else ""
                raise MachineStateError(f"{name} is running already{on}")
            atts = attachments_of(conn, vm)
            media = [get_medium(conn, a.medium) for a in atts]
            for m in media:
                check_can_run(conn, m, vm)
            claim_writes(conn, vm.id, vm.name, [(m.id, m.name, m.type) for m in media])
            for m in media:
                if m.type in LAYERED_TYPES:
                    power_on_layer(conn, self.reg.diffs_dir, m, vm.name)
            if run_type not in RUN_TYPES:
                raise ValueError(f"run type {run_type!r} is not one of {', '.join(RUN_TYPES)}")
            # only the daemon's QEMU can resume a saved state; another start boots
            saved = vm.saved_state if run_type == "headless" else None
            conn.execute("UPDATE machines SET power = 'running', started = ?, balloon_mb = 0, "
                         "run_type = ?, paused = 0, aborted = NULL, saved_state = ?, host = ? "
                         "WHERE id = ?", (now(), run_type, saved, host, vm.id))
            return get_machine(conn, name)

    def stop(self, name: str, *, aborted: str | None = None,
             host: str | None = None) -> Machine:
        """Power the VM off (its balloon goes with it).  The daemon, seeing the
        generation move, closes its sessions.  ``aborted`` says why its QEMU
        ended without the guest powering off (`vm list` shows it aborted).
        With ``host``, only a VM that host runs is stopped (a host fenced
        meanwhile no longer owns it, and must not write its state).

        Raises:
            MachineStateError: it is powered off already, or runs on another host.
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if not vm.running:
                raise MachineStateError(f"{name} is powered off already")
            if host is not None and vm.host not in (None, host):
                raise MachineStateError(f"{name} runs on {vm.host}, not on {host}")
            power_off(conn, vm.id, aborted)
            return get_machine(conn, name)

    def discard_saved_state(self, name: str) -> Machine:
        """The saved state was resumed (or could not be): the next start boots."""
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            conn.execute("UPDATE machines SET saved_state = NULL WHERE id = ?", (vm.id,))
            return get_machine(conn, name)

    def set_startup(self, name: str, *, group: str | None = None, order: int | None = None,
                    delay_s: int | None = None) -> Machine:
        """The VM's group, place in its start order and delay (netstore.registry.startup);
        ``group=""`` takes it out of its group."""
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            set_startup(conn, vm.id, vm.name, group=group, order=order, delay_s=delay_s)
            return get_machine(conn, name)

    def set_product(self, name: str, product: dict[str, Any] | None) -> Machine:
        """Keep what the appliance is (an OVF ProductSection's plain values; None forgets it)."""
        text = json.dumps(product, sort_keys=True) if product else None
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            conn.execute("UPDATE machines SET product = ? WHERE id = ?", (text, vm.id))
            return get_machine(conn, name)

    def group(self, group: str) -> list[tuple[str, int, int]]:
        """The VMs of ``group`` in start order: (name, order, delay in s)."""
        with self.reg.reading() as conn:
            return group_members(conn, group)

    def set_paused(self, name: str, paused: bool) -> Machine:
        """Record that the running VM's QEMU is paused (or runs again).

        Raises:
            MachineStateError: it is powered off.
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if not vm.running:
                raise MachineStateError(f"{name} is powered off")
            conn.execute("UPDATE machines SET paused = ? WHERE id = ?", (int(paused), vm.id))
            return get_machine(conn, name)

    def remove(self, name: str) -> Machine:
        """Unregister a powered-off VM without snapshots: its attachments and
        NICs go, and its own layers on immutable/multiattach media are deleted
        (the media stay registered).

        Raises:
            MachineStateError: it runs.
            MachineRuleError: it has snapshots (delete them; their data merges).
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if vm.running:
                raise MachineStateError(
                    f"{name} is running; a VM is removed only while powered off "
                    f"(netstore vm stop {name})"
                )
            snaps = [r[0] for r in conn.execute(
                "SELECT name FROM snapshots WHERE machine_id = ? ORDER BY id", (vm.id,))]
            if snaps:
                raise MachineRuleError(
                    f"{name} has snapshots ({', '.join(snaps)}); delete them first "
                    f"(netstore vm snapshot {name} delete SNAP keeps the data)"
                )
            own = conn.execute(
                "SELECT id, location FROM media WHERE owner = ? ORDER BY id DESC", (vm.name,)
            ).fetchall()
            conn.execute("DELETE FROM machines WHERE id = ?", (vm.id,))
            for mid, _ in own:
                conn.execute("DELETE FROM media WHERE id = ?", (mid,))
        for _, location in own:
            remove_file(location)
        return vm

    # -- snapshots (snapshots.py) --------------------------------------------

    # -- snapshots (snapshots.py) --------------------------------------------

    def take_snapshot(self, name: str, snapshot: str, description: str = "", *,
                      live: bool = False, state_file: str | None = None) -> Snapshot:
        """Snapshots.take."""
        return self._snapshots.take(name, snapshot, description, live=live,
                                    state_file=state_file)

    def restore_snapshot(self, name: str, snapshot: str) -> Snapshot:
        """Snapshots.restore."""
        return self._snapshots.restore(name, snapshot)

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Snapshots.delete."""
        return self._snapshots.delete(name, snapshot)


# Names importers take from here; each is defined in the module named above.
__all__ = [
    "RUN_TYPES",
    "Machines",
    "Machine",
    "Controller",
    "Attachment",
    "Nic",
    "Bus",
    "BUSES",
    "CHIPSETS",
    "TRANSPORTS",
    "NIC_MODELS",
    "MAX_CPUS",
    "NIC_SLOTS",
    "NIC_PORT_RANGE",
    "NIC_PORTS_ENV",
    "EXCLUSIVE_TYPES",
    "host_cores",
    "host_memory_mb",
    "host_report",
    "nic_port_range",
    "normal_mac",
    "check_cpus",
    "check_machine_name",
]
