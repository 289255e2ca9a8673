# netstore/cli/host.py - `netstore host report`: the vCPUs and memory of the
# running VMs against the host's, and page fusion: the host's KSM figures and
# what it shares of each VM the daemon runs.  `netstore host list`: the hosts
# of the registry (several when it is shared), up or fenced, their VMs and load.
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
from netstore.vm.ksm import ksm_figures


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `host` and its subcommands to ``sub``; returns its command."""
    cmds = add_noun(sub, common, "host", help="the host report")
    cmds.add_parser("report", parents=[common],
                    help="vCPUs and memory of running VMs against the host's")
    cmds.add_parser("list", parents=[common],
                    help="the hosts of the registry: up or down, their VMs and memory")
    return {"host": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `host report` (warnings relayed on stderr) or `host list`."""
    if args.host_command == "list":
        return on_registry(config, lambda reg: _list(config, reg, as_json))
    return on_registry(config, lambda reg: _report(config, reg, as_json))


def _list(config: Config, reg: Any, as_json: bool) -> int:
    hosts = reg.hosts.list()
    if as_json:
        print_json([h.to_dict() for h in hosts])
        return EXIT_OK
    if not hosts:
        shared = "" if config.registry.shared else " (one host: [registry] url is not set)"
        print(f"no host has joined this registry{shared}")
        return EXIT_OK
    rows = table(("HOST", "STATE", "PORTAL", "VCPUS/CORES", "MEMORY", "FREE", "EPOCH", "LEASE",
                  "VMS"), no_wrap=("HOST", "PORTAL"))
    for h in hosts:
        rows.add_row(h.name, "up" if h.up else "down", h.portal or "-", f"{h.vcpus}/{h.cores}",
                     f"{h.memory_mb} MB", f"{h.free_mb} MB", str(h.epoch),
                     f"{h.renewed_ago_s:.0f} s ago", ", ".join(h.vms) or "-")
    console().print(rows)
    return EXIT_OK


def _shared(config: Config) -> dict[str, Any]:
    """Each VM the daemon runs: the memory KSM shares of it, in MB ({} without a daemon)."""
    from netstore.control import ControlError, request

    try:
        rows = request(config.daemon.state_dir, "vm_metrics", timeout=10)
    except ControlError:
        return {}
    return {r["name"]: r.get("shared_mb") for r in rows}


def _report(config: Config, reg: Any, as_json: bool) -> int:
    r = host_report(reg)
    r["ksm"] = ksm_figures()
    shared = _shared(config)
    for v in r["vms"]:
        v["shared_mb"] = shared.get(v["name"])
    if as_json:
        print_json(r)
    else:
        mem = f"{r['host_memory_mb']} MB" if r["host_memory_mb"] else "unknown"
        ratio = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        print(f"host: {r['host_cores']} cores, {mem} memory; {r['running_vms']} VM(s) running")
        print(f"vCPUs:   {r['vcpus']} on {r['host_cores']} cores (ratio {r['cpu_ratio']:.2f})")
        print(f"memory:  {r['memory_committed_mb']} MB committed of {mem} (ratio {ratio}); "
              f"balloons {r['balloons_mb']} MB")
        k = r["ksm"]
        if k:
            state = {1: "on", 0: "off", 2: "off (unmerging)"}.get(k["run"], str(k["run"]))
            print(f"page fusion (KSM {state}): {k['pages_sharing']} pages sharing "
                  f"{k['pages_shared']} shared ones, {k['saved_mb']} MB saved")
        if r["vms"]:
            rows = table(("VM", "vCPUs", "cap", "weight", "memory", "balloon", "shared"))
            for v in r["vms"]:
                rows.add_row(v["name"], str(v["vcpus"]), f"{v['cpu_cap']} %", str(v["weight"]),
                             memory_text(v["memory_mb"], v["memory_min_mb"]),
                             f"{v['balloon_mb']} MB",
                             "-" if v["shared_mb"] is None else f"{v['shared_mb']} MB")
            console().print(rows)
    for w in r["warnings"]:
        print(f"netstore: warning: {w}", file=sys.stderr)
    return EXIT_OK
