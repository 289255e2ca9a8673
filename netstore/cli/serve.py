# netstore/cli/serve.py - `netstore serve`: run the daemon in the foreground.
"""The ``netstore serve`` command."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.cli.common import Command
from netstore.config import Config


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `serve` to ``sub``; returns its command."""
    sub.add_parser(
        "serve",
        parents=[common],
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGINT/SIGTERM; SIGHUP "
        "re-reads the configuration file.",
    )
    return {"serve": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Serve ``config`` until SIGINT/SIGTERM; returns the daemon's exit status."""
    # the daemon (trio, the services) is imported only to serve: a fast --help
    from netstore.daemon import serve

    return serve(config)
