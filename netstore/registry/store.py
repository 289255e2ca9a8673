# The media registry: SQLite in <state_dir>/registry.db, embedded in whichever
# process uses it (CLI or daemon).  WAL so readers never wait for a writer;
# every write is one BEGIN IMMEDIATE transaction (the write lock is taken up
# front, so a read-modify-write never loses an update and never fails with
# "database is locked" half-way) and waits up to BUSY_TIMEOUT_MS for another
# writer.  The rules of semantics.md section 1 are checked inside the
# transaction that makes the change.
"""The media registry: registered images, their layers and who uses them."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netstore.disk import layers
from netstore.disk.api import DiskError, Progress
from netstore.disk.images import FORMATS, convert, create_image, probe, resize_image
from netstore.disk.media import (
    KINDS,
    LAYERED_TYPES,
    VARIANTS,
    MediumRuleError,
    TypeContext,
    check_name,
    check_type,
    default_type,
)
from netstore.registry.errors import (
    DuplicateMediumError,
    MediumInUseError,
    NameTakenError,
    NotFoundError,
    RegistryError,
)
from netstore.registry.schema import migrate

DB_NAME = "registry.db"
# A writer waits this long for another one; a CLI command's transaction takes
# milliseconds, so 10 s is only reached by a stuck process.
BUSY_TIMEOUT_MS = 10_000
# File name extensions of media the registry creates, by format (and kind).
EXTENSIONS = {"raw": "img", "qcow2": "qcow2", "vdi": "vdi", "vmdk": "vmdk", "vhd": "vhd"}
# Formats a differencing layer can stand on (its backing format).
LAYER_BASE_FORMATS = ("raw", "qcow2")

_COLUMNS = (
    "id, uuid, name, location, format, variant, kind, type, virtual_size, description, "
    "autoreset, parent_id, owner, created"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Medium:
    """One registered image (a base medium or a differencing layer).

    ``current_size`` is read from the file when the medium is loaded: the
    bytes it occupies on disk, None when the file is missing.
    """

    id: int
    uuid: str
    name: str
    location: str
    format: str
    variant: str
    kind: str
    type: str
    virtual_size: int
    description: str
    autoreset: bool
    parent_id: int | None
    owner: str | None
    created: str
    current_size: int | None

    @property
    def is_layer(self) -> bool:
        """A differencing layer (a qcow2 whose backing file is its parent)."""
        return self.parent_id is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MediumUser:
    """A machine that uses a medium, and how (for messages and `disk list`)."""

    machine: str
    via: str  # "layer base@m1"; issue 5 adds "attached at sata0:1"


# Who uses a medium: each source returns the users it knows of, given the
# connection (inside the caller's transaction) and the medium.  Issue 5
# appends a source reading attachments; the rules and `disk list` see all.
UserSource = Callable[[sqlite3.Connection, Medium], list[MediumUser]]


def _layer_users(conn: sqlite3.Connection, medium: Medium) -> list[MediumUser]:
    """Owners of per-machine layers on the medium or on any layer above it."""
    rows = conn.execute(
        """
        WITH RECURSIVE sub(id) AS (
            SELECT ? UNION SELECT m.id FROM media m JOIN sub ON m.parent_id = sub.id
        )
        SELECT owner, name FROM media WHERE id IN sub AND owner IS NOT NULL ORDER BY id
        """,
        (medium.id,),
    ).fetchall()
    return [MediumUser(owner, f"layer {name}") for owner, name in rows]


USER_SOURCES: list[UserSource] = [_layer_users]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _on_disk(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else blocks * 512


def machine_dir_name(machine: str) -> str:
    """A directory name for `machine` (an IQN has ':'); a hash keeps two names
    that differ only in unsafe characters apart."""
    safe = _UNSAFE.sub("_", machine)[:96]
    if safe != machine or not safe or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(machine.encode()).hexdigest()[:10]}"
    return safe


def _normal_variant(variant: str) -> str:
    # probe() reports a format's own variant names; the registry keeps two.
    return "fixed" if variant in ("fixed", "monolithicFlat") else "dynamic"


def _remove_file(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Registry:
    """The media registry of one state directory.

    Open it with :meth:`open` (a context manager).  Methods taking ``ref``
    accept a medium's name or UUID.  Every method raising is a refusal that
    changed nothing.
    """

    def __init__(self, state_dir: Path, conn: sqlite3.Connection) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        self._conn = conn

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str]) -> Registry:
        """Open (creating and migrating as needed) ``<state_dir>/registry.db``.

        Raises:
            SchemaVersionError: the database is newer than this code.
            RegistryError: the database cannot be opened.
        """
        state_dir = Path(state_dir).absolute()
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
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps it consistent
            migrate(conn, str(state_dir / DB_NAME))
        except sqlite3.DatabaseError as e:
            conn.close()
            raise RegistryError(f"{state_dir / DB_NAME}: not a usable registry: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(state_dir, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def media_dir(self) -> Path:
        """Where created media live: ``<state_dir>/media``."""
        return self.state_dir / "media"

    @property
    def diffs_dir(self) -> Path:
        """Where per-machine layers live: ``<state_dir>/media/diffs/<machine>/``."""
        return self.media_dir / "diffs"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE) on the registry's connection.

        Committed when the block ends, rolled back if it raises; bumps
        :meth:`generation` when it changed a row.  Issue 5's tables are written through this.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        changes = self._conn.total_changes
        try:
            yield self._conn
            if self._conn.total_changes != changes:
                self._conn.execute("UPDATE registry_state SET generation = generation + 1")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        # a read transaction: several SELECTs see one state
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    @property
    def machines(self):  # type: ignore[no-untyped-def]
        """The machines (VMs) of this registry: a :class:`netstore.registry.machines.Machines`."""
        from netstore.registry.machines import Machines

        return Machines(self)

    def generation(self) -> int:
        """A number that grows with every committed change (poll it to notice changes)."""
        return self._conn.execute("SELECT generation FROM registry_state").fetchone()[0]

    # -- reading -----------------------------------------------------------

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Medium:
        return Medium(*row[:10], bool(row[10]), *row[11:], current_size=_on_disk(row[3]))

    def _get(self, conn: sqlite3.Connection, ref: str | int | Medium) -> Medium:
        if isinstance(ref, Medium):
            ref = ref.id
        if isinstance(ref, int):
            row = conn.execute(f"SELECT {_COLUMNS} FROM media WHERE id = ?", (ref,)).fetchone()
        else:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM media WHERE name = ? OR uuid = ? ORDER BY name = ? DESC",
                (ref, ref.lower(), ref),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no medium {ref!r} is registered (see: netstore disk list)")
        return self._row(row)

    def medium(self, ref: str | int | Medium) -> Medium:
        """The medium of that name, UUID or id (a fresh copy of a Medium).

        Raises:
            NotFoundError: none is registered.
        """
        return self._get(self._conn, ref)

    def find_by_location(self, path: str | os.PathLike[str]) -> Medium | None:
        """The medium whose file is `path` (compared as real paths), or None."""
        real = os.path.realpath(path)
        for m in self.media(layers=True):
            if os.path.realpath(m.location) == real:
                return m
        return None

    def media(self, *, layers: bool = False) -> list[Medium]:
        """Registered media by name; differencing layers too when `layers`."""
        where = "" if layers else "WHERE parent_id IS NULL"
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM media {where} ORDER BY name").fetchall()
        return [self._row(r) for r in rows]

    def children(self, ref: str | int | Medium) -> list[Medium]:
        """The layers whose parent is the medium, oldest first."""
        m = self.medium(ref)
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM media WHERE parent_id = ? ORDER BY id", (m.id,)
        ).fetchall()
        return [self._row(r) for r in rows]

    def parent_chain(self, ref: str | int | Medium) -> list[Medium]:
        """The medium and its registered parents, top first."""
        out = [self.medium(ref)]
        while out[-1].parent_id is not None:
            out.append(self.medium(out[-1].parent_id))
        return out

    def users_of(self, ref: str | int | Medium) -> list[MediumUser]:
        """Every machine that uses the medium, and how, from every USER_SOURCES entry."""
        with self._snapshot() as conn:
            return self._users(conn, self._get(conn, ref))

    def machines_of(self, ref: str | int | Medium) -> list[str]:
        """Names of the machines that use the medium, without repeats, in order."""
        return list(dict.fromkeys(u.machine for u in self.users_of(ref)))

    @staticmethod
    def _users(conn: sqlite3.Connection, m: Medium) -> list[MediumUser]:
        return [u for source in USER_SOURCES for u in source(conn, m)]

    def _context(self, conn: sqlite3.Connection, m: Medium) -> TypeContext:
        parent = self._get(conn, m.parent_id).name if m.parent_id is not None else None
        children = [r[0] for r in conn.execute(
            "SELECT name FROM media WHERE parent_id = ? ORDER BY id", (m.id,))]
        machines = list(dict.fromkeys(u.machine for u in self._users(conn, m)))
        owners = [r[0] for r in conn.execute(
            "SELECT owner FROM media WHERE parent_id = ? AND owner IS NOT NULL ORDER BY id",
            (m.id,))]
        return TypeContext(m.name, m.kind, m.variant, m.type, parent, children, machines, owners)

    # -- registering -------------------------------------------------------

    def _insert(self, conn: sqlite3.Connection, **f: Any) -> Medium:
        if conn.execute("SELECT 1 FROM media WHERE name = ?", (f["name"],)).fetchone():
            raise NameTakenError(f"a medium named {f['name']} is registered already")
        other = conn.execute(
            "SELECT name FROM media WHERE location = ?", (f["location"],)
        ).fetchone()
        if other:
            raise DuplicateMediumError(
                f"{f['location']} is registered already as medium {other[0]}"
            )
        other = conn.execute(
            "SELECT name, location FROM media WHERE uuid = ?", (f["uuid"],)
        ).fetchone()
        if other:
            raise DuplicateMediumError(
                f"{f['location']}: its UUID {f['uuid']} is registered already for medium "
                f"{other[0]} ({other[1]}); two media cannot share a UUID (a file copy keeps "
                "it; netstore disk clone or convert makes a copy with a new one)"
            )
        f.setdefault("created", _now())
        f.setdefault("description", "")
        f.setdefault("autoreset", True)
        f.setdefault("parent_id", None)
        f.setdefault("owner", None)
        cols = [c.strip() for c in _COLUMNS.split(",")][1:]
        cur = conn.execute(
            f"INSERT INTO media ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [int(f[c]) if c == "autoreset" else f[c] for c in cols],
        )
        return self._get(conn, cur.lastrowid)

    def _refuse_taken_name(self, name: str) -> None:
        if self._conn.execute("SELECT 1 FROM media WHERE name = ?", (name,)).fetchone():
            raise NameTakenError(f"a medium named {name} is registered already")

    def _new_path(self, name: str, fmt: str, kind: str) -> Path:
        ext = "iso" if (kind == "dvd" and fmt == "raw") else EXTENSIONS.get(fmt, fmt)
        path = self.media_dir / f"{name}.{ext}"
        if os.path.lexists(path):
            raise RegistryError(
                f"{path} exists already but is not a registered medium; remove it or choose "
                "another name (or register it: netstore disk import)"
            )
        return path

    def create(self, name: str, size: int, *, format: str = "qcow2", variant: str = "dynamic",
               kind: str = "hdd", type: str | None = None, description: str = "",
               progress: Progress | None = None) -> Medium:
        """Create an empty image ``<state_dir>/media/NAME.<ext>`` and register it.

        Raises:
            MediumRuleError: a bad name, kind or type (the type rules at creation:
                shareable only fixed, readonly only dvd/floppy, dvd only readonly).
            NameTakenError: the name is registered.
            DiskError: the format or variant cannot be written, or I/O failed
                (nothing is left behind).
        """
        check_name(name)
        if kind not in KINDS:
            raise MediumRuleError(f"unknown medium kind {kind!r} (one of {', '.join(KINDS)})")
        if variant not in VARIANTS:
            raise MediumRuleError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
        spec = FORMATS.get(format)
        if spec is None or not spec.write:
            writable = ", ".join(f for f, s in FORMATS.items() if s.write)
            raise DiskError(f"cannot create {format!r} images (one of {writable})")
        type = type or default_type(kind)
        check_type(TypeContext(name, kind, variant), type)
        self._refuse_taken_name(name)
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self._new_path(name, format, kind)
        medium_uuid = str(uuidlib.uuid4())
        info = create_image(str(path), format, size, variant=variant,
                            uuid=medium_uuid if spec.stores_uuid else None, progress=progress)
        try:
            with self.transaction() as conn:
                return self._insert(
                    conn, uuid=info.uuid or medium_uuid, name=name, location=str(path),
                    format=format, variant=variant, kind=kind, type=type,
                    virtual_size=info.virtual_size, description=description,
                )
        except BaseException:
            _remove_file(path)
            raise

    def import_image(self, path: str | os.PathLike[str], *, name: str | None = None,
                     type: str | None = None, kind: str = "hdd",
                     description: str = "") -> Medium:
        """Register an existing image where it lies (format found from its bytes).

        The UUID inside the image is the medium's where the format keeps one;
        raw and qcow2 get a new one.  A qcow2 with a backing file is registered
        as a layer of the medium at that file, which must be registered.

        Raises:
            DiskError: the file is missing, unknown or damaged (probe's message).
            DuplicateMediumError: its UUID or file is registered already (naming the other).
            NameTakenError, MediumRuleError: as for create; dvd media must be raw (ISO).
        """
        location = os.path.abspath(path)
        if not os.path.isfile(location):
            raise DiskError(f"{location}: no such image file")
        info = probe(location)
        name = name or Path(location).stem
        try:
            check_name(name)
        except MediumRuleError as e:
            raise MediumRuleError(f"{e} (choose one with --name)") from None
        if kind not in KINDS:
            raise MediumRuleError(f"unknown medium kind {kind!r} (one of {', '.join(KINDS)})")
        if kind == "dvd" and info.format != "raw":
            raise MediumRuleError(
                f"{location} is a {info.format} image; dvd media are raw (ISO) images"
            )
        variant = _normal_variant(info.variant)
        parent_id = None
        if info.backing_file:
            from netstore.disk.qcow2 import _resolve_backing

            backing = _resolve_backing(location, info.backing_file)
            parent = self.find_by_location(backing)
            if parent is None:
                raise RegistryError(
                    f"{location} is a differencing layer on {backing}, which is not registered; "
                    "import that first"
                )
            if type not in (None, "normal"):
                raise MediumRuleError(
                    f"{name} is a differencing layer of {parent.name}; a differencing layer's "
                    "type cannot be changed"
                )
            parent_id, kind, type = parent.id, parent.kind, "normal"
        type = type or default_type(kind)
        check_type(TypeContext(name, kind, variant), type)
        with self.transaction() as conn:
            return self._insert(
                conn, uuid=info.uuid or str(uuidlib.uuid4()), name=name, location=location,
                format=info.format, variant=variant, kind=kind, type=type,
                virtual_size=info.virtual_size, description=description, parent_id=parent_id,
            )

    def clone(self, ref: str | Medium, name: str, *, format: str | None = None,
              variant: str | None = None, progress: Progress | None = None) -> Medium:
        """Copy the medium's content (read through its chain) into a new
        medium ``<state_dir>/media/NAME.<ext>`` with a new UUID (written inside
        the image where the format keeps one).  The clone's type is normal
        (readonly for a dvd).

        Args:
            format: the clone's format; default the source's when netstore
                writes it, else qcow2.
            variant: default the source's when the format has it.

        Raises:
            NotFoundError, NameTakenError, MediumRuleError, DiskError.
        """
        src = self.medium(ref)
        check_name(name)
        fmt = format or (src.format if FORMATS[src.format].write else "qcow2")
        spec = FORMATS.get(fmt)
        if spec is None or not spec.write:
            writable = ", ".join(f for f, s in FORMATS.items() if s.write)
            raise DiskError(f"cannot write {fmt!r} images (one of {writable})")
        if variant is None:
            variant = src.variant if src.variant in spec.variants else spec.variants[0]
        self._refuse_taken_name(name)
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self._new_path(name, fmt, src.kind)
        new = str(uuidlib.uuid4())
        info = convert(src.location, str(path), fmt, variant=variant,
                       uuid=new if spec.stores_uuid else None, progress=progress)
        try:
            with self.transaction() as conn:
                return self._insert(
                    conn, uuid=info.uuid or new, name=name, location=str(path), format=fmt,
                    variant=_normal_variant(info.variant), kind=src.kind,
                    type=default_type(src.kind), virtual_size=info.virtual_size,
                    description=src.description,
                )
        except BaseException:
            _remove_file(path)
            raise

    # -- changing ----------------------------------------------------------

    def modify(self, ref: str | Medium, *, type: str | None = None, autoreset: bool | None = None,
               resize: int | None = None, description: str | None = None) -> Medium:
        """Change a medium's type, autoreset flag, size (grow only) or description.

        Everything asked is checked before anything changes.

        Raises:
            MediumRuleError: a type rule (semantics.md section 1), autoreset on
                a medium that is not immutable, growing a layer or a medium with
                layers or users.
            DiskError: the image cannot grow (shrinking, format).
        """
        with self.transaction() as conn:
            m = self._get(conn, ref)
            ctx = self._context(conn, m)
            new_type = m.type if type is None else type
            if type is not None:
                check_type(ctx, type)
            if autoreset is not None and new_type != "immutable":
                raise MediumRuleError(
                    f"{m.name} is {new_type}; autoreset applies to immutable media only"
                )
            if resize is not None and resize != m.virtual_size:
                if m.is_layer or ctx.children or ctx.machines:
                    why = (f"it is a layer of {ctx.parent}" if m.is_layer else
                           f"machine {ctx.machines[0]} uses it" if ctx.machines
                           else f"it has child layers ({', '.join(ctx.children)})")
                    raise MediumRuleError(
                        f"{m.name} cannot be resized: {why}; only a medium without layers "
                        "or users is resized"
                    )
                if m.kind == "dvd":
                    raise MediumRuleError(f"{m.name} is a dvd; dvd media are readonly")
                resize_image(m.location, resize)
                virtual = probe(m.location).virtual_size
                conn.execute("UPDATE media SET virtual_size = ? WHERE id = ?", (virtual, m.id))
            if type is not None:
                conn.execute("UPDATE media SET type = ? WHERE id = ?", (type, m.id))
            if autoreset is not None:
                conn.execute("UPDATE media SET autoreset = ? WHERE id = ?", (int(autoreset), m.id))
            if description is not None:
                conn.execute("UPDATE media SET description = ? WHERE id = ?", (description, m.id))
            return self._get(conn, m.id)

    def remove(self, ref: str | Medium, *, delete: bool = False) -> Medium:
        """Unregister a medium; with `delete` its file is deleted too.

        Raises:
            MediumInUseError: machines use it, or it has child layers (named).
        """
        with self.transaction() as conn:
            m = self._get(conn, ref)
            users = self._users(conn, m)
            if users:
                how = "; ".join(f"{u.machine} ({u.via})" for u in users)
                raise MediumInUseError(
                    f"{m.name} is used by machine {how}; a medium in use cannot be removed"
                )
            ctx = self._context(conn, m)
            if ctx.children:
                raise MediumInUseError(
                    f"{m.name} has child layers ({', '.join(ctx.children)}); remove them first"
                )
            conn.execute("DELETE FROM media WHERE id = ?", (m.id,))
        if delete:
            _remove_file(m.location)
        return m

    # -- layers ------------------------------------------------------------

    def layer_path(self, ref: str | Medium, machine: str) -> Path:
        """Where `machine`'s layer on the medium lives (whether or not it exists):
        ``<state_dir>/media/diffs/<machine-safe-name>/<medium-uuid>.qcow2``, or
        the machine's newest layer there once snapshots stacked more."""
        with self._snapshot() as conn:
            m = self._get(conn, ref)
            top = self._machine_top(conn, m, machine)
        if top is not None:
            return Path(top.location)
        return self.diffs_dir / machine_dir_name(machine) / f"{m.uuid}.qcow2"

    def _layered_base(self, conn: sqlite3.Connection, ref: str | Medium, machine: str) -> Medium:
        m = self._get(conn, ref)
        if not machine:
            raise RegistryError("a machine name is needed for a per-machine layer")
        if m.type not in LAYERED_TYPES:
            raise MediumRuleError(
                f"{m.name} is {m.type}; per-machine layers are for immutable and multiattach "
                "media (a normal medium is written at its current top)"
            )
        if m.format not in LAYER_BASE_FORMATS:
            raise MediumRuleError(
                f"{m.name} is a {m.format} image; a layer stands on raw or qcow2 only "
                f"(convert it: netstore disk clone {m.name} NEW --format qcow2)"
            )
        return m

    def _machine_top(self, conn: sqlite3.Connection, m: Medium, machine: str) -> Medium | None:
        # The machine's layers on `m` are a chain (a tree once snapshots are
        # restored) of layers it owns; the one it writes is the newest: a
        # snapshot, a restore and a reset each make the newest (snapshots.py).
        row = conn.execute(
            f"""
            WITH RECURSIVE sub(id) AS (
                SELECT id FROM media WHERE parent_id = ? AND owner = ?
                UNION SELECT c.id FROM media c JOIN sub ON c.parent_id = sub.id
                WHERE c.owner = ?
            )
            SELECT {_COLUMNS} FROM media WHERE id IN sub ORDER BY id DESC LIMIT 1
            """,
            (m.id, machine, machine),
        ).fetchone()
        return None if row is None else self._row(row)

    # kept for callers of the first version: the machine's layer = its top
    _machine_layer = _machine_top

    def _make_layer(self, conn: sqlite3.Connection, m: Medium, machine: str,
                    row: Medium | None) -> Path:
        # A new empty layer where `row` (the machine's top) was, on the same
        # parent; the machine's first layer on `m` when there is none.
        if row is None:
            path = self.diffs_dir / machine_dir_name(machine) / f"{m.uuid}.qcow2"
            parent_location = m.location
        else:
            path = Path(row.location)
            parent_location = self._get(conn, row.parent_id).location  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            layers.discard(str(path))  # refuses anything but a qcow2 layer
        layers.create_child(parent_location, str(path))
        try:
            if row is None:
                self._insert(
                    conn, uuid=str(uuidlib.uuid4()), name=f"{m.name}@{machine}",
                    location=str(path), format="qcow2", variant="dynamic", kind=m.kind,
                    type="normal", virtual_size=m.virtual_size, parent_id=m.id, owner=machine,
                )
            else:
                conn.execute("UPDATE media SET created = ? WHERE id = ?", (_now(), row.id))
        except BaseException:
            _remove_file(path)
            raise
        return path

    def layer_for(self, ref: str | Medium, machine: str) -> Path:
        """`machine`'s differencing layer on an immutable or multiattach medium,
        created (and registered, owner=machine) on first use.

        Raises:
            MediumRuleError: the medium is not immutable/multiattach, or not raw/qcow2.
        """
        with self.transaction() as conn:
            return self._layer_for(conn, ref, machine)

    def _layer_for(self, conn: sqlite3.Connection, ref: str | Medium, machine: str) -> Path:
        m = self._layered_base(conn, ref, machine)
        row = self._machine_top(conn, m, machine)
        if row is not None and os.path.exists(row.location):
            return Path(row.location)
        return self._make_layer(conn, m, machine, row)

    def reset_layer(self, ref: str | Medium, machine: str) -> Path:
        """Discard `machine`'s layer on the medium and start an empty one (an
        immutable medium's autoreset).  The caller has closed the layer.

        Raises:
            MediumRuleError: as layer_for.
        """
        with self.transaction() as conn:
            return self._reset_layer(conn, ref, machine)

    def _reset_layer(self, conn: sqlite3.Connection, ref: str | Medium, machine: str) -> Path:
        m = self._layered_base(conn, ref, machine)
        return self._make_layer(conn, m, machine, self._machine_top(conn, m, machine))

    def layer_at_power_on(self, ref: str | Medium, machine: str) -> Path:
        """The layer `machine` uses after a power-on: reset for an immutable
        medium with autoreset on, kept otherwise (multiattach, autoreset off).
        A reset returns to the machine's current snapshot: the new empty layer
        stands on the layer its snapshot froze (snapshots.py)."""
        with self.transaction() as conn:
            return self._layer_at_power_on(conn, ref, machine)

    def _layer_at_power_on(self, conn: sqlite3.Connection, ref: str | Medium,
                           machine: str) -> Path:
        m = self._get(conn, ref)
        if m.type == "immutable" and m.autoreset:
            return self._reset_layer(conn, m, machine)
        return self._layer_for(conn, m, machine)

    def discard_layer(self, ref: str | Medium, machine: str) -> bool:
        """Unregister and delete `machine`'s layer on the medium (the machine is
        gone or detached).  Returns whether there was one.

        Raises:
            MediumInUseError: the layer has child layers (a snapshot froze it).
        """
        with self.transaction() as conn:
            row = self._discard_layer(conn, ref, machine)
        if row is None:
            return False
        _remove_file(row.location)
        return True

    def _discard_layer(self, conn: sqlite3.Connection, ref: str | Medium,
                       machine: str) -> Medium | None:
        # the row goes; the caller deletes the file after the commit
        m = self._get(conn, ref)
        row = self._machine_top(conn, m, machine)
        if row is None:
            return None
        if conn.execute("SELECT 1 FROM media WHERE parent_id = ?", (row.id,)).fetchone() or \
                row.parent_id != m.id:
            raise MediumInUseError(
                f"{row.name} has child layers or stands on a snapshot's layer; it cannot be "
                "discarded (delete the machine's snapshots first)"
            )
        conn.execute("DELETE FROM media WHERE id = ?", (row.id,))
        return row

    def current_top(self, ref: str | Medium) -> Path:
        """Where a machine writes a normal (writethrough, shareable) medium: the
        top of its tree of snapshot layers (layers with no owner): the newest
        of them, or the medium itself when it has none.  Taking, restoring and
        deleting snapshots keep the current state the newest (snapshots.py).

        Raises:
            MediumRuleError: an immutable or multiattach medium (use layer_for).
        """
        with self._snapshot() as conn:
            m = self._get(conn, ref)
            if m.type in LAYERED_TYPES:
                raise MediumRuleError(
                    f"{m.name} is {m.type}; each machine writes its own layer on it"
                )
            return Path(self._current_top(conn, m).location)

    def _current_top(self, conn: sqlite3.Connection, m: Medium) -> Medium:
        row = conn.execute(
            f"""
            WITH RECURSIVE sub(id) AS (
                SELECT ? UNION SELECT c.id FROM media c JOIN sub ON c.parent_id = sub.id
                WHERE c.owner IS NULL
            )
            SELECT {_COLUMNS} FROM media WHERE id IN sub ORDER BY id DESC LIMIT 1
            """,
            (m.id,),
        ).fetchone()
        return self._row(row)


__all__ = [
    "Registry",
    "Medium",
    "MediumUser",
    "USER_SOURCES",
    "UserSource",
    "DB_NAME",
    "BUSY_TIMEOUT_MS",
    "machine_dir_name",
]
