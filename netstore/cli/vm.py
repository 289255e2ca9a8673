# netstore/cli/vm.py - `netstore vm create|modify|controller|attach|detach|nic|
# snapshot|list|info|remove|qemu-args`: the VMs of the registry (the verbs of
# running VMs are in netstore/cli/vmrun.py).
"""The ``netstore vm`` commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from netstore.addresses import format_portal
from netstore.cli.common import (
    EXIT_OK,
    Command,
    add_noun,
    console,
    memory_text,
    on_off,
    on_or_off,
    on_registry,
    print_fields,
    print_json,
    refused,
    said,
    table,
    usage,
    whole_number,
)
from netstore.cli.impair import (
    add_impairment_options,
    directions,
    flag_error,
    impairment_table,
)
from netstore.cli.vmrun import VERBS as RUN_VERBS
from netstore.cli.vmrun import add_run_commands
from netstore.cli.vmrun import run as run_vm
from netstore.config import Config
from netstore.impairments import DIRECTIONS, ImpairmentError, parse_impairment
from netstore.registry import NicImpairmentError
from netstore.registry.machines import BUSES, CHIPSETS, NIC_MODELS, TRANSPORTS
from netstore.registry.snapshots import Snapshots
from netstore.registry.startup import check_startup
from netstore.vm.cmdline import format_args, qemu_args


def _memory_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX in MB (512:2048), got {text!r}")
    return whole_number(lo), whole_number(hi)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `vm` and its subcommands to ``sub``; returns its command."""
    cmds = add_noun(sub, common, "vm", help="virtual machines: create, modify, attach, "
                    "nic, start, stop, control, console, snapshot, list, info, remove",
                    description="The VMs of the registry (works without the daemon; a "
                    "running daemon picks changes up within a second).")

    p = cmds.add_parser("create", parents=[common], help="register a new VM (powered off)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cpus", type=whole_number, default=1, metavar="N")
    p.add_argument("--memory", type=whole_number, default=1024, metavar="MB")
    p.add_argument("--ostype", default="Other", metavar="T")
    p.add_argument("--chipset", choices=CHIPSETS, default="piix3")

    p = cmds.add_parser("modify", parents=[common], help="change CPUs, memory, balloon, ...",
                        description="Hardware and boot settings change only while the VM "
                        "is powered off; "
                        "--balloon only while it runs; --plugcpu/--unplugcpu need "
                        "--cpuhotplug on.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cpus", type=whole_number, metavar="N",
                   help="vCPUs (with CPU hot-plug on: the maximum)")
    p.add_argument("--cpuhotplug", type=on_off, metavar="on|off")
    p.add_argument("--plugcpu", type=whole_number, metavar="I", help="plug vCPU I")
    p.add_argument("--unplugcpu", type=whole_number, metavar="I", help="unplug vCPU I (never 0)")
    p.add_argument("--cpu-cap", type=whole_number, metavar="PCT", help="execution cap 1..100 %%")
    p.add_argument("--weight", type=whole_number, metavar="W", help="relative CPU weight 1..10000")
    p.add_argument("--memory", type=whole_number, metavar="MB", help="fixed memory")
    p.add_argument("--memory-range", type=_memory_range, metavar="MIN:MAX",
                   help="dynamic memory in MB")
    p.add_argument("--balloon", type=whole_number, metavar="MB", help="balloon size (running VM)")
    p.add_argument("--pagefusion", type=on_off, metavar="on|off")
    p.add_argument("--ostype", metavar="T")
    p.add_argument("--chipset", choices=CHIPSETS)
    p.add_argument("--boot", metavar="ORDER", help="boot order: devices among disk, dvd, "
                   "net, comma-separated (QEMU's -boot order=)")
    p.add_argument("--kernel", metavar="FILE", help="boot this kernel directly (QEMU's "
                   "-kernel); none: boot from the devices again")
    p.add_argument("--initrd", metavar="FILE", help="its initrd (none: without)")
    p.add_argument("--append", metavar="ARGS", help="its command line")
    p.add_argument("--group", metavar="G", help="the group `vm start --group` starts it with "
                   "(none: no group)")
    p.add_argument("--start-order", type=whole_number, metavar="N",
                   help="its place in the group's start order (lower first)")
    p.add_argument("--start-delay", type=whole_number, metavar="S",
                   help="seconds `vm start --group` waits after starting it")

    p = cmds.add_parser("controller", parents=[common], help="add or remove a storage controller")
    p.add_argument("name", metavar="NAME")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--add", metavar="CTL", help="the new controller's name (sata0)")
    g.add_argument("--remove", metavar="CTL", help="remove an empty controller")
    p.add_argument("--bus", choices=list(BUSES))
    p.add_argument("--chipset", metavar="C", help="; ".join(
        f"{b}: {', '.join(spec.chipsets)}" for b, spec in BUSES.items()))

    p = cmds.add_parser("attach", parents=[common], help="attach a medium to a slot")
    _slot_options(p)
    p.add_argument("--disk", required=True, metavar="MEDIUM")
    p.add_argument("--type", dest="slot_kind", choices=("hdd", "dvd", "floppy"),
                   help="the slot's kind (default: the medium's)")

    p = cmds.add_parser("detach", parents=[common], help="empty a slot")
    _slot_options(p)

    p = cmds.add_parser("nic", parents=[common], help="add, change or remove a NIC",
                        description="Add the NIC in --slot or change it (what is not given "
                        "is kept; a new NIC needs --switch); its MAC is generated "
                        "when not given; udp and stream NICs get ports allocated "
                        "(NETSTORE_NIC_PORTS=LO-HI, default 20000-29999). The impairment "
                        "options impair the NIC's link, also while the VM runs (a running "
                        "daemon applies them to the switch port at once).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--slot", type=whole_number, required=True, metavar="N")
    p.add_argument("--switch", metavar="SW", help="the switch it plugs into (needed for a "
                   "new NIC)")
    p.add_argument("--mac", metavar="M")
    p.add_argument("--vlan", type=whole_number, metavar="V")
    p.add_argument("--transport", choices=TRANSPORTS)
    p.add_argument("--model", choices=NIC_MODELS,
                   help="the adapter the guest sees (a new NIC: virtio)")
    p.add_argument("--port-security", choices=("on", "off"),
                   help="the NIC's switch port admits only the NIC's MAC")
    p.add_argument("--remove", action="store_true", help="remove the NIC in --slot")
    p.add_argument("--clear-impairments", action="store_true",
                   help="a perfect link again (in the directions chosen; impairment options "
                   "given with it start from a perfect link)")
    add_impairment_options(p, "the NIC's link")

    add_run_commands(cmds, common)
    for verb, what in (("info", "everything about one VM"),
                       ("remove", "unregister a powered-off VM without snapshots")):
        p = cmds.add_parser(verb, parents=[common], help=what)
        p.add_argument("name", metavar="NAME")
    cmds.add_parser("list", parents=[common], help="every VM")

    p = cmds.add_parser("snapshot", parents=[common], help="take, restore or delete a snapshot")
    p.add_argument("name", metavar="NAME")
    p.add_argument("action", choices=("take", "restore", "delete", "list"))
    p.add_argument("snapshot", metavar="SNAP", nargs="?")
    p.add_argument("--description", default="")
    p.add_argument("--no-memory", action="store_true",
                   help="of a running VM: its disks only (crash-consistent), not its memory")

    p = cmds.add_parser("qemu-args", parents=[common],
                        help="a qemu-system command line running the VM on netstore: disks "
                             "over iscsi://, NICs on their switch ports")
    p.add_argument("name", metavar="NAME")
    return {"vm": run}


def _slot_options(p: argparse.ArgumentParser) -> None:
    """NAME --controller CTL --port P [--device D]: a slot of a VM (attach, detach)."""
    p.add_argument("name", metavar="NAME")
    p.add_argument("--controller", required=True, metavar="CTL")
    p.add_argument("--port", type=whole_number, required=True, metavar="P")
    p.add_argument("--device", type=whole_number, default=0, metavar="D")


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run one `vm` subcommand on the registry; its warnings are relayed on stderr."""
    if args.vm_command in RUN_VERBS:
        return run_vm(config, args, as_json)
    if args.vm_command == "qemu-args":
        return on_registry(config, lambda reg: _qemu_args(config, reg, args, as_json))
    if args.vm_command == "info":
        return on_registry(config, lambda reg: _info(config, reg, args, as_json))
    if args.vm_command == "snapshot":
        return on_registry(config, lambda reg: _snapshot(config, reg, args, as_json))
    if args.vm_command == "modify":
        return on_registry(config, lambda reg: _modify(config, reg, args, as_json))
    return on_registry(config, lambda reg: _COMMANDS[args.vm_command](reg, args, as_json))


def _cpus_text(m: Any) -> str:
    if m.cpu_hotplug:
        return f"{m.online_cpus} of {m.cpus} (hot-plug: {','.join(map(str, m.plugged_cpus))})"
    return str(m.cpus)


def _create(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    m = reg.machines.create(args.name, cpus=args.cpus, memory_mb=args.memory,
                            ostype=args.ostype, chipset=args.chipset)
    return said(as_json, m.to_dict(), f"created VM {m.name}: {m.cpus} vCPU(s), "
                f"{m.memory_mb} MB, {m.ostype}, UUID {m.uuid}")


# What `vm modify` may change while the daemon runs the VM: the daemon tells
# QEMU too (as `vm control` does).
_LIVE_CHANGES = {"plug_cpu": "plugcpu", "unplug_cpu": "unplugcpu", "cpu_cap": "cpu-cap",
                 "balloon_mb": "balloon"}


def _modify_running(config: Config, name: str, live: dict[str, int]) -> None:
    """Apply the changes to the VM's QEMU through the daemon (which records them).

    Raises:
        ControlError: the daemon refused one (those before it are applied).
    """
    from netstore.cli.remote import vm_request

    for key, value in live.items():
        vm_request(config, "vm_control", 60, name=name, action=_LIVE_CHANGES[key], value=value)


def _modify(config: Config, reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    asked = dict(cpus=args.cpus, cpu_hotplug=args.cpuhotplug, plug_cpu=args.plugcpu,
                 unplug_cpu=args.unplugcpu, cpu_cap=args.cpu_cap, weight=args.weight,
                 memory_mb=args.memory, memory_range=args.memory_range,
                 balloon_mb=args.balloon, page_fusion=args.pagefusion, ostype=args.ostype,
                 chipset=args.chipset, boot_order=args.boot, kernel=args.kernel,
                 initrd=args.initrd, append=args.append)
    startup = dict(group=None if args.group is None else
                   ("" if args.group == "none" else args.group),
                   order=args.start_order, delay_s=args.start_delay)
    if all(v is None for v in (*asked.values(), *startup.values())):
        return usage("vm modify: nothing to change (see: netstore vm modify --help)")
    if args.memory is not None and args.memory_range is not None:
        return usage("vm modify: --memory and --memory-range exclude each other")
    given = {k: v for k, v in asked.items() if v is not None}
    vm = reg.machines.get(args.name)
    check_startup(vm.name, **startup)  # refused before anything changes
    if given and vm.running and vm.run_type == "headless" and \
            given.keys() <= _LIVE_CHANGES.keys():
        from netstore.control import ControlError

        try:  # its QEMU is told too, as by vm control
            _modify_running(config, vm.name, given)
        except ControlError as e:
            return refused(e)
    elif given:
        reg.machines.modify(args.name, **asked)
    m = reg.machines.set_startup(args.name, **startup)
    boot = m.boot
    how = f"kernel {boot.kernel}" if boot.kernel else (
        f"boot order {','.join(boot.order)}" if boot.order else "QEMU's boot order")
    group = (f", group {m.startup.group} (order {m.startup.order}, delay "
             f"{m.startup.delay_s} s)") if m.startup.group else ""
    return said(as_json, m.to_dict(), f"{m.name}: {_cpus_text(m)} vCPU(s), cap "
                f"{m.cpu_cap} %, memory {memory_text(m.memory_mb, m.memory_min_mb)}, "
                f"balloon {m.balloon_mb} MB, page fusion {on_or_off(m.page_fusion)}, {how}"
                f"{group}")


def _controller(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    if args.remove:
        reg.machines.remove_controller(args.name, args.remove)
        return said(as_json, {"removed": args.remove}, f"removed controller {args.remove} "
                    f"of {args.name}")
    if args.bus is None:
        return usage("vm controller: --add needs --bus")
    c = reg.machines.add_controller(args.name, args.add, args.bus, args.chipset)
    return said(as_json, c.to_dict(), f"{args.name}: controller {c.name} ({c.bus}, "
                f"{c.chipset})")


def _attach(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    a = reg.machines.attach(args.name, args.controller, args.port, args.disk,
                            device=args.device, slot_kind=args.slot_kind)
    return said(as_json, a.to_dict(), f"{args.name}: {a.medium} ({a.type} {a.slot_kind}) "
                f"attached at {a.slot}")


def _detach(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    a = reg.machines.detach(args.name, args.controller, args.port, device=args.device)
    return said(as_json, a.to_dict(), f"{args.name}: {a.medium} detached from {a.slot}")


def _nic(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    if args.remove:
        n = reg.machines.remove_nic(args.name, args.slot)
        return said(as_json, n.to_dict(), f"{args.name}: NIC {n.slot} ({n.mac}) removed")
    see = " (see: netstore vm nic --help)"
    wanted = impairment_table(args)
    if (args.dir_in or args.dir_out) and not wanted and not args.clear_impairments:
        return usage("vm nic: --in/--out go with impairment options or --clear-impairments"
                     + see)
    change: Any = wanted or None
    if args.clear_impairments:
        try:
            change = parse_impairment(wanted)  # over a perfect link, not the NIC's settings
        except ImpairmentError as e:
            return usage(flag_error(e.key, e.expected, e.got) + see)
    impairs = {f"impair_{d}": change for d in directions(args)} if change is not None else {}
    security = None if args.port_security is None else args.port_security == "on"
    try:
        n = reg.machines.set_nic(args.name, args.slot, args.switch, mac=args.mac,
                                 vlan=args.vlan, transport=args.transport, model=args.model,
                                 port_security=security, **impairs)
    except NicImpairmentError as e:
        return usage(flag_error(e.key, e.expected, e.got) + see)
    where = n.switch_addr + (f" <-> {n.vm_addr}" if n.vm_addr else "")
    locked = ", port security on" if n.port_security else ""
    return said(as_json, n.to_dict(), f"{args.name}: NIC {n.slot} {n.mac} on {n.switch} "
                f"VLAN {n.vlan}, {n.transport} {where}{locked}{_impaired_text(n)}")


def _impaired_text(n: Any) -> str:
    """``; impaired in: delay 80ms, out: none``, or nothing for a perfect link."""
    imps = [getattr(n, f"impair_{d}") for d in DIRECTIONS]
    if all(imp is None for imp in imps):
        return ""
    return "; impaired " + ", ".join(f"{d}: {imp.describe() if imp else 'none'}"
                                     for d, imp in zip(DIRECTIONS, imps, strict=True))


def _remove(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    m = reg.machines.remove(args.name)
    return said(as_json, {"removed": m.name, "uuid": m.uuid}, f"removed VM {m.name}")


def _live_snapshot(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """`vm snapshot NAME take SNAP` of a VM the daemon runs: the daemon pauses it."""
    from netstore.cli.remote import vm_request
    from netstore.control import ControlError

    try:
        d = vm_request(config, "vm_snapshot", 180, name=args.name, snapshot=args.snapshot,
                       description=args.description, memory=not args.no_memory)
    except ControlError as e:
        return refused(e)
    what = "disks and memory" if d["state_file"] else "disks only"
    return said(as_json, d, f"{args.name}: snapshot {d['name']} taken while running ({what}; "
                            f"paused {d['paused_s']:.2f} s)")


def _snapshot(config: Config, reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    snaps = Snapshots(reg)
    if args.action == "take" and args.snapshot is not None:
        m = reg.machines.get(args.name)
        if m.running and m.run_type == "headless":
            return _live_snapshot(config, args, as_json)
    if args.action == "list":
        found = snaps.list(args.name)
        if as_json:
            print_json([s.to_dict() for s in found])
            return EXIT_OK
        for s in found:
            print(f"{'*' if s.current else ' '} {s.name}  parent {s.parent or '-'}  "
                  f"{s.created}  {s.description}")
        if not found:
            print(f"{args.name} has no snapshots")
        return EXIT_OK
    if args.snapshot is None:
        return usage(f"vm snapshot {args.action}: SNAP is needed")
    if args.action == "take":
        s = snaps.take(args.name, args.snapshot, args.description)
        disks = ", ".join(s.disks) or "no disks"
        return said(as_json, s.to_dict(), f"{args.name}: snapshot {s.name} taken ({disks})")
    if args.action == "restore":
        s = snaps.restore(args.name, args.snapshot)
        saved = "; its next start resumes the saved memory" if s.state_file else ""
        return said(as_json, s.to_dict(), f"{args.name}: restored snapshot {s.name}{saved}")
    snaps.delete(args.name, args.snapshot)
    return said(as_json, {"deleted": args.snapshot},
                f"{args.name}: snapshot {args.snapshot} deleted (its data merged)")


def _list(reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    vms = reg.machines.list()
    if as_json:
        print_json([reg.machines.info(m.name) for m in vms])
        return EXIT_OK
    if not vms:
        print("no VMs registered (netstore vm create NAME)")
        return EXIT_OK
    rows = table(("name", "power", "vCPUs", "memory", "disks", "NICs", "snapshot", "uuid"),
                 no_wrap=("name", "uuid"))
    for m in vms:
        disks = reg.machines.attachments(m.name)
        nics = reg.machines.nics(m.name)
        rows.add_row(m.name, m.state, _cpus_text(m), memory_text(m.memory_mb, m.memory_min_mb),
                     ", ".join(a.medium for a in disks) or "-", str(len(nics)),
                     m.current_snapshot or "-", m.uuid)
    console().print(rows)
    return EXIT_OK


def _runtime(config: Config, m: Any) -> dict[str, Any] | None:
    """What the daemon's QEMU says of a headless VM (None when it does not run one)."""
    if not m.running or m.run_type != "headless":
        return None
    from netstore.cli.remote import vm_request
    from netstore.control import ControlError

    try:
        return vm_request(config, "vm_runtime", 10, name=m.name)  # type: ignore[no-any-return]
    except ControlError:
        return None


def _product_fields(product: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An imported appliance's ProductSection as `vm info` lines."""
    if not product:
        return []
    what = " ".join(str(product[k]) for k in ("product", "version") if product.get(k))
    rows = [("product", what + (f" ({product['vendor']})" if product.get("vendor") else ""))]
    rows += [(f"  {k.replace('_', ' ')}", str(product[k]))
             for k in ("full_version", "product_url", "vendor_url", "app_url") if product.get(k)]
    rows += [(f"  property {p['key']}", f"{p.get('value', '')} ({p.get('type', 'string')})")
             for p in product.get("properties", [])]
    return rows


def _info(config: Config, reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    d = reg.machines.info(args.name)
    m = reg.machines.get(args.name)
    live = _runtime(config, m)
    if as_json:
        d["runtime"] = live
        print_json(d)
        return EXIT_OK
    state = m.state + (f" ({m.run_type})" if m.run_type else "")
    fields = [("name", m.name), ("uuid", m.uuid), ("ostype", m.ostype), ("power", state)]
    if m.aborted:
        fields.append(("aborted because", m.aborted))
    if live:
        fields += [("QEMU", f"pid {live['pid']}, {live['accel']}, {live['status']}"),
                   ("vCPUs online (QEMU)", str(live["vcpus"])),
                   ("console", live["console"])]
        if "balloon_actual_mb" in live:
            fields.append(("guest memory (balloon actual)", f"{live['balloon_actual_mb']} MB"))
    print_fields(fields + [
        ("vCPUs", _cpus_text(m)), ("execution cap", f"{m.cpu_cap} %"),
        ("weight", str(m.weight)), ("memory", memory_text(m.memory_mb, m.memory_min_mb)),
        ("balloon", f"{m.balloon_mb} MB"), ("page fusion", on_or_off(m.page_fusion)),
        ("chipset", m.chipset), ("snapshot", m.current_snapshot or "-"),
        ("boot order", ",".join(m.boot.order) or "QEMU's"),
        ("kernel", m.boot.kernel or "-"), ("initrd", m.boot.initrd or "-"),
        ("kernel command line", m.boot.append or "-"),
        ("group", f"{m.startup.group} (order {m.startup.order}, delay {m.startup.delay_s} s)"
         if m.startup.group else "-"),
        *_product_fields(m.product),
        ("created", m.created)])
    out = console()
    rows = table(("controller", "bus", "chipset", "port", "device", "kind", "medium", "type"),
                 title="storage")
    atts = d["attachments"]
    for c in d["controllers"]:
        held = [a for a in atts if a["controller"] == c["name"]]
        for a in held or [None]:
            rows.add_row(c["name"], c["bus"], c["chipset"],
                         *(("-",) * 5 if a is None else (
                             str(a["port"]), str(a["device"]), a["slot_kind"], a["medium"],
                             a["type"])))
    out.print(rows)
    rows = table(("slot", "model", "mac", "switch", "vlan", "transport", "switch end", "VM end",
                  "impaired in (VM sends)", "impaired out (VM receives)"),
                 no_wrap=("slot", "mac", "switch end", "VM end"), title="NICs")
    for n in reg.machines.nics(args.name):
        rows.add_row(str(n.slot), n.model, n.mac, n.switch, str(n.vlan), n.transport,
                     n.switch_addr, n.vm_addr or "-",
                     *(imp.describe() if imp else "-" for imp in (n.impair_in, n.impair_out)))
    out.print(rows)
    if d["snapshots"]:
        rows = table(("", "name", "parent", "created", "disks", "description"),
                     title="snapshots")
        for s in d["snapshots"]:
            rows.add_row("*" if s["current"] else "", s["name"], s["parent"] or "-",
                         s["created"], ", ".join(s["disks"]) or "-", s["description"])
        out.print(rows)
    return EXIT_OK


def _qemu_args(config: Config, reg: Any, args: argparse.Namespace, as_json: bool) -> int:
    m = reg.machines
    vm = m.get(args.name)
    host, port = config.iscsi.portals[0]
    argv = qemu_args(vm, m.controllers(vm.name), m.attachments(vm.name), m.nics(vm.name),
                     portal=format_portal(host, port), base_iqn=config.iscsi.base_iqn)
    if as_json:
        print(json.dumps(argv))
    else:
        print(format_args(argv))
        if not vm.running:
            print(f"netstore: note: {vm.name} is powered off; its target accepts logins "
                  f"after `netstore vm start {vm.name}`", file=sys.stderr)
    return EXIT_OK


# qemu-args is run apart: it needs the configuration (the portal, the base IQN).
_COMMANDS = {
    "create": _create,
    "controller": _controller,
    "attach": _attach,
    "detach": _detach,
    "nic": _nic,
    "remove": _remove,
    "list": _list,
}
