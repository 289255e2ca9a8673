# netstore/registry/manager.py - the media manager, as VirtualBox's: the tree
# of each base medium with its differencing layers and whose each layer is
# (`disk list --tree`), releasing a medium from every VM that is off (`disk
# release`), moving a base medium's file and its layers' files elsewhere
# with every backing reference rewritten (`disk move`), and giving back the
# zero-filled clusters of a qcow2 medium or layer (`disk compact`). A medium a
# running VM uses is never moved or compacted: its file is open in the target.
"""Media manager: tree, release, move, compact."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from netstore.disk.compact import compact_qcow2, compact_vdi
from netstore.disk.qcow2.image import rename_backing
from netstore.registry.errors import MediumInUseError, MediumRuleError, RegistryError
from netstore.registry.layers import Layers
from netstore.registry.machines import Machines
from netstore.registry.media import COLUMNS, Medium, get_medium, medium_from_row, medium_users
from netstore.registry.vm import get_machine

__all__ = ["compact", "media_tree", "move", "release"]

# Where a moved base's layers go: a directory beside it, named after it.
LAYERS_DIR_SUFFIX = ".layers"


def _subtree(conn: sqlite3.Connection, base: Medium) -> list[Medium]:
    """``base`` and every layer above it, parents before children."""
    rows = conn.execute(
        f"""
        WITH RECURSIVE sub(id, depth) AS (
            SELECT ?, 0 UNION SELECT m.id, sub.depth + 1 FROM media m JOIN sub
            ON m.parent_id = sub.id
        )
        SELECT {COLUMNS} FROM media JOIN sub USING (id) ORDER BY sub.depth, media.id
        """, (base.id,)).fetchall()
    return [medium_from_row(r) for r in rows]


def _running_users(conn: sqlite3.Connection, m: Medium) -> list[str]:
    names = dict.fromkeys(u.machine for u in medium_users(conn, m))
    return [n for n in names if get_machine(conn, n).running]


def _refuse_running(conn: sqlite3.Connection, m: Medium, what: str) -> None:
    running = _running_users(conn, m)
    if running:
        raise MediumInUseError(
            f"{m.name} is used by running VM {', '.join(running)}; it is {what} only while "
            f"no running VM uses it (netstore vm stop {running[0]})")


# -- the tree ----------------------------------------------------------------------------
def media_tree(reg: Layers) -> list[dict[str, Any]]:
    """Each base medium with its layers beneath (``children``), and what each
    layer is: a snapshot's (``snapshots``), a VM's own (``owner``), the
    current state of the VMs using a normal medium (``current``)."""
    with reg.reading() as conn:
        snaps: dict[int, list[str]] = {}
        for lid, snap, vm in conn.execute(
                "SELECT sm.layer_id, s.name, m.name FROM snapshot_media sm JOIN snapshots s "
                "ON s.id = sm.snapshot_id JOIN machines m ON m.id = s.machine_id ORDER BY s.id"):
            snaps.setdefault(lid, []).append(f"{snap} of {vm}")
        out = []
        for r in conn.execute(f"SELECT {COLUMNS} FROM media WHERE parent_id IS NULL "
                              "ORDER BY name").fetchall():
            base = medium_from_row(r)
            tree = _subtree(conn, base)
            nodes = {m.id: _node(m, snaps) for m in tree}
            for m in tree[1:]:
                assert m.parent_id is not None
                nodes[m.parent_id]["children"].append(nodes[m.id])
            top = nodes[base.id]
            top["used_by"] = list(dict.fromkeys(u.machine for u in medium_users(conn, base)))
            _mark_current(top)
            out.append(top)
    return out


def _node(m: Medium, snaps: dict[int, list[str]]) -> dict[str, Any]:
    return {"name": m.name, "uuid": m.uuid, "location": m.location, "format": m.format,
            "type": m.type, "virtual_size": m.virtual_size, "current_size": m.current_size,
            "owner": m.owner, "snapshots": snaps.get(m.id, []), "current": False,
            "children": []}


def _mark_current(node: dict[str, Any]) -> None:
    """The newest unowned leaf of a tree is where its normal medium is written."""
    leaves: list[dict[str, Any]] = []

    def walk(n: dict[str, Any]) -> None:
        if n["owner"] is None:
            if not [c for c in n["children"] if c["owner"] is None]:
                leaves.append(n)
            for c in n["children"]:
                walk(c)

    walk(node)
    if leaves and node["type"] not in ("immutable", "multiattach"):
        leaves[-1]["current"] = True


# -- release -------------------------------------------------------------------------------
def release(reg: Layers, name: str) -> dict[str, Any]:
    """Detach the medium from every VM that is powered off; the slots it was
    taken out of, and the running VMs that keep it."""
    machines = Machines(reg)
    with reg.reading() as conn:
        m = get_medium(conn, name)
        if m.parent_id is not None:
            raise MediumRuleError(f"{m.name} is a differencing layer; release its base medium")
        rows = conn.execute(
            "SELECT vm.name, vm.power, c.name, a.port, a.device FROM attachments a "
            "JOIN controllers c ON c.id = a.controller_id JOIN machines vm "
            "ON vm.id = c.machine_id WHERE a.medium_id = ? ORDER BY vm.name, c.name, a.port",
            (m.id,)).fetchall()
    released, kept = [], []
    for vm, power, ctl, port, device in rows:
        if power == "running":
            kept.append(vm)
            continue
        machines.detach(vm, ctl, port, device=device)
        released.append({"vm": vm, "slot": f"{ctl}:{port}:{device}"})
    return {"name": m.name, "released": released, "kept_by_running": sorted(set(kept))}


# -- move ------------------------------------------------------------------------------------
def move(reg: Layers, name: str, dest: str) -> dict[str, Any]:
    """Move a base medium's file to ``dest`` (a directory, or a new file
    name in an existing one) and its layers' files into ``<new file>.layers/``
    beside it; every backing reference is rewritten; the registry follows.
    On failure everything is put back as it was."""
    with reg.transaction() as conn:
        base = get_medium(conn, name)
        if base.parent_id is not None:
            raise MediumRuleError(f"{base.name} is a differencing layer; move its base medium "
                                  "(its layers move with it)")
        _refuse_running(conn, base, "moved")
        target = Path(dest).expanduser().absolute()
        new_base = target / Path(base.location).name if target.is_dir() else target
        if not new_base.parent.is_dir():
            raise RegistryError(f"{new_base.parent} is not a directory")
        if os.path.lexists(new_base):
            raise RegistryError(f"{new_base} exists already; nothing moved")
        tree = _subtree(conn, base)
        new_dir = Path(f"{new_base}{LAYERS_DIR_SUFFIX}")
        places = {base.id: str(new_base)}
        for m in tree[1:]:
            places[m.id] = str(new_dir / Path(m.location).name)
        done: list[tuple[str, str]] = []
        try:
            if len(tree) > 1:
                new_dir.mkdir(exist_ok=True)
            for m in tree:
                _move_file(m.location, places[m.id])
                done.append((m.location, places[m.id]))
            for m in tree[1:]:  # each names its parent's new place, absolute
                assert m.parent_id is not None
                rename_backing(places[m.id], places[m.parent_id], _format(base, m.parent_id))
            for m in tree:
                conn.execute("UPDATE media SET location = ? WHERE id = ?",
                             (places[m.id], m.id))
        except BaseException:
            by_id = {m.id: m for m in tree}
            for old, new in reversed(done):
                _move_file(new, old)
            for m in tree[1:]:  # the old references (absolute), where one was rewritten
                if m.parent_id is not None:
                    try:
                        rename_backing(m.location, by_id[m.parent_id].location,
                                       _format(base, m.parent_id))
                    except Exception:
                        pass
            raise
    return {"name": base.name, "location": str(new_base),
            "layers": [places[m.id] for m in tree[1:]]}


def _format(base: Medium, parent_id: int) -> str:
    """The format of a layer's parent: the base's own, or a layer's (qcow2)."""
    return base.format if parent_id == base.id else "qcow2"


def _move_file(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != 18:  # EXDEV: another file system; copy, then remove
            raise RegistryError(f"moving {src} to {dst}: {e.strerror}") from None
        shutil.copy2(src, dst)
        os.unlink(src)


# -- compact ------------------------------------------------------------------------------
def compact(reg: Layers, name: str) -> dict[str, Any]:
    """Give back the zero-filled clusters of a qcow2 medium or layer, or a dynamic VDI."""
    with reg.transaction() as conn:  # held: no VM starts on it meanwhile
        m = get_medium(conn, name)
        if m.format not in ("qcow2", "vdi"):
            raise MediumRuleError(
                f"{m.name} is a {m.format} image; disk compact gives back clusters of qcow2 "
                f"and VDI (convert it: netstore disk clone {m.name} NEW --format qcow2)")
        _refuse_running(conn, m, "compacted")
        before, after = (compact_qcow2 if m.format == "qcow2" else compact_vdi)(m.location)
    return {"name": m.name, "bytes_before": before, "bytes_after": after}
