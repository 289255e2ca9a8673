# The VM record: a Machine as the machines table holds it, and reading one
# (by name or UUID) or all of them inside the caller's transaction.  The
# modules of a VM's parts (attachments, nics, snapshots) and machines.py,
# which changes VMs, look VMs up here.
"""The VM record (Machine) and how it is read from the registry."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from netstore.registry.boot import Boot
from netstore.registry.errors import NotFoundError
from netstore.registry.startup import Startup


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
    boot: Boot = Boot()
    run_type: str | None = None
    paused: bool = False
    aborted: str | None = None
    saved_state: str | None = None  # a restored snapshot's memory: the next start resumes it
    startup: Startup = Startup()
    product_json: str | None = None  # an appliance's ProductSection (see product)
    host: str | None = None  # the host running it, in a shared registry

    @property
    def online_cpus(self) -> int:
        return len(self.plugged_cpus) if self.cpu_hotplug else self.cpus

    @property
    def running(self) -> bool:
        return self.power == "running"

    @property
    def product(self) -> dict[str, Any] | None:
        """What the appliance is: product, vendor, version, URLs, properties."""
        return json.loads(self.product_json) if self.product_json else None

    @property
    def state(self) -> str:
        """What `vm list` shows: running, paused, poweroff, saved (a restored
        snapshot's memory waits for the next start), or aborted (its QEMU
        ended without the guest powering off)."""
        if self.running:
            return "paused" if self.paused else "running"
        if self.saved_state is not None:
            return "saved"
        return "aborted" if self.aborted is not None else "poweroff"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plugged_cpus"] = list(self.plugged_cpus)
        d["boot"]["order"] = list(self.boot.order)
        d["online_cpus"] = self.online_cpus
        d["state"] = self.state
        d["product"] = self.product
        del d["product_json"]
        return d


_MCOLS = ("id, uuid, name, ostype, cpus, cpu_hotplug, plugged_cpus, cpu_cap, weight, memory_mb, "
          "memory_min_mb, balloon_mb, page_fusion, chipset, power, started, current_snapshot_id, "
          "created, boot_order, kernel, initrd, kernel_append, run_type, paused, aborted, saved_state, start_group, start_order, "
          "start_delay_s, product, host")


def cpu_list(text: str) -> tuple[int, ...]:
    """The plugged_cpus column as indexes."""
    return tuple(int(x) for x in text.split(",") if x)


def cpu_text(cpus: Iterable[int]) -> str:
    """Indexes as the plugged_cpus column holds them (sorted, without repeats)."""
    return ",".join(str(c) for c in sorted(set(cpus)))


def machine_from_row(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Machine:
    """A Machine from a row of _MCOLS (its current snapshot's name looked up)."""
    snap = None
    if row[16] is not None:
        r = conn.execute("SELECT name FROM snapshots WHERE id = ?", (row[16],)).fetchone()
        snap = r[0] if r else None
    return Machine(row[0], row[1], row[2], row[3], row[4], bool(row[5]), cpu_list(row[6]),
                   row[7], row[8], row[9], row[10], row[11], bool(row[12]), row[13],
                   row[14], row[15], snap, row[17], Boot.from_columns(*row[18:22]),
                   row[22], bool(row[23]), row[24], row[25], Startup(*row[26:29]), row[29],
                   row[30])


def get_machine(conn: sqlite3.Connection, name: str) -> Machine:
    """The VM of that name or UUID.  Raises NotFoundError."""
    row = conn.execute(f"SELECT {_MCOLS} FROM machines WHERE name = ? OR uuid = ?",
                       (name, name.lower())).fetchone()
    if row is None:
        raise NotFoundError(f"no VM {name!r} is registered (see: netstore vm list)")
    return machine_from_row(conn, row)


def all_machines(conn: sqlite3.Connection) -> list[Machine]:
    """Every VM, by name."""
    rows = conn.execute(f"SELECT {_MCOLS} FROM machines ORDER BY name").fetchall()
    return [machine_from_row(conn, r) for r in rows]


__all__ = ["Machine", "all_machines", "cpu_list", "cpu_text", "get_machine", "machine_from_row"]
