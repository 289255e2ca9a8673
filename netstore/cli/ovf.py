# netstore/cli/ovf.py - `netstore ovf export|import`: VMs to and from OVF 1.x
# packages (OVA, or an .ovf with its files beside it): export's gzip, chunk,
# manifest digest, signing and licence options; import's --accept-eula
# (the licence printed when it is not given) and --require-trusted.
"""The ``netstore ovf`` commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from netstore.cli.common import (
    Command,
    ProgressBar,
    add_noun,
    on_registry,
    print_json,
    refused,
    said,
    size,
    usage,
)
from netstore.config import Config
from netstore.disk.media import format_size
from netstore.registry import Registry

DIGESTS = ("sha1", "sha256", "sha512")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `ovf` and its subcommands to ``sub``; returns its command."""
    cmds = add_noun(sub, common, "ovf", help="OVF/OVA export and import",
                    description="Move VMs to and from other hypervisors as OVF 1.x "
                    "packages (VirtualBox, VMware ovftool).")
    p = cmds.add_parser("export", parents=[common], help="write a VM as an OVA",
                        description="Write VM as OUT.ova: its OVF descriptor, each disk's "
                        "current state as a streamOptimized VMDK, dvd/floppy images, and a "
                        "manifest (SHA256 unless --manifest), signed with --sign/--cert.")
    p.add_argument("vms", metavar="VM", nargs="+",
                   help="one VM, or several: one VirtualSystemCollection started in the "
                        "order of their VM group")
    p.add_argument("out", metavar="OUT.ova")
    p.add_argument("--compress", action="store_true",
                   help="gzip each file (ovf:compression=\"gzip\")")
    p.add_argument("--chunk-size", type=size, metavar="SIZE",
                   help="cut each file in chunks of SIZE (1M, 4G): NAME.000000000, ...")
    p.add_argument("--manifest", choices=DIGESTS, default="sha256",
                   help="the manifest's digest (default: sha256)")
    p.add_argument("--sign", metavar="KEY.pem", help="sign the manifest with this private key "
                   "(RSA or EC, unencrypted) into OUT's .cert; needs --cert")
    p.add_argument("--cert", metavar="CERT.pem", help="the key's X.509 certificate (PEM), "
                   "intermediates after it")
    p.add_argument("--eula", metavar="FILE", help="a licence agreement (text) the importer "
                   "must accept")
    p = cmds.add_parser("import", parents=[common], help="register the VM of an OVA or OVF",
                        description="Check the signature and the manifest, convert each disk "
                        "to qcow2 under <state_dir>/media/ and register the VM with new UUIDs.")
    p.add_argument("file", metavar="FILE.ova", help="an OVA, or an .ovf with its files beside it")
    p.add_argument("--name", help="the new VM's name (default: the one in the descriptor)")
    p.add_argument("--accept-eula", action="store_true",
                   help="accept the package's licence agreement (without it, it is printed "
                   "and the import refused)")
    p.add_argument("--require-trusted", action="store_true",
                   help="refuse a package that is unsigned or signed by a certificate this "
                   "host does not trust (self-signed: a warning otherwise)")
    return {"ovf": run}


def _show_licences(licences: list[str], as_json: bool) -> None:
    if as_json:
        print_json({"eula": licences, "accepted": False})
        return
    for text in licences:
        print(text, end="\n\n")
    sys.stdout.flush()


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `ovf export` or `ovf import`; warnings are relayed on stderr."""
    # netstore.ovf (tarfile, XML, cryptography) is imported when an ovf command runs: a fast --help
    from netstore.ovf import EulaNotAcceptedError, OvfError, export_vms, import_appliance

    if args.ovf_command == "export" and (args.sign is None) != (args.cert is None):
        return usage("--sign and --cert go together (see: netstore ovf export --help)")

    def export(reg: Registry) -> int:
        signer, eula = None, None
        if args.sign:
            from netstore.ovf.signing import Signer

            signer = Signer.load(args.sign, args.cert)
        if args.eula:
            try:
                eula = Path(args.eula).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise OvfError(f"{args.eula}: cannot read the licence ({e})") from None
        with ProgressBar(f"exporting {', '.join(args.vms)}", not as_json) as bar:
            r = export_vms(reg, args.vms, args.out, progress=bar, compress=args.compress,
                           chunk_size=args.chunk_size, manifest=args.manifest, signer=signer,
                           eula=eula)
        return said(as_json, r.to_dict(), f"exported {r.machine} to {r.path} "
                    f"({format_size(r.size)}: {', '.join(n for n, _ in r.members)})")

    def command(reg: Registry) -> int:
        if args.ovf_command == "export":
            return export(reg)
        try:
            with ProgressBar(f"importing {args.file}", not as_json) as bar:
                r = import_appliance(reg, args.file, name=args.name, progress=bar,
                                     accept_eula=args.accept_eula,
                                     require_trusted=args.require_trusted)
        except EulaNotAcceptedError as e:
            _show_licences(e.licences, as_json)
            return refused(e)
        m = r.machine
        return said(as_json, r.to_dict(), f"imported {args.file} as VM {m.name}"
                    f" (UUID {m.uuid}): {m.cpus} vCPU(s), {m.memory_mb} MB, "
                    f"media {', '.join(x.name for x in r.media) or 'none'}")

    return on_registry(config, command)
