# Machines (VMs) in the registry: their virtual hardware (CPUs, memory,
# storage controllers and attachments, NICs), power state, and the rules of
# semantics.md section 2 with the media rules of section 1 that `vm start`
# applies.  Every change is one BEGIN IMMEDIATE transaction of the Registry
# (store.py), so two CLIs at once lose nothing; a change bumps the registry
# generation, which the daemon polls.  Snapshots are in snapshots.py.
"""The machines of the registry: create, modify, attach, NICs, start, stop, remove."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import uuid as uuidlib
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from netstore.disk.media import LAYERED_TYPES
from netstore.registry.errors import (
    MachineRuleError,
    MachineStateError,
    MachineWarning,
    MediumBusyError,
    NameTakenError,
    NotFoundError,
)
from netstore.registry.store import USER_SOURCES, Medium, MediumUser, _now, _remove_file

if TYPE_CHECKING:
    from netstore.registry.store import Registry

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
NIC_SLOTS = 8  # VirtualBox's 8 network adapters
TRANSPORTS = ("udp", "unixgram", "stream", "tap", "vde")
# IP ports handed to udp and stream NICs; NETSTORE_NIC_PORTS=LO-HI overrides.
NIC_PORT_RANGE = (40000, 49999)
NIC_PORTS_ENV = "NETSTORE_NIC_PORTS"
# QEMU's own OUI; a generated MAC is 52:54:00 and three random octets.
MAC_PREFIX = "52:54:00"
MAC_TRIES = 64
_MAC_RE = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")


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
EXCLUSIVE_TYPES = ("normal", "writethrough")


@dataclass(frozen=True, slots=True)
class Machine:
    """One VM as registered.  ``memory_mb`` is the fixed size, or the top of
    the range when ``memory_min_mb`` is set (dynamic memory).  With CPU
    hot-plug on, ``cpus`` is the maximum and ``plugged_cpus`` the indexes
    plugged; ``online_cpus`` is what runs either way."""

    id: int
    uuid: str
    name: str
    ostype: str
    cpus: int
    cpu_hotplug: bool
    plugged_cpus: tuple[int, ...]
    cpu_cap: int
    weight: int
    memory_mb: int
    memory_min_mb: int | None
    balloon_mb: int
    page_fusion: bool
    chipset: str
    power: str
    started: str | None
    current_snapshot: str | None
    created: str

    @property
    def online_cpus(self) -> int:
        return len(self.plugged_cpus) if self.cpu_hotplug else self.cpus

    @property
    def running(self) -> bool:
        return self.power == "running"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plugged_cpus"] = list(self.plugged_cpus)
        d["online_cpus"] = self.online_cpus
        return d


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


@dataclass(frozen=True, slots=True)
class Nic:
    """A NIC and where it meets its switch.  ``switch_addr`` is the switch
    port's end (udp/stream: host:port it listens on; unixgram: its socket
    path; tap: the device; vde: the switch's vde directory); ``vm_addr`` the
    VM's end (udp: host:port the VM binds; unixgram: its socket path; '' when
    the VM connects to switch_addr)."""

    slot: int
    mac: str
    switch: str
    vlan: int
    transport: str
    switch_addr: str
    vm_addr: str
    port_security: bool = False  # the switch port admits only this NIC's MAC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MCOLS = ("id, uuid, name, ostype, cpus, cpu_hotplug, plugged_cpus, cpu_cap, weight, memory_mb, "
          "memory_min_mb, balloon_mb, page_fusion, chipset, power, started, current_snapshot_id, "
          "created")


def host_cores() -> int:
    """The host's CPU count (os.cpu_count())."""
    return os.cpu_count() or 1


def host_memory_mb() -> int | None:
    """MemTotal of /proc/meminfo in MiB, None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def nic_port_range() -> tuple[int, int]:
    """The range NIC ports are allocated from: NETSTORE_NIC_PORTS=LO-HI, else NIC_PORT_RANGE."""
    text = os.environ.get(NIC_PORTS_ENV)
    if not text:
        return NIC_PORT_RANGE
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
        raise MachineRuleError(
            f"{NIC_PORTS_ENV}={text!r}: expected LO-HI, two ports 1..65535 (40000-49999)"
        )
    return int(m.group(1)), int(m.group(2))


def check_machine_name(name: str) -> str:
    if not MACHINE_NAME_RE.fullmatch(name):
        raise MachineRuleError(
            f"{name!r} is not a VM name (1-63 lowercase letters, digits, '.', '-', starting "
            "with a letter or digit; it becomes the iSCSI target name <base-iqn>:vm.<name>)"
        )
    return name


def normal_mac(text: str) -> str:
    """`text` as a NIC's MAC (lowercase, ':'-separated).

    Raises:
        MachineRuleError: malformed, multicast (first octet odd) or all zeros.
    """
    t = text.strip().lower()
    if not _MAC_RE.fullmatch(t):
        raise MachineRuleError(f"MAC {text!r} is malformed (six hex octets: 52:54:00:12:34:56)")
    t = t.replace("-", ":")
    if int(t[:2], 16) & 1:
        raise MachineRuleError(
            f"MAC {t} is a multicast address (first octet odd); a NIC needs a unicast MAC"
        )
    if t == "00:00:00:00:00:00":
        raise MachineRuleError("MAC 00:00:00:00:00:00 is not a NIC's address")
    return t


def check_cpus(name: str, cpus: int, cores: int | None = None) -> str | None:
    """Refuse a vCPU count; return the warning for one above the host's cores.

    Raises:
        MachineRuleError: below 1, above MAX_CPUS, or above twice the host's cores.
    """
    cores = cores or host_cores()
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


def _cpu_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _cpu_text(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(set(cpus)))


def _attachment_users(conn: sqlite3.Connection, medium: Medium) -> list[MediumUser]:
    """Machines a medium (or the base under a layer) is attached to, or in a
    snapshot of: they use it (USER_SOURCES hook of store.py)."""
    root = conn.execute(
        """
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM media WHERE id = ?
            UNION SELECT m.id, m.parent_id FROM media m JOIN up ON m.id = up.parent_id
        )
        SELECT id FROM up WHERE parent_id IS NULL
        """,
        (medium.id,),
    ).fetchone()
    if root is None:
        return []
    via = "" if root[0] == medium.id else "base "
    rows = conn.execute(
        """
        SELECT vm.name, c.name, a.port, a.device FROM attachments a
        JOIN machines vm ON vm.id = a.machine_id JOIN controllers c ON c.id = a.controller_id
        WHERE a.medium_id = ? ORDER BY vm.name
        """,
        (root[0],),
    ).fetchall()
    users = [MediumUser(vm, f"{via}attached at {c}:{p}:{d}") for vm, c, p, d in rows]
    rows = conn.execute(
        """
        SELECT vm.name, s.name FROM snapshot_media sm JOIN snapshots s ON s.id = sm.snapshot_id
        JOIN machines vm ON vm.id = s.machine_id WHERE sm.medium_id = ? ORDER BY vm.name, s.id
        """,
        (root[0],),
    ).fetchall()
    users += [MediumUser(vm, f"{via}in snapshot {s}") for vm, s in rows]
    return users


if _attachment_users not in USER_SOURCES:
    USER_SOURCES.append(_attachment_users)


class Machines:
    """The VMs of one registry (``reg.machines``).  Methods take a VM's name;
    each one raising is a refusal that changed nothing."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    # -- reading -----------------------------------------------------------

    @staticmethod
    def _machine(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Machine:
        snap = None
        if row[16] is not None:
            r = conn.execute("SELECT name FROM snapshots WHERE id = ?", (row[16],)).fetchone()
            snap = r[0] if r else None
        return Machine(row[0], row[1], row[2], row[3], row[4], bool(row[5]), _cpu_list(row[6]),
                       row[7], row[8], row[9], row[10], row[11], bool(row[12]), row[13],
                       row[14], row[15], snap, row[17])

    def _get(self, conn: sqlite3.Connection, name: str) -> Machine:
        row = conn.execute(f"SELECT {_MCOLS} FROM machines WHERE name = ? OR uuid = ?",
                           (name, name.lower())).fetchone()
        if row is None:
            raise NotFoundError(f"no VM {name!r} is registered (see: netstore vm list)")
        return self._machine(conn, row)

    def get(self, name: str) -> Machine:
        """The VM of that name or UUID.  Raises NotFoundError."""
        with self.reg._snapshot() as conn:
            return self._get(conn, name)

    def list(self) -> list[Machine]:
        """Every VM, by name."""
        with self.reg._snapshot() as conn:
            rows = conn.execute(f"SELECT {_MCOLS} FROM machines ORDER BY name").fetchall()
            return [self._machine(conn, r) for r in rows]

    def controllers(self, name: str) -> list[Controller]:
        """The VM's storage controllers in the order they were added."""
        with self.reg._snapshot() as conn:
            vm = self._get(conn, name)
            rows = conn.execute("SELECT name, bus, chipset FROM controllers WHERE machine_id = ? "
                                "ORDER BY id", (vm.id,)).fetchall()
        return [Controller(*r) for r in rows]

    def _attachments(self, conn: sqlite3.Connection, vm: Machine) -> list[Attachment]:
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

    def attachments(self, name: str) -> list[Attachment]:
        """The VM's attached media in controller (as added), port, device order:
        the order of its LUNs."""
        with self.reg._snapshot() as conn:
            return self._attachments(conn, self._get(conn, name))

    def nics(self, name: str) -> list[Nic]:
        """The VM's NICs by slot."""
        with self.reg._snapshot() as conn:
            vm = self._get(conn, name)
            rows = conn.execute(
                "SELECT slot, mac, switch, vlan, transport, switch_addr, vm_addr, "
                "port_security FROM nics "
                "WHERE machine_id = ? ORDER BY slot", (vm.id,)).fetchall()
        return [Nic(*r[:7], bool(r[7])) for r in rows]

    def info(self, name: str) -> dict[str, Any]:
        """Everything about the VM as plain data (what `vm info --json` prints)."""
        from netstore.registry.snapshots import Snapshots

        vm = self.get(name)
        d = vm.to_dict()
        d["controllers"] = [c.to_dict() for c in self.controllers(name)]
        d["attachments"] = [a.to_dict() for a in self.attachments(name)]
        d["nics"] = [n.to_dict() for n in self.nics(name)]
        d["snapshots"] = [s.to_dict() for s in Snapshots(self.reg).list(name)]
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
                 DEFAULT_WEIGHT, _now()),
            )
            vm = self._get(conn, name)
        if warning:
            warnings.warn(MachineWarning(warning), stacklevel=2)
        return vm

    def modify(self, name: str, *, cpus: int | None = None, cpu_hotplug: bool | None = None,
               plug_cpu: int | None = None, unplug_cpu: int | None = None,
               cpu_cap: int | None = None, weight: int | None = None,
               memory_mb: int | None = None, memory_range: tuple[int, int] | None = None,
               balloon_mb: int | None = None, page_fusion: bool | None = None,
               ostype: str | None = None, chipset: str | None = None) -> Machine:
        """Change what is asked; everything is checked before anything changes.

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
            vm = self._get(conn, name)
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
                (new_cpus, int(hotplug), _cpu_text(plugged),
                 vm.cpu_cap if cpu_cap is None else cpu_cap,
                 vm.weight if weight is None else weight, mem, mem_min, balloon,
                 int(vm.page_fusion if page_fusion is None else page_fusion),
                 vm.ostype if ostype is None else ostype,
                 vm.chipset if chipset is None else chipset.lower(), vm.id),
            )
            vm = self._get(conn, name)
        if warning:
            warnings.warn(MachineWarning(warning), stacklevel=2)
        return vm

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
            vm = self._get(conn, name)
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
            vm = self._get(conn, name)
            cid = self._controller_id(conn, vm, controller)
            held = [a for a in self._attachments(conn, vm) if a.controller == controller]
            if held:
                raise MachineRuleError(
                    f"controller {controller} of {name} holds disk {held[0].medium}; "
                    "detach its disks first"
                )
            conn.execute("DELETE FROM controllers WHERE id = ?", (cid,))

    def _controller_id(self, conn: sqlite3.Connection, vm: Machine, controller: str) -> int:
        row = conn.execute("SELECT id FROM controllers WHERE machine_id = ? AND name = ?",
                           (vm.id, controller)).fetchone()
        if row is None:
            raise NotFoundError(
                f"{vm.name} has no controller {controller} (add one: netstore vm controller "
                f"{vm.name} --add {controller} --bus sata)"
            )
        return row[0]

    def _running_holders(self, conn: sqlite3.Connection, medium: Medium,
                         vm: Machine) -> list[str]:
        rows = conn.execute(
            "SELECT vm.name FROM attachments a JOIN machines vm ON vm.id = a.machine_id "
            "WHERE a.medium_id = ? AND vm.power = 'running' AND vm.id != ? ORDER BY vm.name",
            (medium.id, vm.id)).fetchall()
        return [r[0] for r in rows]

    def _check_can_run(self, conn: sqlite3.Connection, medium: Medium, vm: Machine) -> None:
        # semantics.md section 1, the "several VMs" column
        if not os.path.exists(medium.location):
            raise MachineRuleError(
                f"disk {medium.name} of {vm.name} is missing its file {medium.location}"
            )
        if medium.type in EXCLUSIVE_TYPES:
            holders = self._running_holders(conn, medium, vm)
            if holders:
                raise MediumBusyError(
                    f"disk {medium.name} is attached to running VM {holders[0]}; "
                    f"{medium.type} disks run in one VM at a time"
                )

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
            vm = self._get(conn, name)
            cid = self._controller_id(conn, vm, controller)
            bus = conn.execute("SELECT bus FROM controllers WHERE id = ?", (cid,)).fetchone()[0]
            b = BUSES[bus]
            if not 0 <= port < b.ports or not 0 <= device < b.devices:
                raise MachineRuleError(
                    f"{controller} port {port} device {device} is beyond the bus limit: "
                    f"{b.limit()}"
                )
            m = self.reg._get(conn, medium)
            if m.is_layer:
                root = self.reg._get(conn, m.parent_id)  # type: ignore[arg-type]
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
                self._check_can_run(conn, m, vm)
                if m.type in LAYERED_TYPES:
                    self.reg._layer_for(conn, m, vm.name)
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
            vm = self._get(conn, name)
            cid = self._controller_id(conn, vm, controller)
            row = conn.execute(
                "SELECT id, medium_id, slot_kind FROM attachments WHERE controller_id = ? "
                "AND port = ? AND device = ?", (cid, port, device)).fetchone()
            if row is None:
                raise NotFoundError(f"{controller} port {port} device {device} of {name} is empty")
            m = self.reg._get(conn, row[1])
            bus = conn.execute("SELECT bus FROM controllers WHERE id = ?", (cid,)).fetchone()[0]
            conn.execute("DELETE FROM attachments WHERE id = ?", (row[0],))
            in_snapshot = conn.execute(
                "SELECT 1 FROM snapshot_media sm JOIN snapshots s ON s.id = sm.snapshot_id "
                "WHERE s.machine_id = ? AND sm.medium_id = ?", (vm.id, m.id)).fetchone()
            if m.type in LAYERED_TYPES and not vm.running and not in_snapshot:
                gone = self.reg._discard_layer(conn, m, vm.name)
        if gone is not None:
            _remove_file(gone.location)
        return Attachment(controller, bus, port, device, row[2], m.name, m.uuid, m.type,
                          m.location)

    # -- NICs --------------------------------------------------------------

    def _allocate_port(self, conn: sqlite3.Connection, nic_id: int, vm: Machine,
                       slot: int) -> int:
        lo, hi = nic_port_range()
        used = {r[0] for r in conn.execute(
            "SELECT port FROM nic_ports WHERE port BETWEEN ? AND ?", (lo, hi))}
        for port in range(lo, hi + 1):
            if port not in used:
                conn.execute("INSERT INTO nic_ports (port, nic_id) VALUES (?, ?)", (port, nic_id))
                return port
        raise MachineRuleError(
            f"no free port left in {lo}-{hi} for NIC {slot} of {vm.name}; widen the range "
            f"({NIC_PORTS_ENV}=LO-HI)"
        )

    def _addresses(self, conn: sqlite3.Connection, nic_id: int, vm: Machine, slot: int,
                   switch: str, transport: str) -> tuple[str, str]:
        sock = self.reg.state_dir / "sockets"
        if transport == "udp":
            a = self._allocate_port(conn, nic_id, vm, slot)
            b = self._allocate_port(conn, nic_id, vm, slot)
            return f"127.0.0.1:{a}", f"127.0.0.1:{b}"
        if transport == "stream":
            return f"127.0.0.1:{self._allocate_port(conn, nic_id, vm, slot)}", ""
        if transport == "unixgram":
            return str(sock / f"{vm.id}-{slot}-sw.sock"), str(sock / f"{vm.id}-{slot}-vm.sock")
        if transport == "tap":
            return f"nstap{vm.id}n{slot}", ""  # IFNAMSIZ: 15 characters at most
        return str(self.reg.state_dir / "vde" / switch), ""

    def _new_mac(self, conn: sqlite3.Connection) -> str:
        for _ in range(MAC_TRIES):
            mac = MAC_PREFIX + "".join(f":{random.randrange(256):02x}" for _ in range(3))
            if not conn.execute("SELECT 1 FROM nics WHERE mac = ?", (mac,)).fetchone():
                return mac
        raise MachineRuleError(f"no free MAC found under {MAC_PREFIX} after {MAC_TRIES} tries")

    def set_nic(self, name: str, slot: int, switch: str, *, mac: str | None = None,
                vlan: int | None = None, transport: str | None = None,
                port_security: bool | None = None) -> Nic:
        """Add the NIC in `slot`, or change it (what is not given is kept;
        a new NIC gets a generated MAC, VLAN 1, udp).  Its switch-side and
        VM-side addresses are allocated here (udp, stream: ports from
        nic_port_range(), unique registry-wide).

        Raises:
            MachineRuleError: slot outside 0..7, a malformed/multicast MAC or one
                another NIC has (named), VLAN outside 1..4094, unknown transport.
        """
        if not 0 <= slot < NIC_SLOTS:
            raise MachineRuleError(f"NIC slot {slot} is outside 0..{NIC_SLOTS - 1}")
        if vlan is not None and not 1 <= vlan <= 4094:
            raise MachineRuleError(f"VLAN {vlan} is outside 1..4094")
        if transport is not None and transport not in TRANSPORTS:
            raise MachineRuleError(
                f"unknown transport {transport!r} (one of {', '.join(TRANSPORTS)})"
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", switch):
            raise MachineRuleError(f"{switch!r} is not a switch name")
        mac = normal_mac(mac) if mac is not None else None
        with self.reg.transaction() as conn:
            vm = self._get(conn, name)
            if mac is not None:
                row = conn.execute(
                    "SELECT vm.name, n.slot FROM nics n JOIN machines vm ON vm.id = n.machine_id "
                    "WHERE n.mac = ? AND NOT (n.machine_id = ? AND n.slot = ?)",
                    (mac, vm.id, slot)).fetchone()
                if row:
                    raise MachineRuleError(
                        f"MAC {mac} is taken by NIC {row[1]} of VM {row[0]}; MACs are unique "
                        "across the registry"
                    )
            old = conn.execute("SELECT id, mac, vlan, transport, switch FROM nics "
                               "WHERE machine_id = ? AND slot = ?", (vm.id, slot)).fetchone()
            if old is None:
                transport = transport or "udp"
                cur = conn.execute(
                    "INSERT INTO nics (machine_id, slot, mac, switch, vlan, transport, "
                    "switch_addr, vm_addr) VALUES (?, ?, ?, ?, ?, ?, '', '')",
                    (vm.id, slot, mac or self._new_mac(conn), switch, vlan or 1, transport))
                nic_id = cur.lastrowid
                assert nic_id is not None
                redo = True
            else:
                nic_id = old[0]
                redo = (transport is not None and transport != old[3]) or \
                    (switch != old[4] and (transport or old[3]) == "vde")
                transport = transport or old[3]
                conn.execute("UPDATE nics SET mac = ?, switch = ?, vlan = ?, transport = ? "
                             "WHERE id = ?", (mac or old[1], switch, vlan or old[2], transport,
                                              nic_id))
            if port_security is not None:
                conn.execute("UPDATE nics SET port_security = ? WHERE id = ?",
                             (int(port_security), nic_id))
            if redo:
                conn.execute("DELETE FROM nic_ports WHERE nic_id = ?", (nic_id,))
                sw_addr, vm_addr = self._addresses(conn, nic_id, vm, slot, switch, transport)
                conn.execute("UPDATE nics SET switch_addr = ?, vm_addr = ? WHERE id = ?",
                             (sw_addr, vm_addr, nic_id))
            row = conn.execute(
                "SELECT slot, mac, switch, vlan, transport, switch_addr, vm_addr, "
                "port_security FROM nics "
                "WHERE id = ?", (nic_id,)).fetchone()
        return Nic(*row[:7], bool(row[7]))

    def remove_nic(self, name: str, slot: int) -> Nic:
        """Remove the NIC in `slot` (its ports are freed).  Raises NotFoundError."""
        with self.reg.transaction() as conn:
            vm = self._get(conn, name)
            row = conn.execute(
                "SELECT slot, mac, switch, vlan, transport, switch_addr, vm_addr, id FROM nics "
                "WHERE machine_id = ? AND slot = ?", (vm.id, slot)).fetchone()
            if row is None:
                raise NotFoundError(f"{name} has no NIC in slot {slot}")
            conn.execute("DELETE FROM nics WHERE id = ?", (row[7],))
        return Nic(*row[:7])

    # -- power -------------------------------------------------------------

    def start(self, name: str) -> Machine:
        """Power the VM on: apply the media rules of semantics.md section 1 to
        every attached disk, reset the VM's layer of each immutable disk with
        autoreset (to its current snapshot's state; reg.layer_at_power_on),
        make its layer of each multiattach disk, and mark it running (the
        registry generation moves; a daemon polling it opens the target).

        Raises:
            MachineStateError: it runs already.
            MediumBusyError: a normal or writethrough disk is attached to another
                running VM (named).
            MachineRuleError, MediumRuleError: a disk's file is missing, or an
                immutable/multiattach disk is not raw or qcow2.
        """
        with self.reg.transaction() as conn:
            vm = self._get(conn, name)
            if vm.running:
                raise MachineStateError(f"{name} is running already")
            atts = self._attachments(conn, vm)
            media = [self.reg._get(conn, a.medium) for a in atts]
            for m in media:
                self._check_can_run(conn, m, vm)
            for m in media:
                if m.type in LAYERED_TYPES:
                    self.reg._layer_at_power_on(conn, m, vm.name)
            conn.execute("UPDATE machines SET power = 'running', started = ?, balloon_mb = 0 "
                         "WHERE id = ?", (_now(), vm.id))
            return self._get(conn, name)

    def stop(self, name: str) -> Machine:
        """Power the VM off (its balloon goes with it).  The daemon, seeing the
        generation move, closes its sessions.

        Raises:
            MachineStateError: it is powered off already.
        """
        with self.reg.transaction() as conn:
            vm = self._get(conn, name)
            if not vm.running:
                raise MachineStateError(f"{name} is powered off already")
            conn.execute("UPDATE machines SET power = 'poweroff', started = NULL, "
                         "balloon_mb = 0 WHERE id = ?", (vm.id,))
            return self._get(conn, name)

    def remove(self, name: str) -> Machine:
        """Unregister a powered-off VM without snapshots: its attachments and
        NICs go, and its own layers on immutable/multiattach media are deleted
        (the media stay registered).

        Raises:
            MachineStateError: it runs.
            MachineRuleError: it has snapshots (delete them; their data merges).
        """
        with self.reg.transaction() as conn:
            vm = self._get(conn, name)
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
            _remove_file(location)
        return vm

    # -- snapshots (snapshots.py) --------------------------------------------

    def take_snapshot(self, name: str, snapshot: str, description: str = ""):  # type: ignore[no-untyped-def]
        from netstore.registry.snapshots import Snapshots

        return Snapshots(self.reg).take(name, snapshot, description)

    def restore_snapshot(self, name: str, snapshot: str):  # type: ignore[no-untyped-def]
        from netstore.registry.snapshots import Snapshots

        return Snapshots(self.reg).restore(name, snapshot)

    def delete_snapshot(self, name: str, snapshot: str):  # type: ignore[no-untyped-def]
        from netstore.registry.snapshots import Snapshots

        return Snapshots(self.reg).delete(name, snapshot)


def host_report(reg: Registry) -> dict[str, Any]:
    """vCPUs of running VMs against host cores, memory committed (running
    VMs' memory, the maximum of a range) against host memory, balloons;
    ``warnings`` lists each oversubscription."""
    cores, mem = host_cores(), host_memory_mb()
    running = [m for m in reg.machines.list() if m.running]
    vcpus = sum(m.online_cpus for m in running)
    committed = sum(m.memory_mb for m in running)
    balloons = sum(m.balloon_mb for m in running)
    out: dict[str, Any] = {
        "host_cores": cores,
        "host_memory_mb": mem,
        "running_vms": len(running),
        "vcpus": vcpus,
        "cpu_ratio": round(vcpus / cores, 3),
        "memory_committed_mb": committed,
        "memory_ratio": round(committed / mem, 3) if mem else None,
        "balloons_mb": balloons,
        "memory_after_balloons_mb": committed - balloons,
        "vms": [{"name": m.name, "vcpus": m.online_cpus, "cpu_cap": m.cpu_cap,
                 "weight": m.weight, "memory_mb": m.memory_mb,
                 "memory_min_mb": m.memory_min_mb, "balloon_mb": m.balloon_mb}
                for m in running],
        "warnings": [],
    }
    if vcpus > cores:
        out["warnings"].append(
            f"vCPUs oversubscribed: {vcpus} vCPUs of running VMs on {cores} host cores "
            f"(ratio {vcpus / cores:.2f} > 1)"
        )
    if mem and committed > mem:
        out["warnings"].append(
            f"memory overcommitted: {committed} MB committed to running VMs, host has {mem} MB "
            f"(ratio {committed / mem:.2f} > 1)"
        )
    return out


__all__ = [
    "Machines",
    "Machine",
    "Controller",
    "Attachment",
    "Nic",
    "Bus",
    "BUSES",
    "CHIPSETS",
    "TRANSPORTS",
    "MAX_CPUS",
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
