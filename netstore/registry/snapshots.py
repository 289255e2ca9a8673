# Snapshots of a machine: a tree (parent snapshot, the machine's current
# snapshot), and per snapshot the layer it froze for each disk.
#
# Layers (semantics.md section 1; VirtualBox's model):
# - normal disks: the medium's snapshot layers have no owner; the one written
#   is the newest (layers.py current_top).  `take` freezes the current top and
#   puts a new empty layer on it; `restore` drops the current state and puts a
#   new empty layer on the snapshot's layer; `delete` merges the snapshot's
#   layer with its one child, so every state left keeps every byte.
# - immutable and multiattach disks: the same on the machine's own layers
#   (owner = the machine); so a power-on reset of an immutable disk (a new
#   empty layer on the top's parent) returns to the current snapshot's state.
# - writethrough, shareable, readonly disks are not in snapshots.
# - a live snapshot (the daemon's runner, the VM paused and its QEMU's writes
#   flushed) is taken the same way on normal disks, and may keep the VM's
#   memory and device state in a file; restoring such a snapshot leaves the
#   VM "saved": its next start resumes that state.  Immutable and multiattach
#   disks (the machine's own layers) are not frozen live.
# Every operation creates its new layers last, so "the newest layer is the
# current state" holds; file work happens inside the registry's write
# transaction (one writer at a time), new files are removed if it fails.
"""Snapshots: take, restore, delete, list."""

from __future__ import annotations

import os
import sqlite3
import uuid as uuidlib
from dataclasses import asdict, dataclass
from typing import Any

from netstore.disk import layers
from netstore.disk.images import probe
from netstore.disk.media import LAYERED_TYPES, NAME_RE
from netstore.disk.qcow2 import Qcow2Image
from netstore.registry.attachments import attachments_of
from netstore.registry.db import now, remove_file
from netstore.registry.errors import (
    MachineRuleError,
    MachineStateError,
    MediumRuleError,
    NameTakenError,
    NotFoundError,
)
from netstore.registry.layers import (
    LAYER_BASE_FORMATS,
    Layers,
    current_top_medium,
    machine_dir_name,
    machine_layer,
    machine_top,
)
from netstore.registry.media import Medium, get_medium, insert_medium
from netstore.registry.vm import Machine, get_machine

# Types whose state a snapshot keeps (semantics.md section 1, "snapshots").
SNAPSHOT_TYPES = ("normal", *LAYERED_TYPES)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot: ``disks`` maps each medium it keeps to the layer holding
    its state then."""

    name: str
    uuid: str
    parent: str | None
    created: str
    description: str
    current: bool
    disks: dict[str, str]
    state_file: str | None = None  # the VM's memory and device state (a live snapshot)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Snapshots:
    """Snapshots of the registry's machines (``Snapshots(reg)``, or through
    ``reg.machines.take_snapshot`` and friends)."""

    def __init__(self, reg: Layers) -> None:
        self.reg = reg

    def _get(self, conn: sqlite3.Connection, vm: Machine, name: str) -> tuple[Any, ...]:
        row = conn.execute("SELECT id, name, parent_id FROM snapshots WHERE machine_id = ? "
                           "AND name = ?", (vm.id, name)).fetchone()
        if row is None:
            raise NotFoundError(f"{vm.name} has no snapshot {name!r}")
        return row

    def list(self, machine: str) -> list[Snapshot]:
        """The VM's snapshots, oldest first."""
        with self.reg.reading() as conn:
            vm = get_machine(conn, machine)
            rows = conn.execute(
                "SELECT s.id, s.name, s.uuid, p.name, s.created, s.description, s.state_file "
                "FROM snapshots s "
                "LEFT JOIN snapshots p ON p.id = s.parent_id WHERE s.machine_id = ? "
                "ORDER BY s.id", (vm.id,)).fetchall()
            out = []
            for sid, name, u, parent, created, desc, state in rows:
                disks = dict(conn.execute(
                    "SELECT m.name, l.name FROM snapshot_media sm JOIN media m "
                    "ON m.id = sm.medium_id JOIN media l ON l.id = sm.layer_id "
                    "WHERE sm.snapshot_id = ? ORDER BY m.name", (sid,)).fetchall())
                out.append(Snapshot(name, u, parent, created, desc,
                                    vm.current_snapshot == name, disks, state))
        return out

    def _refuse_running(self, vm: Machine, what: str) -> None:
        if vm.running:
            raise MachineStateError(
                f"{vm.name} is running; a snapshot is {what} only while it is powered off "
                f"(netstore vm stop {vm.name})"
            )

    def _top(self, conn: sqlite3.Connection, m: Medium, vm: Machine) -> Medium:
        if m.type in LAYERED_TYPES:
            top = machine_top(conn, m, vm.name)
            if top is None:  # never powered on: its first layer now
                machine_layer(conn, self.reg.diffs_dir, m, vm.name)
                top = machine_top(conn, m, vm.name)
            assert top is not None
            return top
        return current_top_medium(conn, m)

    def _new_layer(self, conn: sqlite3.Connection, base: Medium, parent: Medium, vm: Machine,
                   made: list[str]) -> Medium:
        # an empty layer on `parent`, registered as a layer of `base`'s tree
        u = str(uuidlib.uuid4())
        owner = vm.name if base.type in LAYERED_TYPES else None
        where = self.reg.diffs_dir if owner else self.reg.media_dir / "snapshots"
        path = where / machine_dir_name(vm.name) / f"{u}.qcow2"
        path.parent.mkdir(parents=True, exist_ok=True)
        layers.freeze(parent.location, str(path))
        made.append(str(path))
        name = f"{base.name}@{vm.name}~{u[:8]}" if owner else f"{base.name}@{u[:8]}"
        return insert_medium(
            conn, uuid=u, name=name, location=str(path), format="qcow2", variant="dynamic",
            kind=base.kind, type="normal", virtual_size=base.virtual_size, parent_id=parent.id,
            owner=owner,
        )

    def take(self, machine: str, name: str, description: str = "", *, live: bool = False,
             state_file: str | None = None) -> Snapshot:
        """Freeze the state of every normal, immutable and multiattach disk of
        the powered-off VM: its current top layer becomes the snapshot's, and
        a new empty layer goes on top.  The snapshot becomes the current one,
        a child of the one that was.  ``live``: the VM may run (its QEMU is
        paused and flushed by the caller), normal disks only; ``state_file``
        holds its memory and device state.

        Raises:
            MachineStateError: the VM runs.
            NameTakenError: the VM has a snapshot of that name.
            MachineRuleError: a normal disk is attached to another VM too.
            MediumRuleError: a disk is not raw or qcow2 (a layer cannot stand on it).
        """
        if not NAME_RE.fullmatch(name):
            raise MachineRuleError(
                f"{name!r} is not a snapshot name (1-64 letters, digits, '.', '_', '-')"
            )
        made: list[str] = []
        try:
            with self.reg.transaction() as conn:
                vm = get_machine(conn, machine)
                if not live:
                    self._refuse_running(vm, "taken")
                if conn.execute("SELECT 1 FROM snapshots WHERE machine_id = ? AND name = ?",
                                (vm.id, name)).fetchone():
                    raise NameTakenError(f"{machine} has a snapshot named {name} already")
                cur = conn.execute(
                    "SELECT current_snapshot_id FROM machines WHERE id = ?", (vm.id,)
                ).fetchone()[0]
                sid = conn.execute(
                    "INSERT INTO snapshots (machine_id, uuid, name, parent_id, description, "
                    "created, state_file) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (vm.id, str(uuidlib.uuid4()), name, cur, description, now(),
                     state_file)).fetchall()[0][0]
                for a in attachments_of(conn, vm):
                    m = get_medium(conn, a.medium)
                    if m.type not in SNAPSHOT_TYPES:
                        continue
                    if live and vm.running and m.type in LAYERED_TYPES:
                        raise MachineRuleError(
                            f"disk {m.name} of {machine} is {m.type}; a snapshot of a running "
                            f"VM freezes normal disks only (netstore vm stop {machine} first)"
                        )
                    if m.format not in LAYER_BASE_FORMATS:
                        raise MediumRuleError(
                            f"disk {m.name} is a {m.format} image; a snapshot layer stands on "
                            f"raw or qcow2 only (convert it: netstore disk clone {m.name} NEW "
                            "--format qcow2)"
                        )
                    if m.type == "normal":
                        other = conn.execute(
                            "SELECT vm.name FROM attachments a JOIN machines vm "
                            "ON vm.id = a.machine_id WHERE a.medium_id = ? AND vm.id != ? "
                            "ORDER BY vm.name LIMIT 1", (m.id, vm.id)).fetchone()
                        if other:
                            raise MachineRuleError(
                                f"disk {m.name} is attached to VM {other[0]} too; a snapshot "
                                f"of {machine} would change {other[0]}'s disk (detach it there)"
                            )
                    frozen = self._top(conn, m, vm)
                    self._new_layer(conn, m, frozen, vm, made)
                    conn.execute("INSERT INTO snapshot_media (snapshot_id, medium_id, layer_id) "
                                 "VALUES (?, ?, ?)", (sid, m.id, frozen.id))
                conn.execute("UPDATE machines SET current_snapshot_id = ? WHERE id = ?",
                             (sid, vm.id))
        except BaseException:
            for p in made:
                remove_file(p)
            raise
        return next(s for s in self.list(machine) if s.name == name)

    def _droppable(self, conn: sqlite3.Connection, top: Medium, keep: Medium) -> bool:
        # the current state's own layer: not a snapshot's, not under anything
        return (top.id != keep.id and top.parent_id is not None
                and not conn.execute("SELECT 1 FROM snapshot_media WHERE layer_id = ?",
                                     (top.id,)).fetchone()
                and not conn.execute("SELECT 1 FROM media WHERE parent_id = ?",
                                     (top.id,)).fetchone())

    def restore(self, machine: str, name: str) -> Snapshot:
        """Return every disk the snapshot keeps to its state then: the current
        state's layer is dropped and a new empty layer goes on the snapshot's
        layer.  Writethrough and shareable disks keep what was written; disks
        attached after the snapshot are left as they are.

        Raises:
            MachineStateError: the VM runs.
            NotFoundError: no such snapshot.
        """
        made: list[str] = []
        dropped: list[str] = []
        try:
            with self.reg.transaction() as conn:
                vm = get_machine(conn, machine)
                self._refuse_running(vm, "restored")
                sid = self._get(conn, vm, name)[0]
                for mid, lid in conn.execute(
                        "SELECT medium_id, layer_id FROM snapshot_media WHERE snapshot_id = ? "
                        "ORDER BY medium_id", (sid,)).fetchall():
                    m, frozen = get_medium(conn, mid), get_medium(conn, lid)
                    top = self._top(conn, m, vm)
                    if self._droppable(conn, top, frozen):
                        conn.execute("DELETE FROM media WHERE id = ?", (top.id,))
                        dropped.append(top.location)
                    self._new_layer(conn, m, frozen, vm, made)
                state = conn.execute("SELECT state_file FROM snapshots WHERE id = ?",
                                     (sid,)).fetchone()[0]
                conn.execute("UPDATE machines SET current_snapshot_id = ?, saved_state = ?, "
                             "aborted = NULL WHERE id = ?", (sid, state, vm.id))
        except BaseException:
            for p in made:
                remove_file(p)
            raise
        for p in dropped:
            remove_file(p)
        return next(s for s in self.list(machine) if s.name == name)

    def delete(self, machine: str, name: str) -> None:
        """Delete a snapshot without losing data: per disk, the snapshot's
        layer is merged with its one child (the layer folds into the child; the
        base medium instead takes its child's clusters).  Its child snapshots
        move to its parent; if it was current, its parent becomes current.

        Raises:
            MachineStateError: the VM runs.
            NotFoundError: no such snapshot.
            MachineRuleError: the snapshot has two or more children (snapshots,
                or the current state), named.
        """
        later: list[str] = []
        with self.reg.transaction() as conn:
            vm = get_machine(conn, machine)
            self._refuse_running(vm, "deleted")
            sid, _, parent_sid = self._get(conn, vm, name)
            kids = [r[0] for r in conn.execute(
                "SELECT name FROM snapshots WHERE parent_id = ? ORDER BY id", (sid,))]
            cur = conn.execute("SELECT current_snapshot_id FROM machines WHERE id = ?",
                               (vm.id,)).fetchone()[0]
            if cur == sid:
                kids.append("the current state")
            if len(kids) > 1:
                raise MachineRuleError(
                    f"snapshot {name} of {machine} has {len(kids)} children "
                    f"({', '.join(kids)}); a snapshot is deleted only with one child at most "
                    f"(delete {kids[0] if kids[0] != 'the current state' else kids[1]} first)"
                )
            records = conn.execute("SELECT medium_id, layer_id FROM snapshot_media "
                                   "WHERE snapshot_id = ?", (sid,)).fetchall()
            conn.execute("DELETE FROM snapshot_media WHERE snapshot_id = ?", (sid,))
            for mid, lid in records:
                later += self._merge_away(conn, get_medium(conn, mid),
                                          get_medium(conn, lid))
            conn.execute("UPDATE snapshots SET parent_id = ? WHERE parent_id = ?",
                         (parent_sid, sid))
            if cur == sid:
                conn.execute("UPDATE machines SET current_snapshot_id = ? WHERE id = ?",
                             (parent_sid, vm.id))
            state = conn.execute("SELECT state_file FROM snapshots WHERE id = ?",
                                 (sid,)).fetchone()[0]
            if state is not None:
                conn.execute("UPDATE machines SET saved_state = NULL WHERE id = ? AND "
                             "saved_state = ?", (vm.id, state))
                later.append(state)
            conn.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
        for p in later:
            remove_file(p)

    def _merge_away(self, conn: sqlite3.Connection, m: Medium, frozen: Medium) -> list[str]:
        """Remove `frozen` (no snapshot refers to it any more) from `m`'s tree
        keeping every state above it; returns the files to delete after commit."""
        if conn.execute("SELECT 1 FROM snapshot_media WHERE layer_id = ?",
                        (frozen.id,)).fetchone():
            return []  # another snapshot still keeps this state
        kids = [get_medium(conn, r[0]) for r in conn.execute(
            "SELECT id FROM media WHERE parent_id = ? ORDER BY id", (frozen.id,))]
        if frozen.parent_id is None:  # the medium itself
            if len(kids) != 1 or kids[0].owner is not None:
                return []  # other layers (or machines) stand on it: it stays as it is
            return self._merge_child_into_base(conn, frozen, kids[0])
        if not kids:
            conn.execute("DELETE FROM media WHERE id = ?", (frozen.id,))
            return [frozen.location]
        if len(kids) > 1:
            raise MachineRuleError(
                f"layer {frozen.name} of disk {m.name} has {len(kids)} child layers; "
                "delete the later snapshots first"
            )
        child = kids[0]
        layers.merge_parent_into_child(child.location)
        conn.execute("UPDATE media SET parent_id = ? WHERE id = ?", (frozen.parent_id, child.id))
        conn.execute("DELETE FROM media WHERE id = ?", (frozen.id,))
        return [frozen.location]

    def _merge_child_into_base(self, conn: sqlite3.Connection, base: Medium,
                               child: Medium) -> list[str]:
        # The child's clusters go into the base (the base's own file: a normal
        # medium is written anyway); the child's children are rebased onto the
        # base once it holds them, then the child goes.  A second name keeps
        # the child's file for them until they are rebased.
        keep = f"{child.location}.merging"
        remove_file(keep)
        os.link(child.location, keep)
        layers.merge_into_parent(keep)
        fmt = probe(base.location).format
        grandkids = [get_medium(conn, r[0]) for r in conn.execute(
            "SELECT id FROM media WHERE parent_id = ?", (child.id,))]
        for g in grandkids:
            with Qcow2Image(g.location) as img:
                img.set_backing(os.path.abspath(base.location), fmt)
                img.flush()
            conn.execute("UPDATE media SET parent_id = ? WHERE id = ?", (base.id, g.id))
        conn.execute("UPDATE snapshot_media SET layer_id = ? WHERE layer_id = ?",
                     (base.id, child.id))
        conn.execute("DELETE FROM media WHERE id = ?", (child.id,))
        return [child.location]


__all__ = ["Snapshots", "Snapshot", "SNAPSHOT_TYPES"]
