# netstore/cli/status.py - `netstore status`: the running daemon's targets,
# sessions and connections, asked over its control socket.
"""The ``netstore status`` command."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.cli.common import Command, answered
from netstore.config import Config


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `status` to ``sub``; returns its command."""
    sub.add_parser(
        "status",
        parents=[common],
        help="show the running daemon's targets, sessions and connections",
    )
    return {"status": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Ask the running daemon for its status and print it."""
    return answered(config, as_json, _print_status, "status")


def _print_status(result: dict[str, Any]) -> None:
    # rich is imported by output only: a fast --help
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

    workers = Table(title="iSCSI workers", title_justify="left")
    for col in ("worker", "pid", "running", "starts", "targets"):
        workers.add_column(col)
    for w in iscsi.get("workers", []):
        workers.add_row(
            str(w.get("name", "?")),
            str(w.get("pid") or "-"),
            "yes" if w.get("running") else "no (starting again)",
            str(w.get("starts", "?")),
            ", ".join(w.get("targets", [])) or "-",
        )
    console.print(workers)
