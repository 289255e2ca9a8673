# Storage of a VM: controllers on a bus (the bus limits of semantics.md
# section 2, one table: BUSES), media attached at controller:port:device,
# and the media rule `vm start` and an attach to a running VM apply (the
# "several VMs" column of semantics.md section 1: normal and writethrough
# disks run in one VM at a time).  Attaching to a running VM makes its layer
# of an immutable or multiattach disk; detaching from a powered-off one
# discards it.
"""Storage controllers and attachments of VMs."""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from netstore.disk.media import EXCLUSIVE_TYPES, LAYERED_TYPES
from netstore.registry.db import remove_file
from netstore.registry.errors import MachineRuleError, MediumBusyError, NotFoundError
from netstore.registry.hosts import claim_writes
from netstore.registry.layers import Layers, drop_machine_layer, machine_layer
from netstore.registry.media import Medium, get_medium
from netstore.registry.vm import Machine, get_machine


@dataclass(frozen=True, slots=True)
class Bus:
    """A storage bus: how many ports and devices per port, its chipsets
    (the first is the default) and which kinds of media its slots take."""

    label: str
    ports: int
    devices: int
    chipsets: tuple[str, ...]
    kinds: tuple[str, ...]

    def limit(self) -> str:
        if self.devices > 1:
            return (f"{self.label} has {self.ports} ports x {self.devices} devices "
                    f"({self.ports * self.devices} devices): ports 0..{self.ports - 1}, "
                    f"devices 0..{self.devices - 1}")
        return f"{self.label} has {self.ports} ports (0..{self.ports - 1}), device 0"


# One place for the bus limits of semantics.md section 2 (VirtualBox's).
BUSES: dict[str, Bus] = {
    "ide": Bus("IDE", 2, 2, ("PIIX4", "PIIX3", "ICH6"), ("hdd", "dvd")),
    "sata": Bus("SATA", 30, 1, ("AHCI",), ("hdd", "dvd")),
    "scsi": Bus("SCSI", 16, 1, ("LsiLogic", "BusLogic"), ("hdd", "dvd")),
    "sas": Bus("SAS", 255, 1, ("LsiLogicSas",), ("hdd", "dvd")),
    "usb": Bus("USB", 8, 1, ("USB",), ("hdd", "dvd", "floppy")),
    "nvme": Bus("NVMe", 255, 1, ("NVMe",), ("hdd",)),
    "virtio-scsi": Bus("virtio-scsi", 256, 1, ("VirtIO",), ("hdd", "dvd")),
}
# Disk types that run in one VM at a time (semantics.md section 1, "several VMs").


@dataclass(frozen=True, slots=True)
class Controller:
    name: str
    bus: str
    chipset: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A medium in a slot: controller (its bus), port, device; ``medium`` is the
    registered (base) medium's name, ``type`` its disk type."""

    controller: str
    bus: str
    port: int
    device: int
    slot_kind: str
    medium: str
    medium_uuid: str
    type: str
    location: str

    @property
    def slot(self) -> str:
        return f"{self.controller}:{self.port}:{self.device}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attachments_of(conn: sqlite3.Connection, vm: Machine) -> list[Attachment]:
    """The VM's attached media in controller (as added), port, device order."""
    rows = conn.execute(
        """
        SELECT c.name, c.bus, a.port, a.device, a.slot_kind, m.name, m.uuid, m.type,
               m.location
        FROM attachments a JOIN controllers c ON c.id = a.controller_id
        JOIN media m ON m.id = a.medium_id
        WHERE a.machine_id = ? ORDER BY c.id, a.port, a.device
        """,
        (vm.id,),
    ).fetchall()
    return [Attachment(*r) for r in rows]


def controller_id(conn: sqlite3.Connection, vm: Machine, controller: str) -> int:
    """The row id of the VM's controller of that name.  Raises NotFoundError."""
    row = conn.execute("SELECT id FROM controllers WHERE machine_id = ? AND name = ?",
                       (vm.id, controller)).fetchone()
    if row is None:
        raise NotFoundError(
            f"{vm.name} has no controller {controller} (add one: netstore vm controller "
            f"{vm.name} --add {controller} --bus sata)"
        )
    return row[0]


def running_holders(conn: sqlite3.Connection, medium: Medium, vm: Machine) -> list[str]:
    """The other running VMs the medium is attached to, by name."""
    rows = conn.execute(
        "SELECT vm.name FROM attachments a JOIN machines vm ON vm.id = a.machine_id "
        "WHERE a.medium_id = ? AND vm.power = 'running' AND vm.id != ? ORDER BY vm.name",
        (medium.id, vm.id)).fetchall()
    return [r[0] for r in rows]


def check_can_run(conn: sqlite3.Connection, medium: Medium, vm: Machine) -> None:
    """Refuse to run `medium` in `vm`: its file is missing, or another running VM holds it."""
    # semantics.md section 1, the "several VMs" column
    if not os.path.exists(medium.location):
        raise MachineRuleError(
            f"disk {medium.name} of {vm.name} is missing its file {medium.location}"
        )
    if medium.type in EXCLUSIVE_TYPES:
        holders = running_holders(conn, medium, vm)
        if holders:
            raise MediumBusyError(
                f"disk {medium.name} is attached to running VM {holders[0]}; "
                f"{medium.type} disks run in one VM at a time"
            )


class Attachments:
    """The controllers and attached media of the registry's VMs (through
    ``reg.machines``).  Each method raising is a refusal that changed nothing."""

    def __init__(self, reg: Layers) -> None:
        self.reg = reg

    def controllers(self, name: str) -> list[Controller]:
        """The VM's storage controllers in the order they were added."""
        with self.reg.reading() as conn:
            vm = get_machine(conn, name)
            rows = conn.execute("SELECT name, bus, chipset FROM controllers WHERE machine_id = ? "
                                "ORDER BY id", (vm.id,)).fetchall()
        return [Controller(*r) for r in rows]

    def attachments(self, name: str) -> list[Attachment]:
        """The VM's attached media in controller (as added), port, device order:
        the order of its LUNs."""
        with self.reg.reading() as conn:
            return attachments_of(conn, get_machine(conn, name))

    def add_controller(self, name: str, controller: str, bus: str,
                       chipset: str | None = None) -> Controller:
        """Add a storage controller named `controller` on `bus`; the chipset
        defaults to the bus's first (IDE: PIIX4, SCSI: LsiLogic).

        Raises:
            MachineRuleError: an unknown bus, a chipset the bus has not, a taken name.
        """
        b = BUSES.get(bus)
        if b is None:
            raise MachineRuleError(f"unknown bus {bus!r} (one of {', '.join(BUSES)})")
        if chipset is None:
            chip = b.chipsets[0]
        else:
            found = [c for c in b.chipsets if c.lower() == chipset.lower()]
            if not found:
                raise MachineRuleError(
                    f"{b.label} controllers have no chipset {chipset!r} "
                    f"(one of {', '.join(b.chipsets)})"
                )
            chip = found[0]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", controller):
            raise MachineRuleError(
                f"{controller!r} is not a controller name (letters, digits, '.', '_', '-')"
            )
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if conn.execute("SELECT 1 FROM controllers WHERE machine_id = ? AND name = ?",
                            (vm.id, controller)).fetchone():
                raise MachineRuleError(f"{name} has a controller named {controller} already")
            conn.execute("INSERT INTO controllers (machine_id, name, bus, chipset) "
                         "VALUES (?, ?, ?, ?)", (vm.id, controller, bus, chip))
        return Controller(controller, bus, chip)

    def remove_controller(self, name: str, controller: str) -> None:
        """Remove a controller that holds no media.

        Raises:
            MachineRuleError: it holds media (named), or the VM runs.
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            cid = controller_id(conn, vm, controller)
            held = [a for a in attachments_of(conn, vm) if a.controller == controller]
            if held:
                raise MachineRuleError(
                    f"controller {controller} of {name} holds disk {held[0].medium}; "
                    "detach its disks first"
                )
            conn.execute("DELETE FROM controllers WHERE id = ?", (cid,))

    def attach(self, name: str, controller: str, port: int, medium: str, *, device: int = 0,
               slot_kind: str | None = None) -> Attachment:
        """Attach a registered medium at controller/port/device.

        The slot takes the medium's kind unless `slot_kind` says otherwise (a
        dvd goes on a dvd slot, an hdd on an hdd slot).  Attaching to a
        running VM applies the start rules to this disk (and makes its layer).

        Raises:
            NotFoundError: no such VM, controller or medium.
            MachineRuleError: a slot beyond the bus limit (the limit named), a
                taken slot, a kind the slot or bus does not take, a
                differencing layer, a disk with another VM's snapshots.
            MediumBusyError: the VM runs and another running VM holds the disk.
        """
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            cid = controller_id(conn, vm, controller)
            bus = conn.execute("SELECT bus FROM controllers WHERE id = ?", (cid,)).fetchone()[0]
            b = BUSES[bus]
            if not 0 <= port < b.ports or not 0 <= device < b.devices:
                raise MachineRuleError(
                    f"{controller} port {port} device {device} is beyond the bus limit: "
                    f"{b.limit()}"
                )
            m = get_medium(conn, medium)
            if m.is_layer:
                root = get_medium(conn, m.parent_id)  # type: ignore[arg-type]
                raise MachineRuleError(
                    f"{m.name} is a differencing layer of {root.name}; attach the medium itself"
                )
            kind = slot_kind or m.kind
            if kind != m.kind:
                raise MachineRuleError(
                    f"disk {m.name} is a {m.kind}; a {m.kind} goes on a {m.kind} slot, "
                    f"not a {kind} slot"
                )
            if kind not in b.kinds:
                raise MachineRuleError(
                    f"{b.label} controllers take {', '.join(b.kinds)} media; {m.name} is a {kind}"
                )
            row = conn.execute(
                "SELECT m.name FROM attachments a JOIN media m ON m.id = a.medium_id "
                "WHERE a.controller_id = ? AND a.port = ? AND a.device = ?",
                (cid, port, device)).fetchone()
            if row:
                raise MachineRuleError(
                    f"{controller} port {port} device {device} of {name} holds disk {row[0]} "
                    "already; detach it first"
                )
            row = conn.execute(
                "SELECT c.name, a.port, a.device FROM attachments a JOIN controllers c "
                "ON c.id = a.controller_id WHERE a.machine_id = ? AND a.medium_id = ?",
                (vm.id, m.id)).fetchone()
            if row:
                raise MachineRuleError(
                    f"disk {m.name} is attached to {name} already at {row[0]}:{row[1]}:{row[2]}"
                )
            row = conn.execute(
                "SELECT vm.name, s.name FROM snapshot_media sm JOIN snapshots s "
                "ON s.id = sm.snapshot_id JOIN machines vm ON vm.id = s.machine_id "
                "WHERE sm.medium_id = ? AND vm.id != ? LIMIT 1", (m.id, vm.id)).fetchone()
            if row:
                raise MachineRuleError(
                    f"disk {m.name} is in snapshot {row[1]} of VM {row[0]}; a disk with "
                    "snapshots belongs to that VM alone"
                )
            if vm.running:
                check_can_run(conn, m, vm)
                claim_writes(conn, vm.id, vm.name, [(m.id, m.name, m.type)])
                if m.type in LAYERED_TYPES:
                    machine_layer(conn, self.reg.diffs_dir, m, vm.name)
            conn.execute(
                "INSERT INTO attachments (machine_id, controller_id, port, device, slot_kind, "
                "medium_id) VALUES (?, ?, ?, ?, ?, ?)", (vm.id, cid, port, device, kind, m.id))
            return Attachment(controller, bus, port, device, kind, m.name, m.uuid, m.type,
                              m.location)

    def detach(self, name: str, controller: str, port: int, *, device: int = 0) -> Attachment:
        """Take the medium out of the slot.  A powered-off VM's own layer on an
        immutable or multiattach medium is discarded with it (unless a
        snapshot of the VM keeps it).

        Raises:
            NotFoundError: no VM, controller, or nothing in that slot.
        """
        gone: Medium | None = None
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            cid = controller_id(conn, vm, controller)
            row = conn.execute(
                "SELECT id, medium_id, slot_kind FROM attachments WHERE controller_id = ? "
                "AND port = ? AND device = ?", (cid, port, device)).fetchone()
            if row is None:
                raise NotFoundError(f"{controller} port {port} device {device} of {name} is empty")
            m = get_medium(conn, row[1])
            bus = conn.execute("SELECT bus FROM controllers WHERE id = ?", (cid,)).fetchone()[0]
            conn.execute("DELETE FROM attachments WHERE id = ?", (row[0],))
            conn.execute("DELETE FROM medium_writers WHERE medium_id = ? AND machine_id = ?",
                         (m.id, vm.id))
            in_snapshot = conn.execute(
                "SELECT 1 FROM snapshot_media sm JOIN snapshots s ON s.id = sm.snapshot_id "
                "WHERE s.machine_id = ? AND sm.medium_id = ?", (vm.id, m.id)).fetchone()
            if m.type in LAYERED_TYPES and not vm.running and not in_snapshot:
                gone = drop_machine_layer(conn, m, vm.name)
        if gone is not None:
            remove_file(gone.location)
        return Attachment(controller, bus, port, device, row[2], m.name, m.uuid, m.type,
                          m.location)

    # -- NICs --------------------------------------------------------------


__all__ = [
    "Attachments",
    "Attachment",
    "Controller",
    "Bus",
    "BUSES",
    "EXCLUSIVE_TYPES",
    "attachments_of",
    "check_can_run",
    "controller_id",
]
