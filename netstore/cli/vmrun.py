# netstore/cli/vmrun.py - `netstore vm start|stop|reset|pause|resume|console|
# screenshot|control`: VMs that run. A headless VM (the default) runs in the
# daemon, so these ask it over the control socket; `--type external` only
# marks the VM running for netstore's services (the user runs QEMU, from
# `vm qemu-args`). `vm console` talks to the VM's serial console socket
# itself, like `virsh console` (Ctrl-] leaves).
"""The command line of running VMs: start, stop, control, console, screenshot."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from netstore.cli.common import (
    EXIT_OK,
    on_registry,
    positive_seconds,
    print_json,
    refused,
    registry,
    said,
    usage,
    whole_number,
)
from netstore.config import Config
from netstore.disk.api import DiskError

__all__ = ["VERBS", "add_run_commands", "run"]

VERBS = ("start", "stop", "reset", "pause", "resume", "console", "screenshot", "control",
         "metrics")
# `vm start` waits for the daemon to start QEMU (an `accel = "auto"` probe included).
START_TIMEOUT_S = 90.0
CONTROL_ACTIONS = ("plugcpu", "unplugcpu", "balloon", "cpu-cap", "nic", "acpipowerbutton",
                   "pause", "resume", "reset", "poweroff")
_VALUE_ACTIONS = {"plugcpu": "N", "unplugcpu": "N", "balloon": "MB", "cpu-cap": "PCT"}
DETACH = b"\x1d"  # Ctrl-]


def add_run_commands(cmds: Any, common: argparse.ArgumentParser) -> None:
    p = cmds.add_parser("start", parents=[common],
                        help="power on (applies the disk rules) and run its QEMU headless")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--group", metavar="G",
                   help="start every VM of group G in its start order, waiting each one's "
                        "start delay (instead of NAME)")
    p.add_argument("--type", choices=("headless", "external"), default="headless",
                   help="headless: the daemon runs QEMU (default); external: you run it "
                        "(netstore vm qemu-args), netstore only serves its disks and NICs")
    p.add_argument("--vnc", type=whole_number, metavar="DISPLAY",
                   help="a VNC display on 127.0.0.1 (port 5900 + DISPLAY)")
    p.add_argument("--host", metavar="H",
                   help="the host to run it on, in a shared registry (default: the host up "
                        "with the most free memory)")
    p = cmds.add_parser("stop", parents=[common],
                        help="press the ACPI power button and wait for the guest to power off")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                   help="how long the guest has (60; 0 with --force: at once)")
    p.add_argument("--force", action="store_true",
                   help="power off after --timeout if the guest has not")
    for verb, what in (("reset", "reset the VM (a guest reboot; no disk is reset)"),
                       ("pause", "pause the VM's vCPUs"), ("resume", "run a paused VM again"),
                       ("console", "attach this terminal to the VM's serial console "
                                   "(Ctrl-] leaves)")):
        p = cmds.add_parser(verb, parents=[common], help=what)
        p.add_argument("name", metavar="NAME")
    p = cmds.add_parser("screenshot", parents=[common], help="save the VM's screen as PNG")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="OUT.png")
    p = cmds.add_parser("metrics", parents=[common],
                        help="CPU time, resident and shared (page fusion) memory of running VMs")
    p.add_argument("name", metavar="NAME", nargs="?")
    p = cmds.add_parser("control", parents=[common],
                        help="change the running VM: plugcpu N, unplugcpu N, balloon MB, "
                             "cpu-cap PCT, nic N link on|off, acpipowerbutton, pause, "
                             "resume, reset, poweroff")
    p.add_argument("name", metavar="NAME")
    p.add_argument("action", choices=CONTROL_ACTIONS)
    p.add_argument("values", nargs="*", metavar="ARG")


def _seconds(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_seconds(text)


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    verb = args.vm_command
    if verb == "start" and (args.name is None) == (args.group is None):
        return usage("vm start: give NAME or --group G (one of them)")
    if verb == "start" and args.group is not None:
        return _start_group(config, args, as_json)
    if verb == "start":
        from netstore.control import ControlError

        try:
            return _said_machine(as_json, _start_one(config, args.name, args.type, args.vnc,
                                                     args.host))
        except (ControlError, DiskError) as e:
            return refused(e)
    if verb == "console":
        return _console(config, args.name)
    if verb == "stop":
        # without a daemon no QEMU of netstore's runs: the VM is only marked off
        return _ask(config, as_json, "vm_stop", args.timeout + 30, name=args.name,
                    seconds=args.timeout, force=args.force,
                    alone=lambda: on_registry(config, lambda reg: _said_machine(
                        as_json, reg.machines.stop(args.name).to_dict())))
    if verb in ("reset", "pause", "resume"):
        return _ask(config, as_json, "vm_control", 30, name=args.name, action=verb)
    if verb == "screenshot":
        path = os.path.abspath(args.file)
        return _ask(config, as_json, "vm_screenshot", 30, name=args.name, path=path,
                    show=lambda r: print(f"{r['name']}: screen saved to {r['file']}"))
    if verb == "metrics":
        return _ask(config, as_json, "vm_metrics", 30, show=_show_metrics, name=args.name)
    return _control(config, args, as_json)


def _show_metrics(rows: list[dict[str, Any]]) -> None:
    from netstore.cli.common import console, table

    t = table(("VM", "QEMU pid", "CPU s", "RAM/VMM/Used MB", "RAM/VMM/Shared MB",
               "page fusion"))
    for r in rows:
        t.add_row(r["name"], str(r["pid"]), str(r.get("cpu_s", "-")), str(r.get("rss_mb", "-")),
                  str(r.get("shared_mb", "-")), "on" if r["page_fusion"] else "off")
    console().print(t)


def _start_one(config: Config, name: str, run_type: str, vnc: int | None,
               host: str | None = None) -> dict[str, Any]:
    """Power VM ``name`` on: external, in the registry only; headless, by the
    daemon, which runs its QEMU.  Its record (headless: with pid and accel).
    In a shared registry it runs on ``host`` (default: placed); a headless VM
    placed on another host is started by that host's daemon (a request
    through the registry), which makes its disks' own layers there.

    Raises:
        ControlError: the daemon refused, or there is none (saying what to do).
        DiskError: the registry refused (the VM runs, a disk rule).
    """
    from netstore.control import ControlError

    if config.registry.shared:
        with registry(config) as reg:
            reg.machines.get(name)  # an unknown VM is refused here, not by another host
            host = host or reg.hosts.place()
            if host is not None and host != config.registry.host:
                if not reg.hosts.get(host).up:
                    raise ControlError(f"host {host} is down (see: netstore host list)")
                if run_type == "external":
                    return reg.machines.start(name, run_type,  # type: ignore[no-any-return]
                                              host=host).to_dict()
        if host is not None and host != config.registry.host:  # that host's daemon starts it
            from netstore.cli.remote import on_host

            return on_host(config, host, "vm_start", START_TIMEOUT_S,  # type: ignore[no-any-return]
                           name=name, vnc=vnc)
    elif host is not None and host != config.registry.host:
        raise ControlError(f"vm start --host {host}: this registry is not shared by other "
                           "hosts ([registry] url in the configuration)")
    if run_type == "external":
        with registry(config) as reg:
            return reg.machines.start(  # type: ignore[no-any-return]
                name, "external", host=config.registry.host if config.registry.shared else None
            ).to_dict()
    from netstore.control import DaemonNotRunning, request

    try:
        return request(config.daemon.state_dir, "vm_start",  # type: ignore[no-any-return]
                       timeout=START_TIMEOUT_S, name=name, vnc=vnc)
    except DaemonNotRunning:
        raise ControlError(_no_daemon(config, name)) from None


def _start_group(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """`vm start --group G`: its VMs in start order, each start delay waited."""
    from netstore.control import ControlError

    try:
        with registry(config) as reg:
            members = reg.machines.group(args.group)
    except DiskError as e:
        return refused(e)
    started: list[dict[str, Any]] = []
    for i, (name, _, delay) in enumerate(members):
        try:
            machine = _start_one(config, name, args.type, args.vnc, args.host)
        except (ControlError, DiskError) as e:
            done = ", ".join(m for m, _, _ in members[:i]) or "none"
            return refused(f"vm start --group {args.group}: {e} (started before it: {done})")
        started.append(machine)
        if not as_json:
            _said_machine(False, machine)
        if delay and i < len(members) - 1:
            time.sleep(delay)
    if as_json:
        print_json(started)
    return EXIT_OK


def _no_daemon(config: Config, name: str | None) -> str:
    return (f"vm {name}: no daemon serves {config.daemon.state_dir}; headless VMs run in it: "
            "start `netstore serve` (or use `vm start --type external` and run QEMU yourself)")


def _control(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    action, values = args.action, args.values
    params: dict[str, Any] = {"name": args.name, "action": action}
    if action in _VALUE_ACTIONS:
        if len(values) != 1 or not values[0].isdigit():
            return usage(f"vm control {action} takes one whole number ({_VALUE_ACTIONS[action]})")
        params["value"] = int(values[0])
    elif action == "nic":
        if (len(values) != 3 or not values[0].isdigit() or values[1] != "link"
                or values[2] not in ("on", "off")):
            return usage("vm control NAME nic N link on|off")
        params.update(nic=int(values[0]), value=values[2] == "on")
    elif values:
        return usage(f"vm control {action} takes no argument")
    return _ask(config, as_json, "vm_control", 60, **params)


def _said_machine(as_json: bool, m: dict[str, Any]) -> int:
    text = f"{m['name']}: {m['state']}"
    if m.get("pid"):
        text += f" (QEMU pid {m['pid']}, {m.get('accel')})"
    return said(as_json, m, text)


def _ask(config: Config, as_json: bool, op: str, wait: float, show: Any = None,
         alone: Any = None, **params: Any) -> int:
    """Ask the daemon ``op``; ``alone()`` answers instead when no daemon runs."""
    from netstore.cli.remote import vm_request
    from netstore.control import ControlError, DaemonNotRunning

    try:
        result = vm_request(config, op, wait, **params)
    except DaemonNotRunning:
        if alone is not None:
            return alone()  # type: ignore[no-any-return]
        return refused(_no_daemon(config, params.get("name")))
    except ControlError as e:
        return refused(e)
    if show is not None:
        if as_json:
            print_json(result)
        else:
            show(result)
        return EXIT_OK
    return _said_machine(as_json, result)


def _console(config: Config, name: str) -> int:
    from netstore.vm.console import attach

    return attach(config.daemon.state_dir, name)
