# netstore/cli/common.py - what every command module shares: the exit statuses,
# the parser class, the common options (--config, --json) and a noun's
# SUBCOMMAND group, the one place the configuration is loaded, argument types
# (sizes, on/off, numbers, seconds), running a command on the registry or
# asking the daemon, turning a refusal into one stderr line and exit status 1
# (a usage error: status 2), and the output: JSON, lines, tables, progress bar.
"""Shared parsing and output of the netstore command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from netstore.config import Config, default_config, load_config
from netstore.disk.api import DiskError
from netstore.disk.media import parse_size
from netstore.registry import Registry
from netstore.registry.lookup import registered_medium

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
CONFIG_ENV = "NETSTORE_CONFIG"

# A command module's entry: (configuration, parsed arguments, --json) -> exit status.
Command = Callable[[Config, argparse.Namespace, bool], int]


class UsageError(Exception):
    """A command line argparse refused (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def common_options() -> argparse.ArgumentParser:
    """The options every command takes: --config FILE and --json."""
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


def add_noun(sub: Any, common: argparse.ArgumentParser, name: str, **kwargs: Any) -> Any:
    """Add command ``name`` taking a SUBCOMMAND (in ``args.<name>_command``); returns
    the subparsers to add its subcommands to."""
    p = sub.add_parser(name, parents=[common], **kwargs)
    cmds = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=Parser)
    cmds.required = True
    return cmds


def load(args: argparse.Namespace) -> Config:
    """The configuration of --config, else $NETSTORE_CONFIG, else the defaults."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    if not path:
        return default_config()
    # Only the daemon opens the images; other commands need not find them.
    return load_config(path, check_paths=args.command == "serve",
                       resolve_medium=registered_medium)


# -- argument types ----------------------------------------------------------

def size(text: str) -> int:
    """A size with an optional K, M, G, T suffix (powers of 1024)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def on_off(text: str) -> bool:
    """on/off (or yes/no, true/false, 1/0)."""
    if text.lower() in ("on", "yes", "true", "1"):
        return True
    if text.lower() in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def whole_number(text: str) -> int:
    """An integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    n = whole_number(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return x


# -- running a command and its output -------------------------------------------

def registry(config: Config) -> Registry:
    """The registry of the configuration (its state directory's, or [registry] url's)."""
    reg = Registry.open(config.daemon.state_dir, config.registry.url)
    if config.registry.media is not None:
        try:
            reg.share_media(config.registry.media)
        except BaseException:
            reg.close()
            raise
    return reg


def print_json(data: Any, sort_keys: bool = False) -> None:
    """``data`` as indented JSON on stdout (--json)."""
    print(json.dumps(data, indent=2, sort_keys=sort_keys))


def said(as_json: bool, data: Any, text: str) -> int:
    """Print ``data`` as JSON or ``text`` as a line; exit status 0."""
    if as_json:
        print_json(data)
    else:
        print(text)
    return EXIT_OK


def on_or_off(flag: bool) -> str:
    """A setting as the command line spells it (see on_off)."""
    return "on" if flag else "off"


def memory_text(memory_mb: int, memory_min_mb: int | None) -> str:
    """A VM's memory: fixed (1024 MB) or a dynamic range (512..2048 MB)."""
    if memory_min_mb is not None:
        return f"{memory_min_mb}..{memory_mb} MB"
    return f"{memory_mb} MB"


def print_fields(rows: list[tuple[str, str]]) -> None:
    """``key: value`` lines, the values aligned in one column."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{width + 1}} {v}")


def refused(error: Exception | str) -> int:
    """A refused operation: one line on stderr, exit status 1."""
    print(f"netstore: {error}", file=sys.stderr)
    return EXIT_REFUSED


def usage(message: Exception | str) -> int:
    """A usage or configuration error: one line on stderr, exit status 2."""
    print(f"netstore: {message}", file=sys.stderr)
    return EXIT_USAGE


def refusing(errors: type[Exception] | tuple[type[Exception], ...],
             command: Callable[[], int]) -> int:
    """Run ``command``; a refusal among ``errors`` becomes one stderr line and status 1."""
    try:
        return command()
    except errors as e:
        return refused(e)


@contextmanager
def _warnings_relayed() -> Iterator[None]:
    """Collect the warnings of the block; print each as one stderr line after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"netstore: warning: {w.message}", file=sys.stderr)


def on_registry(config: Config, command: Callable[[Registry], int]) -> int:
    """Run ``command`` on the open registry; its warnings are relayed on stderr."""
    def opened() -> int:
        with registry(config) as reg:
            return command(reg)

    with _warnings_relayed():
        # registry, image and OVF refusals are DiskErrors
        return refusing(DiskError, opened)


def answered(config: Config, as_json: bool, show: Callable[[Any], None], op: str,
             **params: Any) -> int:
    """Ask the running daemon ``op``; print its answer as JSON or with ``show``."""
    # the control client needs trio: imported when a command runs, for a fast --help
    from netstore.control import ControlError, request

    try:
        result = request(config.daemon.state_dir, op, **params)
    except ControlError as e:
        return refused(e)
    if as_json:
        print_json(result, sort_keys=True)
    else:
        show(result)
    return EXIT_OK


def console() -> Any:
    """A rich console on stdout."""
    from rich.console import Console  # rich is imported by output only: a fast --help

    # piped output keeps whole rows (no wrapping at 80 columns)
    return Console(width=None if sys.stdout.isatty() else 320, highlight=False)


def table(columns: tuple[str, ...], no_wrap: tuple[str, ...] | bool = True,
          title: str | None = None) -> Any:
    """A rich table without borders; ``no_wrap`` names the columns never wrapped (or all)."""
    from rich.table import Table  # rich is imported by output only: a fast --help

    t = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for col in columns:
        t.add_column(col, no_wrap=no_wrap if isinstance(no_wrap, bool) else col in no_wrap)
    return t


class ProgressBar:
    """A rich progress bar on stderr when it is a terminal; nothing when piped."""

    def __init__(self, what: str, enabled: bool) -> None:
        self._what, self._enabled = what, enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self._enabled:
            # rich is imported by output only: a fast --help
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
