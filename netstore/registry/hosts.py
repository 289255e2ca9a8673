# Several hosts on one registry (issue 15): each daemon registers its host
# and renews a lease row while it runs; the database's clock, not a host's,
# dates every renewal, so hosts with skewed clocks agree on who is late.  A
# host whose lease has run out is fenced by whichever host notices: in one
# write transaction its epoch is bumped, it is marked down and its running
# VMs are aborted, so another host may start them.  A fenced daemon that
# comes back finds its epoch moved on its next renewal and must drop what it
# ran; a restarted one registers with a new epoch.  Also the writers table:
# the one machine writing each normal or writethrough medium, whose primary
# key makes the database itself refuse a second writer.
"""Hosts of a shared registry: leases, fencing, placement, and medium writers."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from netstore.disk.media import EXCLUSIVE_TYPES
from netstore.registry.errors import MediumBusyError, NotFoundError
from netstore.registry.schema import dialect


@dataclass(frozen=True, slots=True)
class Host:
    """A host of the registry as `host list` shows it."""

    name: str
    portal: str
    cores: int
    memory_mb: int
    epoch: int
    up: bool
    renewed_ago_s: float
    vms: tuple[str, ...] = ()
    used_mb: int = 0
    group: int = 0  # its number: the ALUA target port group it serves as
    vteps: tuple[tuple[str, str], ...] = ()  # (switch, "ip:port") its vxlan ports bind
    vcpus: int = 0  # the vCPUs of the VMs it runs (its load against `cores`)

    @property
    def free_mb(self) -> int:
        return self.memory_mb - self.used_mb

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "portal": self.portal, "cores": self.cores,
                "memory_mb": self.memory_mb, "epoch": self.epoch, "up": self.up,
                "renewed_ago_s": round(self.renewed_ago_s, 1), "vms": list(self.vms),
                "used_mb": self.used_mb, "free_mb": self.free_mb, "group": self.group,
                "vteps": [list(v) for v in self.vteps], "vcpus": self.vcpus}


@dataclass(frozen=True, slots=True)
class Fenced:
    """A host another fenced: its name and the VMs aborted with it."""

    host: str
    vms: tuple[str, ...] = field(default_factory=tuple)


def db_now(conn: sqlite3.Connection) -> float:
    """The database's clock, in seconds since the epoch (one clock for every host)."""
    if dialect(conn) == "postgresql":
        return float(conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])
    return float(conn.execute("SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()[0])


def claim_writes(conn: sqlite3.Connection, machine_id: int, machine: str,
                 media: list[tuple[int, str, str]]) -> None:
    """Record `machine` as the one writer of each (id, name, type) medium
    that runs in one machine at a time.  The database refuses a second
    writer (a primary key), whatever the checks before it found.

    Raises:
        MediumBusyError: another machine writes one of them (named).
    """
    for medium_id, name, mtype in media:
        if mtype not in EXCLUSIVE_TYPES:
            continue
        # the key decides; DO NOTHING keeps the transaction usable on PostgreSQL
        cur = conn.execute("INSERT INTO medium_writers (medium_id, machine_id) VALUES (?, ?) "
                           "ON CONFLICT (medium_id) DO NOTHING", (medium_id, machine_id))
        if cur.rowcount == 0:
            row = conn.execute("SELECT m.name FROM medium_writers w JOIN machines m "
                               "ON m.id = w.machine_id WHERE w.medium_id = ?",
                               (medium_id,)).fetchone()
            raise MediumBusyError(f"disk {name} is written by running VM "
                                  f"{row[0] if row else '?'}; {mtype} disks run in one VM "
                                  "at a time")


def power_off(conn: sqlite3.Connection, machine_id: int, aborted: str | None) -> None:
    """Record `machine_id` powered off (`aborted`: why its QEMU ended without
    the guest powering off): it runs nowhere and writes no medium any more."""
    conn.execute("DELETE FROM medium_writers WHERE machine_id = ?", (machine_id,))
    conn.execute("UPDATE machines SET power = 'poweroff', started = NULL, balloon_mb = 0, "
                 "run_type = NULL, paused = 0, aborted = ?, host = NULL WHERE id = ?",
                 (aborted, machine_id))


class Hosts:
    """The hosts of a registry (``reg.hosts``)."""

    def __init__(self, reg: Any) -> None:
        self.reg = reg

    def register(self, name: str, *, portal: str = "", cores: int = 0,
                 memory_mb: int = 0, vteps: tuple[tuple[str, str], ...] = ()) -> int:
        """This host's daemon starts: record it up, with a new epoch.  Returns the epoch."""
        vt = json.dumps([list(v) for v in vteps])
        with self.reg.transaction() as conn:
            t = db_now(conn)
            row = conn.execute("SELECT epoch FROM hosts WHERE name = ?", (name,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO hosts (name, portal, cores, memory_mb, epoch, renewed, "
                             "up, vteps) VALUES (?, ?, ?, ?, 1, ?, 1, ?)",
                             (name, portal, cores, memory_mb, t, vt))
                return 1
            conn.execute("UPDATE hosts SET portal = ?, cores = ?, memory_mb = ?, "
                         "epoch = epoch + 1, renewed = ?, up = 1, vteps = ? WHERE name = ?",
                         (portal, cores, memory_mb, t, vt, name))
            return int(row[0]) + 1

    def renew(self, name: str, epoch: int) -> bool:
        """Renew the lease of `name` at `epoch`; False: it was fenced (its epoch moved on)."""
        with self.reg.transaction(notify=False) as conn:  # no news for the watchers
            cur = conn.execute("UPDATE hosts SET renewed = ? WHERE name = ? AND epoch = ? "
                               "AND up = 1", (db_now(conn), name, epoch))
            return cur.rowcount == 1

    def leave(self, name: str, epoch: int) -> None:
        """The daemon stops cleanly: down, without waiting for its lease to run out."""
        with self.reg.transaction() as conn:
            conn.execute("UPDATE hosts SET up = 0 WHERE name = ? AND epoch = ?", (name, epoch))

    def fence_expired(self, lease_s: float, me: str) -> list[Fenced]:
        """Fence every other host whose lease ran out `lease_s` ago: bump its
        epoch, mark it down and abort the VMs whose QEMU it ran (their disks
        are free).  A VM run elsewhere (external: its initiator is the
        user's) lives on: `me` takes over its disks' writes (the ALUA owner)."""
        with self.reg.transaction() as conn:
            late = conn.execute("SELECT name FROM hosts WHERE up = 1 AND name != ? AND "
                                "renewed < ?", (me, db_now(conn) - lease_s)).fetchall()
            out = []
            for (host,) in late:
                conn.execute("UPDATE hosts SET epoch = epoch + 1, up = 0 WHERE name = ?", (host,))
                conn.execute("UPDATE machines SET host = ? WHERE host = ? AND power = 'running' "
                             "AND run_type = 'external'", (me, host))
                vms = conn.execute("SELECT id, name FROM machines WHERE host = ? AND "
                                   "power = 'running' ORDER BY name", (host,)).fetchall()
                for vm_id, _ in vms:
                    power_off(conn, vm_id, f"host {host} stopped renewing its lease (fenced)")
                out.append(Fenced(host, tuple(n for _, n in vms)))
            return out

    def list(self) -> list[Host]:
        """Every host, by name, with the VMs it runs and the memory they take."""
        with self.reg.reading() as conn:
            t = db_now(conn)
            rows = conn.execute("SELECT id, name, portal, cores, memory_mb, epoch, up, renewed, "
                                "vteps FROM hosts ORDER BY name").fetchall()
            out = []
            for hid, name, portal, cores, mem, epoch, up, renewed, vteps in rows:
                vms = conn.execute("SELECT name, memory_mb, cpus FROM machines WHERE host = ? AND "
                                   "power = 'running' ORDER BY name", (name,)).fetchall()
                out.append(Host(name, portal, cores, mem, epoch, bool(up), max(0.0, t - renewed),
                                tuple(v[0] for v in vms), sum(v[1] for v in vms), hid,
                                tuple((s, a) for s, a in json.loads(vteps or "[]")),
                                sum(v[2] for v in vms)))
            return out

    def get(self, name: str) -> Host:
        for h in self.list():
            if h.name == name:
                return h
        raise NotFoundError(f"no host {name!r} is registered (see: netstore host list)")

    def place(self) -> str | None:
        """The host a VM goes to: the one up with the most free memory (None:
        no host is up)."""
        up = [h for h in self.list() if h.up]
        if not up:
            return None
        return max(up, key=lambda h: (h.free_mb, -h.group)).name


__all__ = ["Host", "Hosts", "Fenced", "claim_writes", "power_off", "db_now"]
