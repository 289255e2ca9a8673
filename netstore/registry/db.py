# The registry's database: SQLite in <state_dir>/registry.db, embedded in
# whichever process uses it (CLI or daemon).  WAL so readers never wait for a
# writer; every write is one BEGIN IMMEDIATE transaction (the write lock is
# taken up front, so a read-modify-write never loses an update and never fails
# with "database is locked" half-way) and waits up to BUSY_TIMEOUT_MS for
# another writer.  A committed change bumps the generation the daemon polls.
# Opening migrates the schema (schema.py) under an flock on <state_dir>/registry.lock:
# switching a new file to WAL takes an exclusive lock that SQLite does not wait
# for, so processes creating one registry at once take turns.  With a
# [registry] url the database is PostgreSQL instead (registry/postgres.py,
# shared by several hosts) and the state directory keeps only this host's
# files.  Also the two small helpers every
# record module uses: the time stamp of a row, removing a file after a commit.
"""The registry's SQLite database: opening, transactions, the generation counter."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import psycopg

from netstore.registry.errors import RegistryError
from netstore.registry.postgres import PgConnection, redacted
from netstore.registry.schema import migrate

DB_NAME = "registry.db"
LOCK_NAME = "registry.lock"
# A writer waits this long for another one; a CLI command's transaction takes
# milliseconds, so 10 s is only reached by a stuck process.
BUSY_TIMEOUT_MS = 10_000


def now() -> str:
    """A row's time stamp: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def remove_file(path: str | Path) -> None:
    """Delete `path` if it is there (a file the registry no longer refers to)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def _opening(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's open lock (other processes opening wait)."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield  # a directory we may not write: nobody creates a registry in it either
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _prepare(conn: sqlite3.Connection, state_dir: Path) -> None:
    """Set the connection's pragmas and bring the schema up to date."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps it consistent
    migrate(conn, str(state_dir / DB_NAME))


class Database:
    """The registry database of one state directory.

    Open it with :meth:`open` (a context manager).  Writes go through
    :meth:`transaction`, reads that need one consistent state through
    :meth:`reading`.
    """

    def __init__(self, state_dir: Path, conn: sqlite3.Connection,
                 url: str | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        self.url = url
        self._conn = conn
        row = conn.execute("SELECT media_dir FROM registry_state").fetchone()
        self._media_dir = Path(row[0]) if row and row[0] else None

    @property
    def where(self) -> str:
        """The database, as messages name it (a file, or a URL without its password)."""
        return redacted(self.url) if self.url else str(self.path)

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], url: str | None = None) -> Self:
        """Open (creating and migrating as needed) ``<state_dir>/registry.db``,
        or the PostgreSQL database at `url` (``[registry] url``).

        Raises:
            SchemaVersionError: the database is newer than this code.
            RegistryError: the database cannot be opened.
        """
        state_dir = Path(state_dir).absolute()
        if url:
            return cls._open_postgres(state_dir, url)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                state_dir / DB_NAME,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as e:
            raise RegistryError(f"{state_dir / DB_NAME}: cannot open the registry: {e}") from e
        try:
            with _opening(state_dir):
                _prepare(conn, state_dir)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise RegistryError(f"{state_dir / DB_NAME}: not a usable registry: {e}") from e
        except OSError as e:
            conn.close()
            raise RegistryError(f"{state_dir / LOCK_NAME}: cannot lock the registry: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(state_dir, conn)

    @classmethod
    def _open_postgres(cls, state_dir: Path, url: str) -> Self:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RegistryError(f"{state_dir}: cannot make the state directory: {e}") from e
        conn = PgConnection.connect(url)
        try:
            conn.prepare_schema()
            migrate(conn, redacted(url))  # type: ignore[arg-type]
        except psycopg.Error as e:
            conn.close()
            raise RegistryError(f"{redacted(url)}: not a usable registry: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(state_dir, conn, url)  # type: ignore[arg-type]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def media_dir(self) -> Path:
        """Where created media live: ``<state_dir>/media``, or the shared
        registry's media directory (:meth:`share_media`)."""
        return self._media_dir or self.state_dir / "media"

    @property
    def diffs_dir(self) -> Path:
        """Where per-machine layers live: ``<state_dir>/media/diffs/<machine>/``
        (this host's: a machine's own layers live where it runs)."""
        return self.state_dir / "media" / "diffs"

    def share_media(self, path: Path) -> None:
        """Create media in `path` from now on, for every host of the registry
        (``[registry] media``); once set, it may not change.

        Raises:
            RegistryError: the registry keeps its media elsewhere already.
        """
        path = Path(path).absolute()
        if self._media_dir == path:
            return  # kept already: no write
        with self.transaction() as conn:
            row = conn.execute("SELECT media_dir FROM registry_state").fetchone()
            if row[0] and Path(row[0]) != path:
                raise RegistryError(f"{self.where}: its media are in {row[0]}, not {path} "
                                    "([registry] media must name the same directory on every host)")
            if not row[0]:
                conn.execute("UPDATE registry_state SET media_dir = ?", (str(path),))
        self._media_dir = path

    @contextmanager
    def transaction(self, *, notify: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE) on the registry's connection.

        Committed when the block ends, rolled back if it raises; bumps
        :meth:`generation` when it changed a row, unless `notify` is False
        (a change no watcher serves anything from: a lease renewal).
        """
        self._conn.execute("BEGIN IMMEDIATE")
        changes = self._conn.total_changes
        try:
            yield self._conn
            if notify and self._conn.total_changes != changes:
                self._conn.execute("UPDATE registry_state SET generation = generation + 1")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: the SELECTs inside the block see one state."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    def generation(self) -> int:
        """A number that grows with every committed change (poll it to notice changes)."""
        return self._conn.execute("SELECT generation FROM registry_state").fetchone()[0]


__all__ = ["Database", "DB_NAME", "BUSY_TIMEOUT_MS", "now", "remove_file"]
