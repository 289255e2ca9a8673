# netstore/cli/common.py - what every command module shares: the exit statuses,
# the parser class and the common options (--config, --json), the one place the
# configuration is loaded, argument types (sizes, on/off, numbers), the progress
# bar and console, and turning a refusal into one stderr line and exit status 1.
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
from netstore.disk.media import parse_size
from netstore.registry import Registry

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


def load(args: argparse.Namespace) -> Config:
    """The configuration of --config, else $NETSTORE_CONFIG, else the defaults."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    if not path:
        return default_config()
    # Only the daemon opens the images; other commands need not find them.
    return load_config(path, check_paths=args.command == "serve")


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


# -- output --------------------------------------------------------------------

def registry(config: Config) -> Registry:
    """The registry of the configuration's state directory."""
    return Registry.open(config.daemon.state_dir)


def said(as_json: bool, data: Any, text: str) -> int:
    """Print ``data`` as JSON or ``text`` as a line; exit status 0."""
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(text)
    return EXIT_OK


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


def refused(error: Exception) -> int:
    """A refused operation: one line on stderr, exit status 1."""
    print(f"netstore: {error}", file=sys.stderr)
    return EXIT_REFUSED


def usage(message: str) -> int:
    """A usage error found after parsing: one line on stderr, exit status 2."""
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
def warnings_relayed() -> Iterator[None]:
    """Collect the warnings of the block; print each as one stderr line after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"netstore: warning: {w.message}", file=sys.stderr)


def console() -> Any:
    """A rich console on stdout."""
    from rich.console import Console  # rich is imported by output only: a fast --help

    # piped output keeps whole rows (no wrapping at 80 columns)
    return Console(width=None if sys.stdout.isatty() else 250, highlight=False)


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
