# tests/registry/test_schema.py - registry.db: WAL, foreign keys, versioned
# schema; an old database is migrated with its rows kept, a newer one refused.
"""Schema and migrations of the registry database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from netstore.registry import DB_NAME, MIGRATIONS, Registry, SchemaVersionError, schema_version
from netstore.registry.schema import migrate


def test_new_database_is_current_wal_with_foreign_keys(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "s") as reg:
        conn = reg._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert (tmp_path / "s" / DB_NAME).exists()


def test_reopening_keeps_media(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.create("a", 1 << 20, format="raw")
    with Registry.open(tmp_path) as reg:
        assert [m.name for m in reg.media()] == ["a"]


def _make_version(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for m in MIGRATIONS[:version]:
        m(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("COMMIT")
    return conn


def test_version_1_database_is_migrated_rows_kept(tmp_path: Path) -> None:
    assert schema_version() >= 2, "this test migrates from version 1"
    image = tmp_path / "old.img"
    image.write_bytes(bytes(4096))
    conn = _make_version(tmp_path / DB_NAME, 1)
    conn.execute(
        "INSERT INTO media (uuid, name, location, format, variant, kind, type, virtual_size,"
        " created) VALUES ('0b8c6a52-8f5e-4c41-9d7e-2b0f5a7f0c11', 'old', ?, 'raw', 'fixed',"
        " 'hdd', 'normal', 4096, '2026-01-01T00:00:00+00:00')",
        (str(image),),
    )
    conn.close()
    with Registry.open(tmp_path) as reg:
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        old = reg.medium("old")
        assert old.uuid == "0b8c6a52-8f5e-4c41-9d7e-2b0f5a7f0c11" and old.autoreset
        g = reg.generation()
        reg.modify("old", description="kept")
        assert reg.generation() == g + 1
        assert reg.medium("0b8c6a52-8f5e-4c41-9d7e-2b0f5a7f0c11").description == "kept"


def test_empty_database_file_is_initialised(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).touch()
    with Registry.open(tmp_path) as reg:
        assert reg.media() == []


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    conn = _make_version(tmp_path / DB_NAME, len(MIGRATIONS))
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
    conn.close()
    with pytest.raises(SchemaVersionError) as e:
        Registry.open(tmp_path)
    msg = str(e.value)
    assert f"schema version {len(MIGRATIONS) + 3} is newer" in msg and DB_NAME in msg
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 3


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    assert migrate(conn, "x") == 0
    assert migrate(conn, "x") == schema_version()


def test_not_a_database_is_a_registry_error(tmp_path: Path) -> None:
    from netstore.registry import RegistryError

    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="not a usable registry"):
        Registry.open(tmp_path)


def test_foreign_keys_enforced(reg: Registry) -> None:
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        with reg.transaction() as conn:
            conn.execute(
                "INSERT INTO media (uuid, name, location, format, variant, kind, type,"
                " virtual_size, parent_id, created) VALUES ('u', 'n', '/x', 'qcow2', 'dynamic',"
                " 'hdd', 'normal', 1, 999, 'now')"
            )
