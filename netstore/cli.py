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

# Command groups of interface.md that later issues implement. Until then they
# say so and exit 2 rather than pretend.
NOT_YET = {
    "disk": "media: create, import, list, modify, clone, convert, remove",
    "vm": "virtual machines: create, modify, attach, nic, start, stop, snapshot",
    "switch": "the learning switch: list, show",
    "capture": "packet capture on a switch",
    "ovf": "OVF/OVA export and import",
    "host": "the host report",
}


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
    for name, what in NOT_YET.items():
        p = sub.add_parser(name, parents=[common], help=f"{what} (not implemented yet)")
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
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
    if args.command in NOT_YET:
        print(
            f"netstore: the `{args.command}` commands ({NOT_YET[args.command]}) are not "
            "implemented yet; a later issue adds them",
            file=sys.stderr,
        )
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
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts it


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
