# netstore/cli/host.py - `netstore host report`: the vCPUs and memory of the
# running VMs against the host's.
"""The ``netstore host`` commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from netstore.cli.common import (
    EXIT_OK,
    Command,
    add_noun,
    console,
    memory_text,
    on_registry,
    print_json,
    table,
)
from netstore.config import Config
from netstore.registry.machines import host_report


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `host` and its subcommands to ``sub``; returns its command."""
    cmds = add_noun(sub, common, "host", help="the host report")
    cmds.add_parser("report", parents=[common],
                    help="vCPUs and memory of running VMs against the host's")
    return {"host": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `host report`; warnings are relayed on stderr."""
    return on_registry(config, lambda reg: _report(reg, as_json))


def _report(reg: Any, as_json: bool) -> int:
    r = host_report(reg)
    if as_json:
        print_json(r)
    else:
        mem = f"{r['host_memory_mb']} MB" if r["host_memory_mb"] else "unknown"
        ratio = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        print(f"host: {r['host_cores']} cores, {mem} memory; {r['running_vms']} VM(s) running")
        print(f"vCPUs:   {r['vcpus']} on {r['host_cores']} cores (ratio {r['cpu_ratio']:.2f})")
        print(f"memory:  {r['memory_committed_mb']} MB committed of {mem} (ratio {ratio}); "
              f"balloons {r['balloons_mb']} MB")
        if r["vms"]:
            rows = table(("VM", "vCPUs", "cap", "weight", "memory", "balloon"))
            for v in r["vms"]:
                rows.add_row(v["name"], str(v["vcpus"]), f"{v['cpu_cap']} %", str(v["weight"]),
                             memory_text(v["memory_mb"], v["memory_min_mb"]),
                             f"{v['balloon_mb']} MB")
            console().print(rows)
    for w in r["warnings"]:
        print(f"netstore: warning: {w}", file=sys.stderr)
    return EXIT_OK
