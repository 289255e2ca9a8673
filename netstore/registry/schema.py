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


# MIGRATIONS[i] takes a database from version i to i + 1.
MIGRATIONS: list[Migration] = [_v1_media, _v2_generation]


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


__all__ = ["MIGRATIONS", "Migration", "migrate", "schema_version"]
