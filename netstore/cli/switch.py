# netstore/cli/switch.py - `netstore switch list|show` and `netstore capture`:
# the running daemon's switches, asked over its control socket.
"""The ``netstore switch`` and ``netstore capture`` commands."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from netstore.cli.common import (
    EXIT_OK,
    Command,
    add_noun,
    answered,
    console,
    positive_int,
    positive_seconds,
    refused,
    table,
)
from netstore.config import Config


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `switch` with its subcommands and `capture` to ``sub``; returns their commands."""
    cmds = add_noun(sub, common, "switch", help="the learning switches: list, show",
                    description="The running daemon's switches.")
    cmds.add_parser("list", parents=[common], help="every switch: ports, MACs, frames")
    p = cmds.add_parser("show", parents=[common], help="one switch: its ports and MAC table",
                        description="Without --macs or --ports both are shown.")
    p.add_argument("name", metavar="SW")
    p.add_argument("--macs", action="store_true", help="the learnt MAC table")
    p.add_argument("--ports", action="store_true", help="ports with link, counters, drops")

    p = sub.add_parser(
        "capture", parents=[common], help="capture a switch's frames to pcap/pcapng",
        description="Capture frames crossing switch SW (or only its port PORT) while the "
        "daemon runs: `netstore capture sw0 -w - --count 10 | tshark -r -`. SW records each "
        "frame once, as it enters the switch (on the port it came in by); SW:PORT records "
        "what that port receives and sends.")
    p.add_argument("target", metavar="SW[:PORT]")
    p.add_argument("-w", dest="write", metavar="FILE|-", required=True,
                   help="output file, or - for stdout")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--duration", type=positive_seconds, metavar="S", help="stop after S seconds")
    p.add_argument("--format", choices=("pcap", "pcapng"),
                   help="default: pcapng for a .pcapng file, else pcap")
    return {"switch": run, "capture": capture}


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `switch list` or `switch show` against the running daemon."""
    if args.switch_command == "list":
        return answered(config, as_json, _print_switch_list, "switch_list")
    both = not args.macs and not args.ports
    return answered(config, as_json, _print_switch, "switch_show", switch=args.name,
                    macs=both or args.macs, ports=both or args.ports)


def _print_switch_list(switches: list[dict[str, Any]]) -> None:
    rows = table(("switch", "ports", "up", "MACs", "aging", "rx frames", "tx frames", "drops",
                  "capture"))
    for sw in switches:
        rows.add_row(sw["name"], str(sw["port_count"]), str(sw["ports_up"]),
                     f"{sw['mac_count']}/{sw['mac_table_size']}", f"{sw['mac_aging_s']:g} s",
                     str(sw["rx_frames"]), str(sw["tx_frames"]), str(sw["drops"]),
                     ", ".join(c.get("to", "?") for c in sw.get("captures", [])) or "-")
    if not switches:
        print("no switches")
    else:
        console().print(rows)


def _vlans(p: dict[str, Any]) -> str:
    if p.get("vnis"):  # a vxlan trunk: each VLAN with its VNI
        return "trunk " + ",".join(f"{v}=vni {n}" for v, n in p["vnis"].items())
    if p.get("vni") is not None:
        return f"{p.get('vlan', '-')} vni {p['vni']}"
    if p.get("trunk"):
        native = f" native {p['native']}" if p.get("native") else ""
        return "trunk " + ",".join(str(v) for v in p["trunk"]) + native
    return str(p.get("vlan", "-"))


def _policy(p: dict[str, Any]) -> str:
    """Mirroring, port security and storm limit of a port, in a few words."""
    words = []
    if p.get("mirror_to"):
        words.append(f"mirror to {p['mirror_to']}")
    if p.get("mirror_of"):
        words.append("mirror of " + ",".join(p["mirror_of"]))
    if p.get("bound_mac"):
        words.append(f"only {p['bound_mac']}")
    if p.get("max_macs"):
        words.append(f"max {p['max_macs']} MACs")
    if p.get("storm_pps"):
        words.append(f"storm {p['storm_pps']} pps")
    return ", ".join(words) or "-"


def _print_switch(sw: dict[str, Any]) -> None:
    out = console()
    out.print(f"switch {sw['name']}: {sw['port_count']} port(s), {sw['mac_count']} MAC(s) "
              f"of {sw['mac_table_size']}, aging {sw['mac_aging_s']:g} s")
    if "ports" in sw:
        rows = table(("port", "kind", "link", "address", "peer", "vlan", "mtu", "policy",
                      "rx frames", "rx bytes", "tx frames", "tx bytes", "drops"),
                     no_wrap=("port", "address", "peer"), title="ports")
        for p in sw["ports"]:
            drops = p.get("drops")
            drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items()) if v) \
                if drops else "-"
            extra = f" ({len(p['clients'])} client(s))" if "clients" in p else ""
            rows.add_row(p["name"], p["kind"] + extra, p["link"], str(p.get("address") or "-"),
                         str(p.get("peer") or "-"), _vlans(p), str(p.get("mtu", "-")),
                         _policy(p), *(str(p.get(k, "-")) for k in ("rx_frames", "rx_bytes",
                                                                    "tx_frames", "tx_bytes")),
                         drop_text or "-")
        out.print(rows)
    if "macs" in sw:
        rows = table(("vlan", "mac", "port", "age"), title="MAC table")
        for m in sw["macs"]:
            # a MAC behind a vxlan port: the remote VTEP it was learnt from
            port = m["port"] + (f" (vtep {m['vtep']})" if m.get("vtep") else "")
            rows.add_row(str(m["vlan"]), m["mac"], port, f"{m['age_s']:.0f} s")
        out.print(rows)


def capture(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `capture SW[:PORT] -w FILE|-`: stream the daemon's capture into FILE or stdout."""
    # the control client needs trio: imported when a command runs, for a fast --help
    from netstore.control import ControlError, request_stream

    switch, _, port = args.target.partition(":")
    fmt = args.format or ("pcapng" if args.write.endswith(".pcapng") else "pcap")
    to_stdout = args.write == "-"
    try:
        out = sys.stdout.buffer if to_stdout else open(args.write, "wb")  # noqa: SIM115
    except OSError as e:
        return refused(f"cannot write {args.write}: {e.strerror or e}")

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()  # a reader (tshark -r -) sees every complete record at once

    try:
        result = request_stream(config.daemon.state_dir, "capture", write, switch=switch,
                                port=port or None, format=fmt, count=args.count,
                                duration=args.duration)
    except ControlError as e:
        return refused(e)
    except BrokenPipeError:
        # The reader left (tshark -c N, head): that ends the capture, quietly.
        try:  # and no second BrokenPipeError when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    finally:
        if not to_stdout:
            out.close()
    if not to_stdout:
        print(f"capture of {(result or {}).get('capture', args.target)} written to "
              f"{args.write}", file=sys.stderr)
    return EXIT_OK
