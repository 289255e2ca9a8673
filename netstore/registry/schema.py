# The registry's SQLite schema as a list of migrations.  PRAGMA user_version
# is the number of migrations applied; opening a database runs the missing
# ones inside one BEGIN IMMEDIATE transaction, so two processes opening an old
# database at once migrate it once.  Append a function to MIGRATIONS to change
# the schema (issue 5: machines, controllers, attachments, NICs, snapshots);
# never edit one that has shipped.  No executescript here: it commits.
"""Schema migrations of registry.db."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from netstore.disk.media import KINDS, TYPES
from netstore.registry.errors import SchemaVersionError

Migration = Callable[[sqlite3.Connection], None]


def dialect(conn: sqlite3.Connection) -> str:
    """The SQL dialect behind `conn`: "sqlite", or "postgresql" (registry/postgres.py)."""
    return getattr(conn, "dialect", "sqlite")


# machines.current_snapshot_id (v3); SQLite lets a table refer to one not yet created
_CURRENT_SNAPSHOT_FK = "REFERENCES snapshots(id) ON DELETE SET NULL"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _v1_media(conn: sqlite3.Connection) -> None:
    """Media: registered images and their differencing layers.

    A layer has parent_id (its backing file's medium); a per-machine layer of
    an immutable or multiattach medium also has owner (the machine's name).
    current size is not stored: it is read from the file when listed.
    """
    conn.execute(
        f"""
        CREATE TABLE media (
            id           INTEGER PRIMARY KEY,
            uuid         TEXT NOT NULL UNIQUE,
            name         TEXT NOT NULL UNIQUE,
            location     TEXT NOT NULL UNIQUE,
            format       TEXT NOT NULL,
            variant      TEXT NOT NULL CHECK (variant IN ('fixed', 'dynamic')),
            kind         TEXT NOT NULL CHECK (kind IN {_in(KINDS)}),
            type         TEXT NOT NULL CHECK (type IN {_in(TYPES)}),
            virtual_size INTEGER NOT NULL CHECK (virtual_size >= 0),
            description  TEXT NOT NULL DEFAULT '',
            autoreset    INTEGER NOT NULL DEFAULT 1 CHECK (autoreset IN (0, 1)),
            parent_id    INTEGER REFERENCES media(id) ON DELETE RESTRICT,
            owner        TEXT,
            created      TEXT NOT NULL,
            CHECK (owner IS NULL OR parent_id IS NOT NULL)
        )
        """
    )
    conn.execute("CREATE INDEX media_parent ON media(parent_id)")
    # one layer per machine per medium
    conn.execute(
        "CREATE UNIQUE INDEX media_machine_layer ON media(parent_id, owner) "
        "WHERE owner IS NOT NULL"
    )


def _v2_generation(conn: sqlite3.Connection) -> None:
    """A counter every write transaction bumps: a daemon polls it (one cheap
    read a second) to learn that the registry changed."""
    conn.execute(
        "CREATE TABLE registry_state ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " generation INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO registry_state (id, generation) VALUES (1, 0)")


def _v3_machines(conn: sqlite3.Connection) -> None:
    """Machines (VMs) and what hangs off them: storage controllers,
    attachments, NICs (with the ports the registry allocated them),
    snapshots and the layer each snapshot froze per medium.

    The unique index of v1 on (parent_id, owner) goes: a machine's layers on
    an immutable or multiattach medium become a tree with snapshots (a
    snapshot's layer may have the machine's older and newer branches as
    children).  One first-level layer per machine and medium is kept by the
    code (store.py _machine_top).
    """
    on_postgres = dialect(conn) == "postgresql"
    conn.execute("DROP INDEX media_machine_layer")
    conn.execute("CREATE INDEX media_owner ON media(owner) WHERE owner IS NOT NULL")
    conn.execute(
        """
        CREATE TABLE machines (
            id            INTEGER PRIMARY KEY,
            uuid          TEXT NOT NULL UNIQUE,
            name          TEXT NOT NULL UNIQUE,
            ostype        TEXT NOT NULL,
            cpus          INTEGER NOT NULL CHECK (cpus BETWEEN 1 AND 32),
            cpu_hotplug   INTEGER NOT NULL DEFAULT 0 CHECK (cpu_hotplug IN (0, 1)),
            plugged_cpus  TEXT NOT NULL DEFAULT '',
            cpu_cap       INTEGER NOT NULL DEFAULT 100 CHECK (cpu_cap BETWEEN 1 AND 100),
            weight        INTEGER NOT NULL DEFAULT 100 CHECK (weight >= 1),
            memory_mb     INTEGER NOT NULL CHECK (memory_mb >= 1),
            memory_min_mb INTEGER CHECK (memory_min_mb IS NULL OR memory_min_mb <= memory_mb),
            balloon_mb    INTEGER NOT NULL DEFAULT 0 CHECK (balloon_mb >= 0),
            page_fusion   INTEGER NOT NULL DEFAULT 0 CHECK (page_fusion IN (0, 1)),
            chipset       TEXT NOT NULL,
            power         TEXT NOT NULL DEFAULT 'poweroff'
                          CHECK (power IN ('poweroff', 'running')),
            started       TEXT,
            current_snapshot_id INTEGER {current_snapshot_fk},
            created       TEXT NOT NULL
        )
        """.format(current_snapshot_fk="" if on_postgres else _CURRENT_SNAPSHOT_FK)
    )
    conn.execute(
        """
        CREATE TABLE controllers (
            id         INTEGER PRIMARY KEY,
            machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
            name       TEXT NOT NULL,
            bus        TEXT NOT NULL,
            chipset    TEXT NOT NULL,
            UNIQUE (machine_id, name)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE attachments (
            id            INTEGER PRIMARY KEY,
            machine_id    INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
            controller_id INTEGER NOT NULL REFERENCES controllers(id) ON DELETE CASCADE,
            port          INTEGER NOT NULL CHECK (port >= 0),
            device        INTEGER NOT NULL CHECK (device >= 0),
            slot_kind     TEXT NOT NULL CHECK (slot_kind IN ('hdd', 'dvd', 'floppy')),
            medium_id     INTEGER NOT NULL REFERENCES media(id) ON DELETE RESTRICT,
            UNIQUE (controller_id, port, device),
            UNIQUE (machine_id, medium_id)
        )
        """
    )
    conn.execute("CREATE INDEX attachments_medium ON attachments(medium_id)")
    conn.execute(
        """
        CREATE TABLE nics (
            id          INTEGER PRIMARY KEY,
            machine_id  INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
            slot        INTEGER NOT NULL CHECK (slot BETWEEN 0 AND 7),
            mac         TEXT NOT NULL UNIQUE,
            switch      TEXT NOT NULL,
            vlan        INTEGER NOT NULL CHECK (vlan BETWEEN 1 AND 4094),
            transport   TEXT NOT NULL,
            switch_addr TEXT NOT NULL,
            vm_addr     TEXT NOT NULL,
            UNIQUE (machine_id, slot)
        )
        """
    )
    # every IP port handed to a NIC, so no two NICs get one
    conn.execute(
        """
        CREATE TABLE nic_ports (
            port   INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
            nic_id INTEGER NOT NULL REFERENCES nics(id) ON DELETE CASCADE
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE snapshots (
            id          INTEGER PRIMARY KEY,
            machine_id  INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
            uuid        TEXT NOT NULL UNIQUE,
            name        TEXT NOT NULL,
            parent_id   INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
            description TEXT NOT NULL DEFAULT '',
            created     TEXT NOT NULL,
            UNIQUE (machine_id, name)
        )
        """
    )
    # per snapshot and attached medium: the layer it froze (the state it keeps)
    conn.execute(
        """
        CREATE TABLE snapshot_media (
            snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
            medium_id   INTEGER NOT NULL REFERENCES media(id) ON DELETE RESTRICT,
            layer_id    INTEGER NOT NULL REFERENCES media(id) ON DELETE RESTRICT,
            PRIMARY KEY (snapshot_id, medium_id)
        )
        """
    )
    conn.execute("CREATE INDEX snapshot_media_layer ON snapshot_media(layer_id)")
    conn.execute("CREATE INDEX snapshot_media_medium ON snapshot_media(medium_id)")
    if on_postgres:  # a reference to a table created later is added once it exists
        conn.execute(f"ALTER TABLE machines ADD FOREIGN KEY (current_snapshot_id) "
                     f"{_CURRENT_SNAPSHOT_FK}")


# MIGRATIONS[i] takes a database from version i to i + 1.
def _v4_nic_port_security(conn: sqlite3.Connection) -> None:
    """A NIC may ask for port security: its switch port admits only its MAC."""
    conn.execute("ALTER TABLE nics ADD COLUMN port_security INTEGER NOT NULL DEFAULT 0")


def _v5_nic_impairments(conn: sqlite3.Connection) -> None:
    """A NIC may impair its link (issue 11): per direction of its switch port,
    the JSON of Impairment.to_table() (netstore.impairments); NULL is a perfect link."""
    conn.execute("ALTER TABLE nics ADD COLUMN impair_in TEXT")
    conn.execute("ALTER TABLE nics ADD COLUMN impair_out TEXT")


def _v6_boot(conn: sqlite3.Connection) -> None:
    """How a VM boots (issue 13, netstore.registry.boot): its boot order
    (devices by name, comma-separated; NULL is QEMU's own) and direct kernel
    boot (absolute paths, and the kernel's command line)."""
    for column in ("boot_order", "kernel", "initrd", "kernel_append"):
        conn.execute(f"ALTER TABLE machines ADD COLUMN {column} TEXT")


def _v7_runs(conn: sqlite3.Connection) -> None:
    """How a running VM runs (issue 13): run_type 'headless' (the daemon runs
    its QEMU) or 'external' (the user does), NULL while off; paused while its
    QEMU is stopped; aborted holds why a VM's QEMU ended without the guest
    powering off (NULL otherwise), until it starts again."""
    conn.execute("ALTER TABLE machines ADD COLUMN run_type TEXT")
    conn.execute("ALTER TABLE machines ADD COLUMN paused INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE machines ADD COLUMN aborted TEXT")


def _v8_saved_states(conn: sqlite3.Connection) -> None:
    """Live snapshots (issue 13): a snapshot may keep the VM's memory and
    device state (a QEMU migration stream in a file); restoring it leaves the
    powered-off VM with that saved state, which its next start resumes."""
    conn.execute("ALTER TABLE snapshots ADD COLUMN state_file TEXT")
    conn.execute("ALTER TABLE machines ADD COLUMN saved_state TEXT")


def _v9_startup(conn: sqlite3.Connection) -> None:
    """VM groups started together (issue 14; an OVF VirtualSystemCollection and
    its StartupSection): the group's name, the VM's place in its start order
    and the seconds to wait after starting it before the next."""
    conn.execute("ALTER TABLE machines ADD COLUMN start_group TEXT")
    conn.execute("ALTER TABLE machines ADD COLUMN start_order INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE machines ADD COLUMN start_delay_s INTEGER NOT NULL DEFAULT 0")


def _v10_nic_model(conn: sqlite3.Connection) -> None:
    """A NIC's model (issue 14): the adapter the guest sees (virtio, e1000,
    ...; netstore.registry.nics.NIC_MODELS), kept through OVF."""
    conn.execute("ALTER TABLE nics ADD COLUMN model TEXT NOT NULL DEFAULT 'virtio'")


def _v11_product(conn: sqlite3.Connection) -> None:
    """What an imported appliance is (issue 14: its OVF ProductSection, as
    JSON: product, vendor, version, URLs, properties), written back on export."""
    conn.execute("ALTER TABLE machines ADD COLUMN product TEXT")


def _v12_hosts(conn: sqlite3.Connection) -> None:
    """Several hosts on one registry (issue 15, netstore.registry.hosts): each
    daemon's host with its portal, size, epoch (bumped at every start and when
    others fence it) and the database time it last renewed its lease; which
    host runs each running VM; and the one machine writing each normal or
    writethrough medium, a primary key the database itself keeps unique."""
    conn.execute(
        """
        CREATE TABLE hosts (
            id        INTEGER PRIMARY KEY,
            name      TEXT NOT NULL UNIQUE,
            portal    TEXT NOT NULL DEFAULT '',
            cores     INTEGER NOT NULL DEFAULT 0,
            memory_mb INTEGER NOT NULL DEFAULT 0,
            epoch     INTEGER NOT NULL DEFAULT 0,
            renewed   REAL NOT NULL,
            up        INTEGER NOT NULL DEFAULT 1 CHECK (up IN (0, 1))
        )
        """
    )
    conn.execute("ALTER TABLE machines ADD COLUMN host TEXT")
    conn.execute(
        """
        CREATE TABLE medium_writers (
            medium_id  INTEGER PRIMARY KEY REFERENCES media(id) ON DELETE CASCADE,
            machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE
        )
        """
    )
    conn.execute(
        "INSERT INTO medium_writers (medium_id, machine_id) "
        "SELECT a.medium_id, MIN(a.machine_id) FROM attachments a "
        "JOIN machines m ON m.id = a.machine_id JOIN media d ON d.id = a.medium_id "
        "WHERE m.power = 'running' AND d.type IN ('normal', 'writethrough') "
        "GROUP BY a.medium_id")


def _v13_reservations(conn: sqlite3.Connection) -> None:
    """SCSI persistent reservations of units several hosts export (issue 15,
    netstore.registry.reservations): the JSON state per unit."""
    conn.execute("CREATE TABLE reservations (unit TEXT PRIMARY KEY, state TEXT NOT NULL)")


def _v14_host_requests(conn: sqlite3.Connection) -> None:
    """Requests from one host's CLI to another host's daemon (issue 15,
    netstore.registry.requests): the operation and its JSON arguments, its
    state (waiting, taken, answered) and its JSON result or error."""
    conn.execute(
        """
        CREATE TABLE host_requests (
            id      INTEGER PRIMARY KEY,
            host    TEXT NOT NULL,
            op      TEXT NOT NULL,
            args    TEXT NOT NULL,
            state   INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
            result  TEXT,
            error   TEXT,
            created REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX host_requests_host ON host_requests(host, state)")


def _v15_host_vteps(conn: sqlite3.Connection) -> None:
    """The VXLAN tunnel endpoints of each host (issue 15): a JSON list of
    [switch, "ip:port"] its vxlan ports bind; other hosts add them to the
    remotes of their vxlan ports on the switch of the same name."""
    conn.execute("ALTER TABLE hosts ADD COLUMN vteps TEXT NOT NULL DEFAULT '[]'")


def _v16_media_dir(conn: sqlite3.Connection) -> None:
    """Where a shared registry's media are created (issue 15): a directory
    every host mounts at that path ([registry] media); NULL: each host's
    <state_dir>/media, as on one host."""
    conn.execute("ALTER TABLE registry_state ADD COLUMN media_dir TEXT")


MIGRATIONS: list[Migration] = [_v1_media, _v2_generation, _v3_machines,
                               _v4_nic_port_security, _v5_nic_impairments, _v6_boot,
                               _v7_runs, _v8_saved_states, _v9_startup, _v10_nic_model,
                               _v11_product, _v12_hosts,
                               _v13_reservations, _v14_host_requests,
                               _v15_host_vteps, _v16_media_dir]


def schema_version() -> int:
    """The version this code writes (the number of migrations)."""
    return len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database on `conn` (autocommit mode) to the current version.

    Returns: the version found before migrating.

    Raises:
        SchemaVersionError: the database is newer than this code; nothing is changed.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == len(MIGRATIONS):
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        if found > len(MIGRATIONS):
            raise SchemaVersionError(
                f"{path}: registry schema version {found} is newer than this netstore "
                f"knows (up to {len(MIGRATIONS)}); use a newer netstore"
            )
        for version in range(found, len(MIGRATIONS)):
            MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


__all__ = ["MIGRATIONS", "Migration", "migrate", "schema_version", "dialect"]
