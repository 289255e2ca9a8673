# Layers of media in the registry (semantics.md section 1): the current top a
# machine writes on a normal (writethrough, shareable) medium, and each
# machine's own differencing layers on an immutable or multiattach medium:
# made on first use, reset at power-on (immutable with autoreset), discarded
# when the machine lets go.  The functions work inside the caller's
# transaction (machines, attachments and snapshots call them); Layers adds
# the public, one-transaction-each methods of the Registry.
"""Per-machine differencing layers and the current top of a medium."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import uuid as uuidlib
from pathlib import Path

from netstore.disk import layers as disk_layers
from netstore.disk.media import LAYERED_TYPES, MediumRuleError
from netstore.registry.db import now, remove_file
from netstore.registry.errors import MediumInUseError, RegistryError
from netstore.registry.media import (
    COLUMNS,
    Media,
    Medium,
    get_medium,
    insert_medium,
    medium_from_row,
)

# Formats a differencing layer can stand on (its backing format).
LAYER_BASE_FORMATS = ("raw", "qcow2")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def machine_dir_name(machine: str) -> str:
    """A directory name for `machine` (an IQN has ':'); a hash keeps two names
    that differ only in unsafe characters apart."""
    safe = _UNSAFE.sub("_", machine)[:96]
    if safe != machine or not safe or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(machine.encode()).hexdigest()[:10]}"
    return safe


# -- inside the caller's transaction -----------------------------------------

def layered_base(conn: sqlite3.Connection, ref: str | Medium, machine: str) -> Medium:
    """The medium, checked to take per-machine layers (immutable/multiattach, raw/qcow2)."""
    m = get_medium(conn, ref)
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


def machine_top(conn: sqlite3.Connection, m: Medium, machine: str) -> Medium | None:
    """The layer `machine` writes on `m` (its newest own layer), None before its first."""
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
        SELECT {COLUMNS} FROM media WHERE id IN (SELECT id FROM sub) ORDER BY id DESC LIMIT 1
        """,
        (m.id, machine, machine),
    ).fetchone()
    return None if row is None else medium_from_row(row)


def _make_layer(conn: sqlite3.Connection, diffs_dir: Path, m: Medium, machine: str,
                row: Medium | None) -> Path:
    # A new empty layer where `row` (the machine's top) was, on the same
    # parent; the machine's first layer on `m` when there is none.
    if row is None:
        path = diffs_dir / machine_dir_name(machine) / f"{m.uuid}.qcow2"
        parent_location = m.location
    else:
        path = Path(row.location)
        parent_location = get_medium(conn, row.parent_id).location  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path):
        disk_layers.discard(str(path))  # refuses anything but a qcow2 layer
    disk_layers.create_child(parent_location, str(path))
    try:
        if row is None:
            insert_medium(
                conn, uuid=str(uuidlib.uuid4()), name=f"{m.name}@{machine}",
                location=str(path), format="qcow2", variant="dynamic", kind=m.kind,
                type="normal", virtual_size=m.virtual_size, parent_id=m.id, owner=machine,
            )
        else:
            conn.execute("UPDATE media SET created = ? WHERE id = ?", (now(), row.id))
    except BaseException:
        remove_file(path)
        raise
    return path


def machine_layer(conn: sqlite3.Connection, diffs_dir: Path, ref: str | Medium,
                  machine: str) -> Path:
    """`machine`'s layer on the medium, made (and registered) on first use."""
    m = layered_base(conn, ref, machine)
    row = machine_top(conn, m, machine)
    if row is not None and os.path.exists(row.location):
        return Path(row.location)
    return _make_layer(conn, diffs_dir, m, machine, row)


def reset_machine_layer(conn: sqlite3.Connection, diffs_dir: Path, ref: str | Medium,
                        machine: str) -> Path:
    """A new empty layer in place of `machine`'s top (on the same parent)."""
    m = layered_base(conn, ref, machine)
    return _make_layer(conn, diffs_dir, m, machine, machine_top(conn, m, machine))


def power_on_layer(conn: sqlite3.Connection, diffs_dir: Path, ref: str | Medium,
                   machine: str) -> Path:
    """The layer `machine` uses after a power-on: reset for immutable with autoreset."""
    m = get_medium(conn, ref)
    if m.type == "immutable" and m.autoreset:
        return reset_machine_layer(conn, diffs_dir, m, machine)
    return machine_layer(conn, diffs_dir, m, machine)


def drop_machine_layer(conn: sqlite3.Connection, ref: str | Medium,
                       machine: str) -> Medium | None:
    """Unregister `machine`'s layer on the medium; the caller deletes the file after the commit."""
    m = get_medium(conn, ref)
    row = machine_top(conn, m, machine)
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


def current_top_medium(conn: sqlite3.Connection, m: Medium) -> Medium:
    """The newest of `m`'s snapshot layers (layers with no owner), or `m` itself."""
    row = conn.execute(
        f"""
        WITH RECURSIVE sub(id) AS (
            SELECT ? UNION SELECT c.id FROM media c JOIN sub ON c.parent_id = sub.id
            WHERE c.owner IS NULL
        )
        SELECT {COLUMNS} FROM media WHERE id IN (SELECT id FROM sub) ORDER BY id DESC LIMIT 1
        """,
        (m.id,),
    ).fetchone()
    return medium_from_row(row)


class Layers(Media):
    """The media of a registry with their layers: what the iSCSI exports ask
    (which file a machine writes).  Each method is one transaction."""

    def layer_path(self, ref: str | Medium, machine: str) -> Path:
        """Where `machine`'s layer on the medium lives (whether or not it exists):
        ``<state_dir>/media/diffs/<machine-safe-name>/<medium-uuid>.qcow2``, or
        the machine's newest layer there once snapshots stacked more."""
        with self.reading() as conn:
            m = get_medium(conn, ref)
            top = machine_top(conn, m, machine)
        if top is not None:
            return Path(top.location)
        return self.diffs_dir / machine_dir_name(machine) / f"{m.uuid}.qcow2"

    def layer_for(self, ref: str | Medium, machine: str) -> Path:
        """`machine`'s differencing layer on an immutable or multiattach medium,
        created (and registered, owner=machine) on first use.

        Raises:
            MediumRuleError: the medium is not immutable/multiattach, or not raw/qcow2.
        """
        with self.transaction() as conn:
            return machine_layer(conn, self.diffs_dir, ref, machine)

    def reset_layer(self, ref: str | Medium, machine: str) -> Path:
        """Discard `machine`'s layer on the medium and start an empty one (an
        immutable medium's autoreset).  The caller has closed the layer.

        Raises:
            MediumRuleError: as layer_for.
        """
        with self.transaction() as conn:
            return reset_machine_layer(conn, self.diffs_dir, ref, machine)

    def layer_at_power_on(self, ref: str | Medium, machine: str) -> Path:
        """The layer `machine` uses after a power-on: reset for an immutable
        medium with autoreset on, kept otherwise (multiattach, autoreset off).
        A reset returns to the machine's current snapshot: the new empty layer
        stands on the layer its snapshot froze (snapshots.py)."""
        with self.transaction() as conn:
            return power_on_layer(conn, self.diffs_dir, ref, machine)

    def discard_layer(self, ref: str | Medium, machine: str) -> bool:
        """Unregister and delete `machine`'s layer on the medium (the machine is
        gone or detached).  Returns whether there was one.

        Raises:
            MediumInUseError: the layer has child layers (a snapshot froze it).
        """
        with self.transaction() as conn:
            row = drop_machine_layer(conn, ref, machine)
        if row is None:
            return False
        remove_file(row.location)
        return True

    def current_top(self, ref: str | Medium) -> Path:
        """Where a machine writes a normal (writethrough, shareable) medium: the
        top of its tree of snapshot layers (layers with no owner): the newest
        of them, or the medium itself when it has none.  Taking, restoring and
        deleting snapshots keep the current state the newest (snapshots.py).

        Raises:
            MediumRuleError: an immutable or multiattach medium (use layer_for).
        """
        with self.reading() as conn:
            m = get_medium(conn, ref)
            if m.type in LAYERED_TYPES:
                raise MediumRuleError(
                    f"{m.name} is {m.type}; each machine writes its own layer on it"
                )
            return Path(current_top_medium(conn, m).location)


__all__ = [
    "Layers",
    "LAYER_BASE_FORMATS",
    "machine_dir_name",
    "layered_base",
    "machine_top",
    "machine_layer",
    "reset_machine_layer",
    "power_on_layer",
    "drop_machine_layer",
    "current_top_medium",
]
