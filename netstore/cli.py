# netstore/cli.py - the `netstore` command: argument parsing and output only.
#
# Exit statuses (interface.md): 0 success, 1 a refused operation (one line on
# stderr), 2 a usage or configuration error. Every command takes --config FILE
# (or NETSTORE_CONFIG) and --json, before or after the command name.
"""The netstore command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from netstore import __version__
from netstore.config import Config, ConfigError, default_config, load_config

__all__ = ["main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
CONFIG_ENV = "NETSTORE_CONFIG"

class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see: {self.prog} --help)")


def _common() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's copy from overwriting a value given before
    # the command name (`netstore --json status` and `netstore status --json`).
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"daemon configuration file (TOML; default: ${CONFIG_ENV}, else built-in defaults)",
    )
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the netstore command."""
    common = _common()
    parser = _Parser(
        prog="netstore",
        description="netstore: an iSCSI target with VirtualBox-style disk modes and a "
        "learning virtual switch.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"netstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser(
        "serve",
        parents=[common],
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGINT/SIGTERM; SIGHUP "
        "re-reads the configuration file.",
    )
    sub.add_parser(
        "status",
        parents=[common],
        help="show the running daemon's targets, sessions and connections",
    )
    _add_disk_commands(sub, common)
    _add_switch_commands(sub, common)
    _add_vm_commands(sub, common)
    _add_ovf_commands(sub, common)
    return parser


def _load(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    if not path:
        return default_config()
    # Only the daemon opens the images; other commands need not find them.
    return load_config(path, check_paths=args.command == "serve")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the netstore command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        print(f"netstore: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = _load(args)
    except ConfigError as e:
        print(f"netstore: {e}", file=sys.stderr)
        return EXIT_USAGE
    as_json = getattr(args, "json", False)
    if args.command == "serve":
        from netstore.daemon import serve

        return serve(config)
    if args.command == "status":
        return _status(config, as_json)
    if args.command == "disk":
        from netstore.disk.api import DiskError

        try:
            return _DISK_COMMANDS[args.disk_command](config, args, as_json)
        except DiskError as e:  # registry refusals are DiskErrors too
            print(f"netstore: {e}", file=sys.stderr)
            return EXIT_REFUSED
    if args.command in ("vm", "host"):
        return _vm_or_host(config, args, as_json)
    if args.command == "switch":
        return _switch(config, args, as_json)
    if args.command == "capture":
        return _capture(config, args)
    if args.command == "ovf":
        return _ovf(config, args, as_json)
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts it


# -- netstore disk ---------------------------------------------------------

def _size(text: str) -> int:
    from netstore.disk.media import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "yes", "true", "1"):
        return True
    if text.lower() in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def _add_disk_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from netstore.disk.images import FORMATS
    from netstore.disk.media import KINDS, TYPES, VARIANTS

    writable = [f for f, spec in FORMATS.items() if spec.write]
    disk = sub.add_parser(
        "disk", parents=[common], help="media: create, import, list, modify, clone, convert, remove",
        description="The media registry of the state directory (works without the daemon).",
    )
    cmds = disk.add_subparsers(dest="disk_command", metavar="SUBCOMMAND", parser_class=_Parser)
    cmds.required = True

    p = cmds.add_parser("create", parents=[common], help="create an empty image and register it",
                        description="Create <state_dir>/media/NAME.<ext> and register it.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--size", type=_size, required=True, help="virtual size: 512M, 20G (K, M, G, T = powers of 1024)")
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

    p = cmds.add_parser("info", parents=[common], help="everything about one medium")
    p.add_argument("name", metavar="NAME")

    p = cmds.add_parser("modify", parents=[common], help="change type, autoreset, size, description")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", choices=TYPES)
    p.add_argument("--autoreset", type=_on_off, metavar="on|off",
                   help="immutable media: discard the machine's layer at power-on")
    p.add_argument("--resize", type=_size, metavar="SIZE", help="grow to SIZE, data kept")
    p.add_argument("--description")

    p = cmds.add_parser("clone", parents=[common], help="copy a medium into a new one with a new UUID")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--format", choices=writable)
    p.add_argument("--variant", choices=sorted({v for f in writable for v in FORMATS[f].variants}))

    p = cmds.add_parser("convert", parents=[common], help="convert an image file (no registry)")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--format", choices=writable, required=True)
    p.add_argument("--variant", choices=sorted({v for f in writable for v in FORMATS[f].variants}),
                   help="default: the format's first (dynamic; streamOptimized for vmdk)")

    p = cmds.add_parser("remove", parents=[common], help="unregister a medium")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--delete", action="store_true", help="delete its file too")


class _ProgressBar:
    """A rich progress bar on stderr when it is a terminal; nothing when piped."""

    def __init__(self, what: str, enabled: bool) -> None:
        self._what, self._enabled = what, enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self._enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self._what, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _registry(config: Config) -> Any:
    from netstore.registry import Registry

    return Registry.open(config.daemon.state_dir)


def _medium_json(reg: Any, m: Any) -> dict[str, Any]:
    d = m.to_dict()
    d["used_by"] = [{"machine": u.machine, "via": u.via} for u in reg.users_of(m)]
    return d


def _said(as_json: bool, reg: Any, m: Any, text: str) -> int:
    if as_json:
        print(json.dumps(_medium_json(reg, m), indent=2))
    else:
        print(text)
    return EXIT_OK


def _disk_create(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.disk.media import format_size

    with _registry(config) as reg, _ProgressBar(f"allocating {args.name}",
                                                 args.variant == "fixed" and not as_json) as bar:
        m = reg.create(args.name, args.size, format=args.format, variant=args.variant,
                       kind=args.kind, type=args.type, description=args.description,
                       progress=bar)
        return _said(as_json, reg, m, f"created {m.name}: {m.format} {m.variant} {m.kind}, "
                     f"{format_size(m.virtual_size)}, {m.type}, UUID {m.uuid}, {m.location}")


def _disk_import(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.disk.media import format_size

    with _registry(config) as reg:
        m = reg.import_image(args.file, name=args.name, type=args.type, kind=args.kind,
                             description=args.description)
        return _said(as_json, reg, m, f"registered {m.name}: {m.format} {m.variant} {m.kind}, "
                     f"{format_size(m.virtual_size)}, {m.type}, UUID {m.uuid}, {m.location}")


def _console() -> Any:
    from rich.console import Console

    # piped output keeps whole rows (no wrapping at 80 columns)
    return Console(width=None if sys.stdout.isatty() else 250, highlight=False)


def _disk_list(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from rich.table import Table

    from netstore.disk.media import format_size

    with _registry(config) as reg:
        media = reg.media(layers=args.layers)
        if as_json:
            print(json.dumps([_medium_json(reg, m) for m in media], indent=2))
            return EXIT_OK
        table = Table(title_justify="left", box=None, pad_edge=False)
        for col in ("name", "uuid", "format", "variant", "kind", "type", "virtual size",
                    "current size", "used by"):
            table.add_column(col, no_wrap=col in ("name", "uuid"))
        for m in media:
            machines = list(dict.fromkeys(u.machine for u in reg.users_of(m)))
            current = "missing" if m.current_size is None else format_size(m.current_size)
            table.add_row(m.name, m.uuid, m.format, m.variant, m.kind, m.type,
                          format_size(m.virtual_size), current, ", ".join(machines) or "-")
        if not media:
            print("no media registered (netstore disk create | import)")
        else:
            _console().print(table)
    return EXIT_OK


def _disk_info(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.disk import layers
    from netstore.disk.api import DiskError
    from netstore.disk.media import format_size

    with _registry(config) as reg:
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
            print(json.dumps(d, indent=2))
            return EXIT_OK
        users = reg.users_of(m)
        rows = [
            ("name", m.name), ("uuid", m.uuid), ("location", m.location),
            ("format", m.format), ("variant", m.variant), ("kind", m.kind), ("type", m.type),
            ("autoreset", "on" if m.autoreset else "off"),
            ("virtual size", f"{format_size(m.virtual_size)} ({m.virtual_size} bytes)"),
            ("current size", "missing" if m.current_size is None
             else f"{format_size(m.current_size)} ({m.current_size} bytes)"),
            ("description", m.description or "-"), ("created", m.created),
            ("parent", parent or "-"), ("owner", m.owner or "-"),
            ("layers", ", ".join(c.name for c in children) or "-"),
            ("used by", "; ".join(f"{u.machine} ({u.via})" for u in users) or "-"),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k + ':':<{width + 1}} {v}")
        print("backing chain:")
        for depth, path in enumerate(chain):
            print(f"  {'  ' * depth}{path}")
    return EXIT_OK


def _disk_modify(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    if args.type is None and args.autoreset is None and args.resize is None \
            and args.description is None:
        print("netstore: disk modify: nothing to change (--type, --autoreset, --resize, "
              "--description)", file=sys.stderr)
        return EXIT_USAGE
    from netstore.disk.media import format_size

    with _registry(config) as reg:
        m = reg.modify(args.name, type=args.type, autoreset=args.autoreset, resize=args.resize,
                       description=args.description)
        return _said(as_json, reg, m, f"{m.name}: {m.type}, autoreset "
                     f"{'on' if m.autoreset else 'off'}, {format_size(m.virtual_size)}")


def _disk_clone(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with _registry(config) as reg, _ProgressBar(f"cloning {args.src}", not as_json) as bar:
        m = reg.clone(args.src, args.dst, format=args.format, variant=args.variant, progress=bar)
        return _said(as_json, reg, m, f"cloned {args.src} to {m.name}: {m.format} {m.variant}, "
                     f"UUID {m.uuid}, {m.location}")


def _disk_convert(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.disk.images import FORMATS, convert

    variant = args.variant or FORMATS[args.format].variants[0]
    with _ProgressBar(f"converting {args.input}", not as_json) as bar:
        info = convert(args.input, args.output, args.format, variant=variant, progress=bar)
    if as_json:
        print(json.dumps({"path": info.path, "format": info.format, "variant": info.variant,
                          "virtual_size": info.virtual_size, "file_size": info.file_size,
                          "uuid": info.uuid}, indent=2))
    else:
        print(f"converted {args.input} to {info.path} ({info.format} {info.variant})")
    return EXIT_OK


def _disk_remove(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    with _registry(config) as reg:
        m = reg.remove(args.name, delete=args.delete)
    if as_json:
        print(json.dumps({"removed": m.name, "uuid": m.uuid, "deleted": args.delete,
                          "location": m.location}, indent=2))
    else:
        print(f"removed {m.name}" + (f" and deleted {m.location}" if args.delete else
                                     f" (file kept: {m.location})"))
    return EXIT_OK


_DISK_COMMANDS = {
    "create": _disk_create,
    "import": _disk_import,
    "list": _disk_list,
    "info": _disk_info,
    "modify": _disk_modify,
    "clone": _disk_clone,
    "convert": _disk_convert,
    "remove": _disk_remove,
}


# -- netstore vm, netstore host ----------------------------------------------

def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _mem_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX in MB (512:2048), got {text!r}")
    return _int_arg(lo), _int_arg(hi)


def _add_vm_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from netstore.registry.machines import BUSES, CHIPSETS, TRANSPORTS

    vm = sub.add_parser("vm", parents=[common], help="virtual machines: create, modify, attach, "
                        "nic, start, stop, snapshot, list, info, remove",
                        description="The VMs of the registry (works without the daemon; a "
                        "running daemon picks changes up within a second).")
    cmds = vm.add_subparsers(dest="vm_command", metavar="SUBCOMMAND", parser_class=_Parser)
    cmds.required = True

    p = cmds.add_parser("create", parents=[common], help="register a new VM (powered off)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cpus", type=_int_arg, default=1, metavar="N")
    p.add_argument("--memory", type=_int_arg, default=1024, metavar="MB")
    p.add_argument("--ostype", default="Other", metavar="T")
    p.add_argument("--chipset", choices=CHIPSETS, default="piix3")

    p = cmds.add_parser("modify", parents=[common], help="change CPUs, memory, balloon, ...",
                        description="Hardware changes only while the VM is powered off; "
                        "--balloon only while it runs; --plugcpu/--unplugcpu need "
                        "--cpuhotplug on.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cpus", type=_int_arg, metavar="N",
                   help="vCPUs (with CPU hot-plug on: the maximum)")
    p.add_argument("--cpuhotplug", type=_on_off, metavar="on|off")
    p.add_argument("--plugcpu", type=_int_arg, metavar="I", help="plug vCPU I")
    p.add_argument("--unplugcpu", type=_int_arg, metavar="I", help="unplug vCPU I (never 0)")
    p.add_argument("--cpu-cap", type=_int_arg, metavar="PCT", help="execution cap 1..100 %%")
    p.add_argument("--weight", type=_int_arg, metavar="W", help="relative CPU weight 1..10000")
    p.add_argument("--memory", type=_int_arg, metavar="MB", help="fixed memory")
    p.add_argument("--memory-range", type=_mem_range, metavar="MIN:MAX",
                   help="dynamic memory in MB")
    p.add_argument("--balloon", type=_int_arg, metavar="MB", help="balloon size (running VM)")
    p.add_argument("--pagefusion", type=_on_off, metavar="on|off")
    p.add_argument("--ostype", metavar="T")
    p.add_argument("--chipset", choices=CHIPSETS)

    p = cmds.add_parser("controller", parents=[common], help="add or remove a storage controller")
    p.add_argument("name", metavar="NAME")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--add", metavar="CTL", help="the new controller's name (sata0)")
    g.add_argument("--remove", metavar="CTL", help="remove an empty controller")
    p.add_argument("--bus", choices=list(BUSES))
    p.add_argument("--chipset", metavar="C", help="; ".join(
        f"{b}: {', '.join(spec.chipsets)}" for b, spec in BUSES.items()))

    p = cmds.add_parser("attach", parents=[common], help="attach a medium to a slot")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--controller", required=True, metavar="CTL")
    p.add_argument("--port", type=_int_arg, required=True, metavar="P")
    p.add_argument("--device", type=_int_arg, default=0, metavar="D")
    p.add_argument("--disk", required=True, metavar="MEDIUM")
    p.add_argument("--type", dest="slot_kind", choices=("hdd", "dvd", "floppy"),
                   help="the slot's kind (default: the medium's)")

    p = cmds.add_parser("detach", parents=[common], help="empty a slot")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--controller", required=True, metavar="CTL")
    p.add_argument("--port", type=_int_arg, required=True, metavar="P")
    p.add_argument("--device", type=_int_arg, default=0, metavar="D")

    p = cmds.add_parser("nic", parents=[common], help="add, change or remove a NIC",
                        description="Add the NIC in --slot or change it; its MAC is generated "
                        "when not given; udp and stream NICs get ports allocated "
                        "(NETSTORE_NIC_PORTS=LO-HI, default 40000-49999).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--slot", type=_int_arg, required=True, metavar="N")
    p.add_argument("--switch", metavar="SW")
    p.add_argument("--mac", metavar="M")
    p.add_argument("--vlan", type=_int_arg, metavar="V")
    p.add_argument("--transport", choices=TRANSPORTS)
    p.add_argument("--port-security", choices=("on", "off"),
                   help="the NIC's switch port admits only the NIC's MAC")
    p.add_argument("--remove", action="store_true", help="remove the NIC in --slot")

    for verb, what in (("start", "power on (applies the disk rules)"), ("stop", "power off"),
                       ("info", "everything about one VM"),
                       ("remove", "unregister a powered-off VM without snapshots")):
        p = cmds.add_parser(verb, parents=[common], help=what)
        p.add_argument("name", metavar="NAME")
    cmds.add_parser("list", parents=[common], help="every VM")

    p = cmds.add_parser("snapshot", parents=[common], help="take, restore or delete a snapshot")
    p.add_argument("name", metavar="NAME")
    p.add_argument("action", choices=("take", "restore", "delete", "list"))
    p.add_argument("snapshot", metavar="SNAP", nargs="?")
    p.add_argument("--description", default="")

    p = cmds.add_parser("qemu-args", parents=[common],
                        help="a qemu-system command line running the VM on netstore: disks "
                             "over iscsi://, NICs on their switch ports")
    p.add_argument("name", metavar="NAME")

    host = sub.add_parser("host", parents=[common], help="the host report")
    hcmds = host.add_subparsers(dest="host_command", metavar="SUBCOMMAND", parser_class=_Parser)
    hcmds.required = True
    hcmds.add_parser("report", parents=[common],
                     help="vCPUs and memory of running VMs against the host's")


def _vm_or_host(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    import warnings

    from netstore.disk.api import DiskError

    if args.command == "vm" and args.vm_command == "qemu-args":
        args.config_obj = config
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _registry(config) as reg:
                if args.command == "host":
                    status = _host_report(reg, as_json)
                else:
                    status = _VM_COMMANDS[args.vm_command](reg, args, as_json)
        except DiskError as e:  # registry refusals are DiskErrors too
            status = EXIT_REFUSED
            print(f"netstore: {e}", file=sys.stderr)
    for w in caught:
        print(f"netstore: warning: {w.message}", file=sys.stderr)
    return status


def _vm_said(as_json: bool, data: Any, text: str) -> int:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(text)
    return EXIT_OK


def _memory_text(m: Any) -> str:
    if m.memory_min_mb is not None:
        return f"{m.memory_min_mb}..{m.memory_mb} MB"
    return f"{m.memory_mb} MB"


def _cpus_text(m: Any) -> str:
    if m.cpu_hotplug:
        return f"{m.online_cpus} of {m.cpus} (hot-plug: {','.join(map(str, m.plugged_cpus))})"
    return str(m.cpus)


def _vm_create(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    m = reg.machines.create(args.name, cpus=args.cpus, memory_mb=args.memory,
                            ostype=args.ostype, chipset=args.chipset)
    return _vm_said(as_json, m.to_dict(), f"created VM {m.name}: {m.cpus} vCPU(s), "
                    f"{m.memory_mb} MB, {m.ostype}, UUID {m.uuid}")


def _vm_modify(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    asked = dict(cpus=args.cpus, cpu_hotplug=args.cpuhotplug, plug_cpu=args.plugcpu,
                 unplug_cpu=args.unplugcpu, cpu_cap=args.cpu_cap, weight=args.weight,
                 memory_mb=args.memory, memory_range=args.memory_range,
                 balloon_mb=args.balloon, page_fusion=args.pagefusion, ostype=args.ostype,
                 chipset=args.chipset)
    if all(v is None for v in asked.values()):
        print("netstore: vm modify: nothing to change (see: netstore vm modify --help)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.memory is not None and args.memory_range is not None:
        print("netstore: vm modify: --memory and --memory-range exclude each other",
              file=sys.stderr)
        return EXIT_USAGE
    m = reg.machines.modify(args.name, **asked)
    return _vm_said(as_json, m.to_dict(), f"{m.name}: {_cpus_text(m)} vCPU(s), cap "
                    f"{m.cpu_cap} %, memory {_memory_text(m)}, balloon {m.balloon_mb} MB, "
                    f"page fusion {'on' if m.page_fusion else 'off'}")


def _vm_controller(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    if args.remove:
        reg.machines.remove_controller(args.name, args.remove)
        return _vm_said(as_json, {"removed": args.remove}, f"removed controller {args.remove} "
                        f"of {args.name}")
    if args.bus is None:
        print("netstore: vm controller: --add needs --bus", file=sys.stderr)
        return EXIT_USAGE
    c = reg.machines.add_controller(args.name, args.add, args.bus, args.chipset)
    return _vm_said(as_json, c.to_dict(), f"{args.name}: controller {c.name} ({c.bus}, "
                    f"{c.chipset})")


def _vm_attach(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    a = reg.machines.attach(args.name, args.controller, args.port, args.disk,
                            device=args.device, slot_kind=args.slot_kind)
    return _vm_said(as_json, a.to_dict(), f"{args.name}: {a.medium} ({a.type} {a.slot_kind}) "
                    f"attached at {a.slot}")


def _vm_detach(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    a = reg.machines.detach(args.name, args.controller, args.port, device=args.device)
    return _vm_said(as_json, a.to_dict(), f"{args.name}: {a.medium} detached from {a.slot}")


def _vm_nic(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    if args.remove:
        n = reg.machines.remove_nic(args.name, args.slot)
        return _vm_said(as_json, n.to_dict(), f"{args.name}: NIC {n.slot} ({n.mac}) removed")
    if args.switch is None:
        print("netstore: vm nic: --switch is needed (or --remove)", file=sys.stderr)
        return EXIT_USAGE
    security = None if args.port_security is None else args.port_security == "on"
    n = reg.machines.set_nic(args.name, args.slot, args.switch, mac=args.mac, vlan=args.vlan,
                             transport=args.transport, port_security=security)
    where = n.switch_addr + (f" <-> {n.vm_addr}" if n.vm_addr else "")
    locked = ", port security on" if n.port_security else ""
    return _vm_said(as_json, n.to_dict(), f"{args.name}: NIC {n.slot} {n.mac} on {n.switch} "
                    f"VLAN {n.vlan}, {n.transport} {where}{locked}")


def _vm_power(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    if args.vm_command == "start":
        m = reg.machines.start(args.name)
    else:
        m = reg.machines.stop(args.name)
    return _vm_said(as_json, m.to_dict(), f"{m.name}: {m.power}")


def _vm_remove(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    m = reg.machines.remove(args.name)
    return _vm_said(as_json, {"removed": m.name, "uuid": m.uuid}, f"removed VM {m.name}")


def _vm_snapshot(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.registry.snapshots import Snapshots

    snaps = Snapshots(reg)
    if args.action == "list":
        found = snaps.list(args.name)
        if as_json:
            print(json.dumps([s.to_dict() for s in found], indent=2))
            return EXIT_OK
        for s in found:
            print(f"{'*' if s.current else ' '} {s.name}  parent {s.parent or '-'}  "
                  f"{s.created}  {s.description}")
        if not found:
            print(f"{args.name} has no snapshots")
        return EXIT_OK
    if args.snapshot is None:
        print(f"netstore: vm snapshot {args.action}: SNAP is needed", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "take":
        s = snaps.take(args.name, args.snapshot, args.description)
        disks = ", ".join(s.disks) or "no disks"
        return _vm_said(as_json, s.to_dict(), f"{args.name}: snapshot {s.name} taken ({disks})")
    if args.action == "restore":
        s = snaps.restore(args.name, args.snapshot)
        return _vm_said(as_json, s.to_dict(), f"{args.name}: restored snapshot {s.name}")
    snaps.delete(args.name, args.snapshot)
    return _vm_said(as_json, {"deleted": args.snapshot},
                    f"{args.name}: snapshot {args.snapshot} deleted (its data merged)")


def _vm_list(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    from rich.table import Table

    vms = reg.machines.list()
    if as_json:
        print(json.dumps([reg.machines.info(m.name) for m in vms], indent=2))
        return EXIT_OK
    if not vms:
        print("no VMs registered (netstore vm create NAME)")
        return EXIT_OK
    table = Table(box=None, pad_edge=False)
    for col in ("name", "power", "vCPUs", "memory", "disks", "NICs", "snapshot", "uuid"):
        table.add_column(col, no_wrap=col in ("name", "uuid"))
    for m in vms:
        disks = reg.machines.attachments(m.name)
        nics = reg.machines.nics(m.name)
        table.add_row(m.name, m.power, _cpus_text(m), _memory_text(m),
                      ", ".join(a.medium for a in disks) or "-", str(len(nics)),
                      m.current_snapshot or "-", m.uuid)
    _console().print(table)
    return EXIT_OK


def _vm_info(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    from rich.table import Table

    d = reg.machines.info(args.name)
    if as_json:
        print(json.dumps(d, indent=2))
        return EXIT_OK
    m = reg.machines.get(args.name)
    rows = [("name", m.name), ("uuid", m.uuid), ("ostype", m.ostype), ("power", m.power),
            ("vCPUs", _cpus_text(m)), ("execution cap", f"{m.cpu_cap} %"),
            ("weight", str(m.weight)), ("memory", _memory_text(m)),
            ("balloon", f"{m.balloon_mb} MB"), ("page fusion", "on" if m.page_fusion else "off"),
            ("chipset", m.chipset), ("snapshot", m.current_snapshot or "-"),
            ("created", m.created)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{width + 1}} {v}")
    console = _console()
    table = Table(title="storage", title_justify="left", box=None, pad_edge=False)
    for col in ("controller", "bus", "chipset", "port", "device", "kind", "medium", "type"):
        table.add_column(col, no_wrap=True)
    atts = d["attachments"]
    for c in d["controllers"]:
        held = [a for a in atts if a["controller"] == c["name"]]
        for a in held or [None]:
            table.add_row(c["name"], c["bus"], c["chipset"],
                          *(("-",) * 5 if a is None else (
                              str(a["port"]), str(a["device"]), a["slot_kind"], a["medium"],
                              a["type"])))
    console.print(table)
    table = Table(title="NICs", title_justify="left", box=None, pad_edge=False)
    for col in ("slot", "mac", "switch", "vlan", "transport", "switch end", "VM end"):
        table.add_column(col, no_wrap=True)
    for n in d["nics"]:
        table.add_row(str(n["slot"]), n["mac"], n["switch"], str(n["vlan"]), n["transport"],
                      n["switch_addr"], n["vm_addr"] or "-")
    console.print(table)
    if d["snapshots"]:
        table = Table(title="snapshots", title_justify="left", box=None, pad_edge=False)
        for col in ("", "name", "parent", "created", "disks", "description"):
            table.add_column(col, no_wrap=True)
        for s in d["snapshots"]:
            table.add_row("*" if s["current"] else "", s["name"], s["parent"] or "-",
                          s["created"], ", ".join(s["disks"]) or "-", s["description"])
        console.print(table)
    return EXIT_OK


def _host_report(reg: Any, as_json: bool) -> int:
    from rich.table import Table

    from netstore.registry.machines import host_report

    r = host_report(reg)
    if as_json:
        print(json.dumps(r, indent=2))
    else:
        mem = f"{r['host_memory_mb']} MB" if r["host_memory_mb"] else "unknown"
        ratio = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        print(f"host: {r['host_cores']} cores, {mem} memory; {r['running_vms']} VM(s) running")
        print(f"vCPUs:   {r['vcpus']} on {r['host_cores']} cores (ratio {r['cpu_ratio']:.2f})")
        print(f"memory:  {r['memory_committed_mb']} MB committed of {mem} (ratio {ratio}); "
              f"balloons {r['balloons_mb']} MB")
        if r["vms"]:
            table = Table(box=None, pad_edge=False)
            for col in ("VM", "vCPUs", "cap", "weight", "memory", "balloon"):
                table.add_column(col, no_wrap=True)
            for v in r["vms"]:
                memory = (f"{v['memory_min_mb']}..{v['memory_mb']} MB"
                          if v["memory_min_mb"] is not None else f"{v['memory_mb']} MB")
                table.add_row(v["name"], str(v["vcpus"]), f"{v['cpu_cap']} %", str(v["weight"]),
                              memory, f"{v['balloon_mb']} MB")
            _console().print(table)
    for w in r["warnings"]:
        print(f"netstore: warning: {w}", file=sys.stderr)
    return EXIT_OK


def _vm_qemu_args(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.config import format_portal
    from netstore.qemu import format_args, qemu_args

    config: Config = args.config_obj
    m = reg.machines
    vm = m.get(args.name)
    host, port = config.iscsi.portals[0]
    argv = qemu_args(vm, m.controllers(vm.name), m.attachments(vm.name), m.nics(vm.name),
                     portal=format_portal(host, port), base_iqn=config.iscsi.base_iqn)
    if as_json:
        print(json.dumps(argv))
    else:
        print(format_args(argv))
        if not vm.running:
            print(f"netstore: note: {vm.name} is powered off; its target accepts logins "
                  f"after `netstore vm start {vm.name}`", file=sys.stderr)
    return EXIT_OK


_VM_COMMANDS = {
    "qemu-args": _vm_qemu_args,
    "create": _vm_create,
    "modify": _vm_modify,
    "controller": _vm_controller,
    "attach": _vm_attach,
    "detach": _vm_detach,
    "nic": _vm_nic,
    "start": _vm_power,
    "stop": _vm_power,
    "remove": _vm_remove,
    "snapshot": _vm_snapshot,
    "list": _vm_list,
    "info": _vm_info,
}


# -- netstore ovf ------------------------------------------------------------

def _add_ovf_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    ovf = sub.add_parser("ovf", parents=[common], help="OVF/OVA export and import",
                         description="Move VMs to and from other hypervisors as OVF 1.x "
                         "packages (VirtualBox, VMware ovftool).")
    cmds = ovf.add_subparsers(dest="ovf_command", metavar="SUBCOMMAND", parser_class=_Parser)
    cmds.required = True
    p = cmds.add_parser("export", parents=[common], help="write a VM as an OVA",
                        description="Write VM as OUT.ova: its OVF descriptor, each disk's "
                        "current state as a streamOptimized VMDK, dvd/floppy images, and a "
                        "SHA256 manifest.")
    p.add_argument("vm", metavar="VM")
    p.add_argument("out", metavar="OUT.ova")
    p = cmds.add_parser("import", parents=[common], help="register the VM of an OVA or OVF",
                        description="Check the manifest, convert each disk to qcow2 under "
                        "<state_dir>/media/ and register the VM with new UUIDs.")
    p.add_argument("file", metavar="FILE.ova", help="an OVA, or an .ovf with its files beside it")
    p.add_argument("--name", help="the new VM's name (default: the one in the descriptor)")


def _ovf(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    import warnings

    from netstore.disk.api import DiskError
    from netstore.disk.media import format_size
    from netstore.ovf import export_vm, import_appliance

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _registry(config) as reg:
                if args.ovf_command == "export":
                    with _ProgressBar(f"exporting {args.vm}", not as_json) as bar:
                        r = export_vm(reg, args.vm, args.out, progress=bar)
                    status = _vm_said(as_json, r.to_dict(), f"exported {r.machine} to {r.path} "
                                      f"({format_size(r.size)}: "
                                      f"{', '.join(n for n, _ in r.members)})")
                else:
                    with _ProgressBar(f"importing {args.file}", not as_json) as bar:
                        r = import_appliance(reg, args.file, name=args.name, progress=bar)
                    m = r.machine
                    status = _vm_said(as_json, r.to_dict(), f"imported {args.file} as VM {m.name}"
                                      f" (UUID {m.uuid}): {m.cpus} vCPU(s), {m.memory_mb} MB, "
                                      f"media {', '.join(x.name for x in r.media) or 'none'}")
        except DiskError as e:  # OVF, registry and image refusals are DiskErrors
            status = EXIT_REFUSED
            print(f"netstore: {e}", file=sys.stderr)
    for w in caught:
        print(f"netstore: warning: {w.message}", file=sys.stderr)
    return status


# -- netstore switch, netstore capture ----------------------------------------

def _add_switch_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    sw = sub.add_parser("switch", parents=[common], help="the learning switches: list, show",
                        description="The running daemon's switches.")
    cmds = sw.add_subparsers(dest="switch_command", metavar="SUBCOMMAND", parser_class=_Parser)
    cmds.required = True
    cmds.add_parser("list", parents=[common], help="every switch: ports, MACs, frames")
    p = cmds.add_parser("show", parents=[common], help="one switch: its ports and MAC table",
                        description="Without --macs or --ports both are shown.")
    p.add_argument("name", metavar="SW")
    p.add_argument("--macs", action="store_true", help="the learnt MAC table")
    p.add_argument("--ports", action="store_true", help="ports with link, counters, drops")

    p = sub.add_parser(
        "capture", parents=[common], help="capture a switch's frames to pcap/pcapng",
        description="Capture frames crossing switch SW (or only its port PORT) while the "
        "daemon runs: `netstore capture sw0 -w - --count 10 | tshark -r -`. SW records each "
        "frame once, as it enters the switch (on the port it came in by); SW:PORT records "
        "what that port receives and sends.")
    p.add_argument("target", metavar="SW[:PORT]")
    p.add_argument("-w", dest="write", metavar="FILE|-", required=True,
                   help="output file, or - for stdout")
    p.add_argument("--count", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--format", choices=("pcap", "pcapng"),
                   help="default: pcapng for a .pcapng file, else pcap")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return x


def _switch(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    from netstore.control import ControlError, request

    try:
        if args.switch_command == "list":
            result = request(config.daemon.state_dir, "switch_list")
        else:
            both = not args.macs and not args.ports
            result = request(config.daemon.state_dir, "switch_show", switch=args.name,
                             macs=both or args.macs, ports=both or args.ports)
    except ControlError as e:
        print(f"netstore: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.switch_command == "list":
        _print_switch_list(result)
    else:
        _print_switch(result)
    return EXIT_OK


def _print_switch_list(switches: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("switch", "ports", "up", "MACs", "aging", "rx frames", "tx frames", "drops",
                "capture"):
        table.add_column(col, no_wrap=True)
    for sw in switches:
        table.add_row(sw["name"], str(sw["port_count"]), str(sw["ports_up"]),
                      f"{sw['mac_count']}/{sw['mac_table_size']}", f"{sw['mac_aging_s']:g} s",
                      str(sw["rx_frames"]), str(sw["tx_frames"]), str(sw["drops"]),
                      ", ".join(c.get("to", "?") for c in sw.get("captures", [])) or "-")
    if not switches:
        print("no switches")
    else:
        _console().print(table)


def _vlans(p: dict[str, Any]) -> str:
    if p.get("trunk"):
        native = f" native {p['native']}" if p.get("native") else ""
        return "trunk " + ",".join(str(v) for v in p["trunk"]) + native
    return str(p.get("vlan", "-"))


def _policy(p: dict[str, Any]) -> str:
    """Mirroring, port security and storm limit of a port, in a few words."""
    words = []
    if p.get("mirror_to"):
        words.append(f"mirror to {p['mirror_to']}")
    if p.get("mirror_of"):
        words.append("mirror of " + ",".join(p["mirror_of"]))
    if p.get("bound_mac"):
        words.append(f"only {p['bound_mac']}")
    if p.get("max_macs"):
        words.append(f"max {p['max_macs']} MACs")
    if p.get("storm_pps"):
        words.append(f"storm {p['storm_pps']} pps")
    return ", ".join(words) or "-"


def _print_switch(sw: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"switch {sw['name']}: {sw['port_count']} port(s), {sw['mac_count']} MAC(s) "
                  f"of {sw['mac_table_size']}, aging {sw['mac_aging_s']:g} s")
    if "ports" in sw:
        table = Table(title="ports", title_justify="left", box=None, pad_edge=False)
        for col in ("port", "kind", "link", "address", "peer", "vlan", "mtu", "policy",
                    "rx frames", "rx bytes", "tx frames", "tx bytes", "drops"):
            table.add_column(col, no_wrap=col in ("port", "address", "peer"))
        for p in sw["ports"]:
            drops = p.get("drops")
            drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items()) if v) \
                if drops else "-"
            extra = f" ({len(p['clients'])} client(s))" if "clients" in p else ""
            table.add_row(p["name"], p["kind"] + extra, p["link"], str(p.get("address") or "-"),
                          str(p.get("peer") or "-"), _vlans(p), str(p.get("mtu", "-")),
                          _policy(p), *(str(p.get(k, "-")) for k in ("rx_frames", "rx_bytes", "tx_frames",
                                                          "tx_bytes")),
                          drop_text or "-")
        console.print(table)
    if "macs" in sw:
        table = Table(title="MAC table", title_justify="left", box=None, pad_edge=False)
        for col in ("vlan", "mac", "port", "age"):
            table.add_column(col, no_wrap=True)
        for m in sw["macs"]:
            table.add_row(str(m["vlan"]), m["mac"], m["port"], f"{m['age_s']:.0f} s")
        console.print(table)


def _capture(config: Config, args: argparse.Namespace) -> int:
    from netstore.control import ControlError, request_stream

    switch, _, port = args.target.partition(":")
    fmt = args.format or ("pcapng" if args.write.endswith(".pcapng") else "pcap")
    to_stdout = args.write == "-"
    try:
        out = sys.stdout.buffer if to_stdout else open(args.write, "wb")  # noqa: SIM115
    except OSError as e:
        print(f"netstore: cannot write {args.write}: {e.strerror or e}", file=sys.stderr)
        return EXIT_REFUSED

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()  # a reader (tshark -r -) sees every complete record at once

    try:
        result = request_stream(config.daemon.state_dir, "capture", write, switch=switch,
                                port=port or None, format=fmt, count=args.count,
                                duration=args.duration)
    except ControlError as e:
        print(f"netstore: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:
        # The reader left (tshark -c N, head): that ends the capture, quietly.
        try:  # and no second BrokenPipeError when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    finally:
        if not to_stdout:
            out.close()
    if not to_stdout:
        print(f"capture of {(result or {}).get('capture', args.target)} written to "
              f"{args.write}", file=sys.stderr)
    return EXIT_OK


def _status(config: Config, as_json: bool) -> int:
    from netstore.control import ControlError, request

    try:
        result = request(config.daemon.state_dir, "status")
    except ControlError as e:
        print(f"netstore: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_status(result)
    return EXIT_OK


def _print_status(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    iscsi = result.get("iscsi", {}) or {}
    portals = ", ".join(iscsi.get("portals", [])) or "-"
    console.print(
        f"netstore {result.get('version', '?')}  pid {result.get('pid', '?')}  "
        f"up {result.get('uptime_s', 0):.0f} s  portals {portals}  "
        f"config {result.get('config') or '(defaults)'}",
        highlight=False,
    )

    targets = Table(title="targets", title_justify="left")
    for col in ("target", "LUNs", "accepting logins"):
        targets.add_column(col)
    for t in iscsi.get("targets", []):
        luns = t.get("luns", [])
        targets.add_row(
            str(t.get("iqn", "?")),
            ", ".join(str(x) for x in luns) if isinstance(luns, list) else str(luns),
            "yes" if t.get("accepting", True) else "no (removed)",
        )
    console.print(targets)

    sessions = Table(title="sessions", title_justify="left")
    for col in ("initiator", "target", "type", "TSIH", "ISID", "connections"):
        sessions.add_column(col)
    connections = Table(title="connections", title_justify="left")
    for col in ("initiator", "CID", "peer", "header digest", "data digest"):
        connections.add_column(col)
    for s in iscsi.get("sessions", []):
        conns = s.get("connections", []) or []
        sessions.add_row(
            str(s.get("initiator", "?")),
            str(s.get("target") or "-"),
            str(s.get("type", "?")),
            str(s.get("tsih", "?")),
            str(s.get("isid", "?")),
            str(len(conns)),
        )
        for c in conns:
            connections.add_row(
                str(s.get("initiator", "?")),
                str(c.get("cid", "?")),
                str(c.get("peer", "?")),
                str(c.get("header_digest", "?")),
                str(c.get("data_digest", "?")),
            )
    console.print(sessions)
    console.print(connections)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
