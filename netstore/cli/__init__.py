# netstore/cli/__init__.py - the `netstore` command: main() builds the argument
# tree from the noun modules (serve, status, disk, switch and capture, link,
# vm, host, ovf), loads the configuration and runs the command. Parsing and output only.
#
# Exit statuses (interface.md): 0 success, 1 a refused operation (one line on
# stderr), 2 a usage or configuration error. Every command takes --config FILE
# (or NETSTORE_CONFIG) and --json, before or after the command name.
"""The netstore command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from netstore import __version__
from netstore.cli import disk, host, link, ovf, serve, status, switch, vm
from netstore.cli.common import Command, Parser, UsageError, common_options, load, usage
from netstore.config import ConfigError

__all__ = ["main", "build_parser"]

# In the order `netstore --help` lists their commands.
_NOUNS = (serve, status, disk, switch, link, vm, host, ovf)


def _build() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    common = common_options()
    parser = Parser(
        prog="netstore",
        description="netstore: an iSCSI target with VirtualBox-style disk modes and a "
        "learning virtual switch.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"netstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    commands: dict[str, Command] = {}
    for noun in _NOUNS:
        commands.update(noun.add_commands(sub, common))
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the netstore command."""
    return _build()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the netstore command line; returns the exit status."""
    parser, commands = _build()
    try:
        args, extras = parser.parse_known_args(argv)
        # argparse gives an optional positional up when an option follows the
        # one before it (`link SW:PORT --out clear`); a command may take it back.
        late = getattr(args, "late_positional", None)
        if extras and not (late is not None and late(args, extras)):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except UsageError as e:
        return usage(e)
    try:
        config = load(args)
    except ConfigError as e:
        return usage(e)
    return commands[args.command](config, args, getattr(args, "json", False))

