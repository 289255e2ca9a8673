# netstore/cli/disk.py - `netstore disk create|import|list|info|modify|clone|
# convert|remove`: the media registry of the state directory, without the daemon.
"""The ``netstore disk`` commands."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.cli.common import (
    EXIT_OK,
    Command,
    ProgressBar,
    add_noun,
    console,
    on_off,
    on_or_off,
    print_fields,
    print_json,
    refusing,
    registry,
    said,
    size,
    table,
    usage,
)
from netstore.cli.diskmanage import MANAGER_COMMANDS, add_manager_commands, tree
from netstore.config import Config
from netstore.disk import layers
from netstore.disk.api import DiskError
from netstore.disk.images import FORMATS, convert
from netstore.disk.media import KINDS, TYPES, VARIANTS, format_size


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `disk` and its subcommands to ``sub``; returns its command."""
    writable = [f for f, spec in FORMATS.items() if spec.write]
    cmds = add_noun(
        sub, common, "disk", help="media: create, import, list, modify, clone, convert, remove, "
        "move, release, compact",
        description="The media registry of the state directory (works without the daemon).",
    )

    p = cmds.add_parser("create", parents=[common], help="create an empty image and register it",
                        description="Create <state_dir>/media/NAME.<ext> and register it.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--size", type=size, required=True, help="virtual size: 512M, 20G (K, M, G, T = powers of 1024)")
    p.add_argument("--format", choices=[f for f in writable if f != "vmdk"], default="qcow2")
    p.add_argument("--variant", choices=VARIANTS, default="dynamic",
                   help="dynamic grows as written; fixed is allocated now")
    p.add_argument("--kind", choices=KINDS, default="hdd")
    p.add_argument("--type", choices=TYPES, help="default normal (readonly for a dvd)")
    p.add_argument("--description", default="")

    p = cmds.add_parser("import", parents=[common], help="register an existing image",
                        description="Register an image where it lies; its format is found "
                        "from its contents.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="default: the file name without its extension")
    p.add_argument("--type", choices=TYPES)
    p.add_argument("--kind", choices=KINDS, default="hdd",
                   help="hdd (default); dvd for an ISO (raw) image, readonly")
    p.add_argument("--description", default="")

    p = cmds.add_parser("list", parents=[common], help="registered media")
    p.add_argument("--layers", action="store_true", help="list differencing layers too")
    p.add_argument("--tree", action="store_true",
                   help="each base with its layers beneath, and whose each layer is")

    p = cmds.add_parser("info", parents=[common], help="everything about one medium")
    p.add_argument("name", metavar="NAME")

    p = cmds.add_parser("modify", parents=[common], help="change type, autoreset, size, description")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", choices=TYPES)
    p.add_argument("--autoreset", type=on_off, metavar="on|off",
                   help="immutable media: discard the machine's layer at power-on")
    p.add_argument("--resize", type=size, metavar="SIZE", help="grow to SIZE, data kept")
    p.add_argument("--description")

    variants = sorted({v for f in writable for v in FORMATS[f].variants})
    p = cmds.add_parser("clone", parents=[common], help="copy a medium into a new one with a new UUID")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--format", choices=writable)
    p.add_argument("--variant", choices=variants)

    p = cmds.add_parser("convert", parents=[common], help="convert an image file (no registry)")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--format", choices=writable, required=True)
    p.add_argument("--variant", choices=variants,
                   help="default: the format's first (dynamic; streamOptimized for vmdk)")

    p = cmds.add_parser("remove", parents=[common], help="unregister a medium")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--delete", action="store_true", help="delete its file too")
    add_manager_commands(cmds, common)
    return {"disk": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run one `disk` subcommand."""
    # registry refusals are DiskErrors too
    return refusing(DiskError, lambda: _COMMANDS[args.disk_command](config, args, as_json))


def _medium_json(reg: Any, m: Any) -> dict[str, Any]:
    d = m.to_dict()
    d["used_by"] = [{"machine": u.machine, "via": u.via} for u in reg.users_of(m)]
    return d


def _described(reg: Any, m: Any, as_json: bool, text: str) -> int:
    return said(as_json, _medium_json(reg, m) if as_json else None, text)


def _bytes_text(n: int) -> str:
    return f"{format_size(n)} ({n} bytes)"


def _create(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with registry(config) as reg, ProgressBar(f"allocating {args.name}",
                                              args.variant == "fixed" and not as_json) as bar:
        m = reg.create(args.name, args.size, format=args.format, variant=args.variant,
                       kind=args.kind, type=args.type, description=args.description,
                       progress=bar)
        return _described(reg, m, as_json, f"created {m.name}: {m.format} {m.variant} {m.kind}, "
                          f"{format_size(m.virtual_size)}, {m.type}, UUID {m.uuid}, {m.location}")


def _import(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with registry(config) as reg:
        m = reg.import_image(args.file, name=args.name, type=args.type, kind=args.kind,
                             description=args.description)
        return _described(reg, m, as_json, f"registered {m.name}: {m.format} {m.variant} "
                          f"{m.kind}, {format_size(m.virtual_size)}, {m.type}, UUID {m.uuid}, "
                          f"{m.location}")


def _list(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    if args.tree:
        return tree(config, as_json)
    with registry(config) as reg:
        media = reg.media(layers=args.layers)
        if as_json:
            print_json([_medium_json(reg, m) for m in media])
            return EXIT_OK
        rows = table(("name", "uuid", "format", "variant", "kind", "type", "virtual size",
                      "current size", "used by"), no_wrap=("name", "uuid"))
        for m in media:
            machines = list(dict.fromkeys(u.machine for u in reg.users_of(m)))
            current = "missing" if m.current_size is None else format_size(m.current_size)
            rows.add_row(m.name, m.uuid, m.format, m.variant, m.kind, m.type,
                         format_size(m.virtual_size), current, ", ".join(machines) or "-")
        if not media:
            print("no media registered (netstore disk create | import)")
        else:
            console().print(rows)
    return EXIT_OK


def _info(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with registry(config) as reg:
        m = reg.medium(args.name)
        try:
            chain = layers.chain(m.location) if m.format == "qcow2" else [m.location]
        except DiskError as e:
            chain = [m.location, f"(broken: {e})"]
        children = reg.children(m)
        parent = reg.medium(m.parent_id).name if m.parent_id is not None else None
        if as_json:
            d = _medium_json(reg, m)
            d.update(parent=parent, backing_chain=chain, layers=[c.name for c in children])
            print_json(d)
            return EXIT_OK
        users = reg.users_of(m)
        print_fields([
            ("name", m.name), ("uuid", m.uuid), ("location", m.location),
            ("format", m.format), ("variant", m.variant), ("kind", m.kind), ("type", m.type),
            ("autoreset", on_or_off(m.autoreset)),
            ("virtual size", _bytes_text(m.virtual_size)),
            ("current size", "missing" if m.current_size is None
             else _bytes_text(m.current_size)),
            ("description", m.description or "-"), ("created", m.created),
            ("parent", parent or "-"), ("owner", m.owner or "-"),
            ("layers", ", ".join(c.name for c in children) or "-"),
            ("used by", "; ".join(f"{u.machine} ({u.via})" for u in users) or "-"),
        ])
        print("backing chain:")
        for depth, path in enumerate(chain):
            print(f"  {'  ' * depth}{path}")
    return EXIT_OK


def _modify(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    if args.type is None and args.autoreset is None and args.resize is None \
            and args.description is None:
        return usage("disk modify: nothing to change (--type, --autoreset, --resize, "
                     "--description)")
    with registry(config) as reg:
        m = reg.modify(args.name, type=args.type, autoreset=args.autoreset, resize=args.resize,
                       description=args.description)
        return _described(reg, m, as_json, f"{m.name}: {m.type}, autoreset "
                          f"{on_or_off(m.autoreset)}, {format_size(m.virtual_size)}")


def _clone(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with registry(config) as reg, ProgressBar(f"cloning {args.src}", not as_json) as bar:
        m = reg.clone(args.src, args.dst, format=args.format, variant=args.variant, progress=bar)
        return _described(reg, m, as_json, f"cloned {args.src} to {m.name}: {m.format} "
                          f"{m.variant}, UUID {m.uuid}, {m.location}")


def _convert(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    variant = args.variant or FORMATS[args.format].variants[0]
    with ProgressBar(f"converting {args.input}", not as_json) as bar:
        info = convert(args.input, args.output, args.format, variant=variant, progress=bar)
    return said(as_json, {"path": info.path, "format": info.format, "variant": info.variant,
                          "virtual_size": info.virtual_size, "file_size": info.file_size,
                          "uuid": info.uuid},
                f"converted {args.input} to {info.path} ({info.format} {info.variant})")


def _remove(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with registry(config) as reg:
        m = reg.remove(args.name, delete=args.delete)
    return said(as_json, {"removed": m.name, "uuid": m.uuid, "deleted": args.delete,
                          "location": m.location},
                f"removed {m.name}" + (f" and deleted {m.location}" if args.delete else
                                       f" (file kept: {m.location})"))


_COMMANDS: dict[str, Command] = {
    "create": _create,
    "import": _import,
    "list": _list,
    "info": _info,
    "modify": _modify,
    "clone": _clone,
    "convert": _convert,
    "remove": _remove,
    **MANAGER_COMMANDS,
}
