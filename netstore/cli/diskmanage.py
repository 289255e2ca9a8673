# netstore/cli/diskmanage.py - `netstore disk list --tree|move|release|
# compact`: the media manager's commands (netstore.registry.manager), apart
# from the registering commands of cli/disk.py.
"""The media manager on the command line: tree, move, release, compact."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.cli.common import EXIT_OK, console, print_json, registry, said
from netstore.config import Config
from netstore.disk.media import format_size

__all__ = ["add_manager_commands", "MANAGER_COMMANDS", "tree"]


def add_manager_commands(cmds: Any, common: argparse.ArgumentParser) -> None:
    p = cmds.add_parser("move", parents=[common],
                        help="move a base medium's file (and its layers') elsewhere")
    p.add_argument("name", metavar="NAME")
    p.add_argument("dest", metavar="DEST", help="a directory, or a new file name")
    p = cmds.add_parser("release", parents=[common],
                        help="detach a medium from every VM that is powered off")
    p.add_argument("name", metavar="NAME")
    p = cmds.add_parser("compact", parents=[common],
                        help="give back the zero-filled clusters of a qcow2 medium or layer")
    p.add_argument("name", metavar="NAME")


def tree(config: Config, as_json: bool) -> int:
    """`disk list --tree`: each base with its layers beneath."""
    from rich.tree import Tree

    from netstore.registry.manager import media_tree

    with registry(config) as reg:
        bases = media_tree(reg)
    if as_json:
        print_json(bases)
        return EXIT_OK
    if not bases:
        print("no media registered (netstore disk create | import)")
        return EXIT_OK
    out = console()
    for b in bases:
        used = ", ".join(b["used_by"]) or "no VM"
        snaps = f"; snapshot {', '.join(b['snapshots'])}" if b["snapshots"] else ""
        root = Tree(escape(f"{b['name']}  {b['format']} {b['type']} "
                           f"{format_size(b['virtual_size'])}  (used by {used}{snaps})  "
                           f"{b['location']}"))
        _grow(root, b)
        out.print(root)
    return EXIT_OK


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _grow(branch: Any, node: dict[str, Any]) -> None:
    for c in node["children"]:
        what = []
        if c["snapshots"]:
            what.append("snapshot " + ", ".join(c["snapshots"]))
        if c["owner"]:
            what.append(f"{c['owner']}'s own layer")
        if c["current"]:
            what.append("current state")
        _grow(branch.add(escape(f"{c['name']}  ({'; '.join(what) or 'layer'})  "
                                f"{c['location']}")), c)


def _move(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.registry.manager import move

    with registry(config) as reg:
        r = move(reg, args.name, args.dest)
    n = len(r["layers"])
    return said(as_json, r, f"moved {r['name']} to {r['location']}"
                            + (f" and its {n} layer(s) beside it" if n else ""))


def _release(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.registry.manager import release

    with registry(config) as reg:
        r = release(reg, args.name)
    slots = ", ".join(f"{x['vm']} {x['slot']}" for x in r["released"]) or "no VM"
    kept = f"; running VMs keep it: {', '.join(r['kept_by_running'])}" \
        if r["kept_by_running"] else ""
    return said(as_json, r, f"released {r['name']} from {slots}{kept}")


def _compact(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.registry.manager import compact

    with registry(config) as reg:
        r = compact(reg, args.name)
    return said(as_json, r, f"compacted {r['name']}: {format_size(r['bytes_before'])} -> "
                            f"{format_size(r['bytes_after'])} on disk")


MANAGER_COMMANDS = {"move": _move, "release": _release, "compact": _compact}
