# netstore/cli/ovf.py - `netstore ovf export|import`: VMs to and from OVF 1.x
# packages (OVA, or an .ovf with its files beside it).
"""The ``netstore ovf`` commands."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.cli.common import (
    Command,
    ProgressBar,
    add_noun,
    on_registry,
    said,
)
from netstore.config import Config
from netstore.disk.media import format_size
from netstore.registry import Registry


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `ovf` and its subcommands to ``sub``; returns its command."""
    cmds = add_noun(sub, common, "ovf", help="OVF/OVA export and import",
                    description="Move VMs to and from other hypervisors as OVF 1.x "
                    "packages (VirtualBox, VMware ovftool).")
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
    return {"ovf": run}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `ovf export` or `ovf import`; warnings are relayed on stderr."""
    # netstore.ovf (tarfile, XML) is imported when an ovf command runs: a fast --help
    from netstore.ovf import export_vm, import_appliance

    def command(reg: Registry) -> int:
        if args.ovf_command == "export":
            with ProgressBar(f"exporting {args.vm}", not as_json) as bar:
                r = export_vm(reg, args.vm, args.out, progress=bar)
            return said(as_json, r.to_dict(), f"exported {r.machine} to {r.path} "
                        f"({format_size(r.size)}: {', '.join(n for n, _ in r.members)})")
        with ProgressBar(f"importing {args.file}", not as_json) as bar:
            r = import_appliance(reg, args.file, name=args.name, progress=bar)
        m = r.machine
        return said(as_json, r.to_dict(), f"imported {args.file} as VM {m.name}"
                    f" (UUID {m.uuid}): {m.cpus} vCPU(s), {m.memory_mb} MB, "
                    f"media {', '.join(x.name for x in r.media) or 'none'}")

    return on_registry(config, command)
