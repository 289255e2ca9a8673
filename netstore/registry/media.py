# Media in the registry: the Medium record (a base image or a differencing
# layer), who uses a medium (per-machine layers, attachments, snapshots: one
# query each, USER_SOURCES), and registering, cloning, changing and removing
# media under the type rules of semantics.md section 1 (netstore.disk.media
# holds the rules; they are checked inside the transaction that makes the
# change).  Per-machine layers and the current top are in layers.py.
"""Media: registered images, who uses them, and their type rules."""

from __future__ import annotations

import os
import sqlite3
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from netstore.disk.api import DiskError, Progress
from netstore.disk.images import FORMATS, convert, create_image, probe, resize_image
from netstore.disk.media import (
    KINDS,
    VARIANTS,
    MediumRuleError,
    TypeContext,
    check_name,
    check_type,
    default_type,
)
from netstore.disk.qcow2 import _resolve_backing
from netstore.registry.db import Database, now, remove_file
from netstore.registry.errors import (
    DuplicateMediumError,
    MediumInUseError,
    NameTakenError,
    NotFoundError,
    RegistryError,
)

# File name extensions of media the registry creates, by format (and kind).
EXTENSIONS = {"raw": "img", "qcow2": "qcow2", "vdi": "vdi", "vmdk": "vmdk", "vhd": "vhd"}

# The media table's columns, in Medium's field order (current_size aside).
COLUMNS = (
    "id, uuid, name, location, format, variant, kind, type, virtual_size, description, "
    "autoreset, parent_id, owner, created"
)


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
    via: str  # "layer base@m1", "attached at sata0:1:0", "base in snapshot s1"


# Who uses a medium: each source returns the users it knows of, given the
# connection (inside the caller's transaction) and the medium.  The rules,
# `disk remove` and `disk list` see all of them.
UserSource = Callable[[sqlite3.Connection, Medium], list[MediumUser]]


def _layer_users(conn: sqlite3.Connection, medium: Medium) -> list[MediumUser]:
    """Owners of per-machine layers on the medium or on any layer above it."""
    rows = conn.execute(
        """
        WITH RECURSIVE sub(id) AS (
            SELECT ? UNION SELECT m.id FROM media m JOIN sub ON m.parent_id = sub.id
        )
        SELECT owner, name FROM media WHERE id IN (SELECT id FROM sub) AND owner IS NOT NULL ORDER BY id
        """,
        (medium.id,),
    ).fetchall()
    return [MediumUser(owner, f"layer {name}") for owner, name in rows]


def _attachment_users(conn: sqlite3.Connection, medium: Medium) -> list[MediumUser]:
    """Machines a medium (or the base under a layer) is attached to, or in a
    snapshot of: they use it (attachments.py, snapshots.py)."""
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


USER_SOURCES: list[UserSource] = [_layer_users, _attachment_users]


def _on_disk(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else blocks * 512


def _normal_variant(variant: str) -> str:
    # probe() reports a format's own variant names; the registry keeps two.
    return "fixed" if variant in ("fixed", "monolithicFlat") else "dynamic"


# -- rows, inside the caller's transaction -----------------------------------

def medium_from_row(row: tuple[Any, ...]) -> Medium:
    """A Medium from a row of COLUMNS (its current size read from the file)."""
    return Medium(*row[:10], bool(row[10]), *row[11:], current_size=_on_disk(row[3]))


def get_medium(conn: sqlite3.Connection, ref: str | int | Medium) -> Medium:
    """The medium of that name, UUID or id.  Raises NotFoundError."""
    if isinstance(ref, Medium):
        ref = ref.id
    if isinstance(ref, int):
        row = conn.execute(f"SELECT {COLUMNS} FROM media WHERE id = ?", (ref,)).fetchone()
    else:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM media WHERE name = ? OR uuid = ? ORDER BY name = ? DESC",
            (ref, ref.lower(), ref),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no medium {ref!r} is registered (see: netstore disk list)")
    return medium_from_row(row)


def medium_users(conn: sqlite3.Connection, m: Medium) -> list[MediumUser]:
    """Every machine that uses `m`, and how, from every USER_SOURCES entry."""
    return [u for source in USER_SOURCES for u in source(conn, m)]


def type_context(conn: sqlite3.Connection, m: Medium) -> TypeContext:
    """What the type rules look at: parent, child layers, users, layer owners."""
    parent = get_medium(conn, m.parent_id).name if m.parent_id is not None else None
    children = [r[0] for r in conn.execute(
        "SELECT name FROM media WHERE parent_id = ? ORDER BY id", (m.id,))]
    machines = list(dict.fromkeys(u.machine for u in medium_users(conn, m)))
    owners = [r[0] for r in conn.execute(
        "SELECT owner FROM media WHERE parent_id = ? AND owner IS NOT NULL ORDER BY id",
        (m.id,))]
    return TypeContext(m.name, m.kind, m.variant, m.type, parent, children, machines, owners)


def insert_medium(conn: sqlite3.Connection, **f: Any) -> Medium:
    """Register a row (name, file and UUID unique; the messages name the other)."""
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
    f.setdefault("created", now())
    f.setdefault("description", "")
    f.setdefault("autoreset", True)
    f.setdefault("parent_id", None)
    f.setdefault("owner", None)
    cols = [c.strip() for c in COLUMNS.split(",")][1:]
    cur = conn.execute(
        f"INSERT INTO media ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        "RETURNING id",
        [int(f[c]) if c == "autoreset" else f[c] for c in cols],
    )
    return get_medium(conn, cur.fetchall()[0][0])


class Media(Database):
    """The media of a registry (the part of :class:`netstore.registry.Registry`
    that registers images).  Methods taking ``ref`` accept a medium's name or
    UUID.  Every method raising is a refusal that changed nothing."""

    # -- reading -----------------------------------------------------------

    def medium(self, ref: str | int | Medium) -> Medium:
        """The medium of that name, UUID or id (a fresh copy of a Medium).

        Raises:
            NotFoundError: none is registered.
        """
        return get_medium(self._conn, ref)

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
        rows = self._conn.execute(f"SELECT {COLUMNS} FROM media {where} ORDER BY name").fetchall()
        return [medium_from_row(r) for r in rows]

    def children(self, ref: str | int | Medium) -> list[Medium]:
        """The layers whose parent is the medium, oldest first."""
        m = self.medium(ref)
        rows = self._conn.execute(
            f"SELECT {COLUMNS} FROM media WHERE parent_id = ? ORDER BY id", (m.id,)
        ).fetchall()
        return [medium_from_row(r) for r in rows]

    def parent_chain(self, ref: str | int | Medium) -> list[Medium]:
        """The medium and its registered parents, top first."""
        out = [self.medium(ref)]
        while out[-1].parent_id is not None:
            out.append(self.medium(out[-1].parent_id))
        return out

    def users_of(self, ref: str | int | Medium) -> list[MediumUser]:
        """Every machine that uses the medium, and how, from every USER_SOURCES entry."""
        with self.reading() as conn:
            return medium_users(conn, get_medium(conn, ref))

    def machines_of(self, ref: str | int | Medium) -> list[str]:
        """Names of the machines that use the medium, without repeats, in order."""
        return list(dict.fromkeys(u.machine for u in self.users_of(ref)))

    # -- registering -------------------------------------------------------

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
                return insert_medium(
                    conn, uuid=info.uuid or medium_uuid, name=name, location=str(path),
                    format=format, variant=variant, kind=kind, type=type,
                    virtual_size=info.virtual_size, description=description,
                )
        except BaseException:
            remove_file(path)
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
            return insert_medium(
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
                return insert_medium(
                    conn, uuid=info.uuid or new, name=name, location=str(path), format=fmt,
                    variant=_normal_variant(info.variant), kind=src.kind,
                    type=default_type(src.kind), virtual_size=info.virtual_size,
                    description=src.description,
                )
        except BaseException:
            remove_file(path)
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
            m = get_medium(conn, ref)
            ctx = type_context(conn, m)
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
            return get_medium(conn, m.id)

    def remove(self, ref: str | Medium, *, delete: bool = False) -> Medium:
        """Unregister a medium; with `delete` its file is deleted too.

        Raises:
            MediumInUseError: machines use it, or it has child layers (named).
        """
        with self.transaction() as conn:
            m = get_medium(conn, ref)
            users = medium_users(conn, m)
            if users:
                how = "; ".join(f"{u.machine} ({u.via})" for u in users)
                raise MediumInUseError(
                    f"{m.name} is used by machine {how}; a medium in use cannot be removed"
                )
            ctx = type_context(conn, m)
            if ctx.children:
                raise MediumInUseError(
                    f"{m.name} has child layers ({', '.join(ctx.children)}); remove them first"
                )
            conn.execute("DELETE FROM media WHERE id = ?", (m.id,))
        if delete:
            remove_file(m.location)
        return m


__all__ = [
    "Media",
    "Medium",
    "MediumUser",
    "USER_SOURCES",
    "UserSource",
    "EXTENSIONS",
    "get_medium",
    "insert_medium",
    "medium_from_row",
    "medium_users",
    "type_context",
]
