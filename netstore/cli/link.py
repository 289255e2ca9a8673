# netstore/cli/link.py - `netstore link`: impair a running switch's port
# (netem's settings per direction), set it down or up, make it flap, clear it,
# and `netstore link show SW`, the impairments and their counters. The daemon
# applies the changes at once; nothing else on the switch is disturbed.
"""The ``netstore link`` command."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from typing import Any

from netstore.cli.common import (
    EXIT_OK,
    Command,
    console,
    print_json,
    refused,
    table,
    usage,
)
from netstore.cli.impair import INTEGER_KEYS, OPTIONS, flag
from netstore.config import Config
from netstore.impairments import (
    DIRECTIONS,
    IMPAIRMENT_KEYS,
    Impairment,
    ImpairmentError,
    parse_flap,
    parse_impairment,
)

ACTIONS = ("down", "up", "clear")
COUNTERS = ("passed", "delayed", "loss", "overflow", "duplicated", "corrupted", "reordered",
            "held")
# Checking one option alone: a base in which every other setting it needs is
# present, so only the option's own value can be wrong (how it combines with
# the port's other settings is the daemon's to check).
_LENIENT = Impairment(delay=1e-3, jitter=1e-3, duplicate=0.5, corrupt=0.5, reorder=0.5, rate=8)
_DAEMON_KEY = re.compile(r"([a-z_]+)(?:\.([a-z_]+))?: (expected .*)", re.S)


def add_impairment_options(p: argparse.ArgumentParser) -> None:
    """The impairment options (OPTIONS), each stored as ``args.imp_<key>`` (text or None)."""
    g = p.add_argument_group(
        "impairments", "netem's settings (tc-netem(8)); the ones given are merged into the "
        "port's current settings. PCT is a percentage like 1%.")
    for key, metavar, text in OPTIONS:
        g.add_argument(flag(key), dest="imp_" + key, metavar=metavar, help=text)


def impairment_table(args: argparse.Namespace) -> dict[str, Any]:
    """The impairment options given, as a table parse_impairment reads.

    Raises:
        ImpairmentError: an option's value is wrong on its own (a unit, a range).
    """
    out: dict[str, Any] = {}
    for key, _, _ in OPTIONS:
        text = getattr(args, "imp_" + key, None)
        if text is None:
            continue
        value: Any = text
        if key in INTEGER_KEYS:
            try:
                value = int(text)
            except ValueError:
                pass  # parse_impairment says what it expected
        base = _LENIENT if key == "gemodel" else replace(_LENIENT, loss=0.5)
        try:
            parse_impairment({key: value}, base=base)
        except ImpairmentError as e:
            if e.key.split(".")[0] == key:
                raise
        out[key] = value
    return out


def flag_error(e: ImpairmentError | str) -> str | None:
    """An impairment refusal ("loss: expected ..., got ...") with its key
    spelt as the option (``--loss: expected ...``); None if it names no key."""
    m = _DAEMON_KEY.fullmatch(str(e))
    if m is None or m.group(1) not in (*IMPAIRMENT_KEYS, "flap"):
        return None
    part = f" {m.group(2)}" if m.group(2) else ""
    return f"{flag(m.group(1))}{part}: {m.group(3)}"


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Command]:
    """Add `link` to ``sub``; returns its command."""
    p = sub.add_parser(
        "link", parents=[common], help="impair a switch port, set it down/up, show links",
        usage="netstore link SW:PORT [--in] [--out] [impairment options] [--flap SCHEDULE|off]\n"
              "       netstore link SW:PORT down|up|clear [--in|--out]\n"
              "       netstore link show SW",
        description="Change a port of a running daemon's switch, at once and without "
        "disturbing anything else. A link has two ends: --in is what the peer (the VM) sends "
        "into the switch, --out what the switch sends it (what it receives); without either, "
        "both directions. The impairment options given are merged into the port's current "
        "settings; `clear` removes them. `down` stops every frame both ways (a stream peer "
        "is disconnected, a TAP port loses carrier) until `up`. --flap \"down 2s every 30s\" "
        "takes the link down for 2 s every 30 s, --flap off stops that. `link show SW` lists "
        "every port's link state, impairments and counters. SW:PORT alone shows that port.")
    p.add_argument("target", metavar="SW:PORT|show")
    p.add_argument("action", nargs="?", metavar="down|up|clear|SW",
                   help="down, up or clear for SW:PORT; the switch for show")
    p.add_argument("--in", dest="dir_in", action="store_true",
                   help="only what the peer sends into the switch")
    p.add_argument("--out", dest="dir_out", action="store_true",
                   help="only what the switch sends the peer")
    p.add_argument("--flap", metavar='"down D every P"|off',
                   help="a flap schedule (\"down 2s every 30s\"), or off")
    add_impairment_options(p)
    p.set_defaults(late_positional=_late_action)
    return {"link": run}


def _late_action(args: argparse.Namespace, extras: list[str]) -> bool:
    """`link SW:PORT --out clear`: the action after the options is the action."""
    if args.action is None and len(extras) == 1 and not extras[0].startswith("-"):
        args.action = extras[0]
        return True
    return False


def run(config: Config, args: argparse.Namespace, as_json: bool) -> int:
    """Run `link show SW` or `link SW:PORT ...` against the running daemon."""
    try:
        table_ = impairment_table(args)
    except ImpairmentError as e:
        return usage(_see(flag_error(e) or str(e)))
    given = bool(table_) or args.flap is not None or args.dir_in or args.dir_out
    if args.target == "show":
        if args.action is None or ":" in args.action:
            return usage(_see("link show: expected a switch name (netstore link show SW)"))
        if given:
            return usage(_see("link show takes no other options"))
        return _answer(config, as_json, _print_show, "link_show", switch=args.action)
    switch, colon, port = args.target.partition(":")
    if not colon or not switch or not port:
        return usage(_see(f"expected SW:PORT or show, got {args.target!r}"))
    directions = _directions(args)
    where = {"switch": switch, "port": port}
    if args.action is not None:
        if args.action not in ACTIONS:
            return usage(_see(f"expected down, up or clear after {args.target}, "
                              f"got {args.action!r}"))
        if table_ or args.flap is not None:
            return usage(_see(f"{args.action} takes no impairment options nor --flap"))
        if args.action == "clear":
            return _answer(config, as_json, _printer(args.target), "link_clear",
                           directions=directions, **where)
        if args.dir_in or args.dir_out:
            return usage(_see(f"{args.action} sets the whole link (both directions): "
                              "--in and --out go with impairments or clear"))
        return _answer(config, as_json, _printer(args.target), "link_state",
                       up=args.action == "up", **where)
    flap = args.flap
    if flap is not None:
        if flap.strip().lower() == "off":
            flap = None
        else:
            try:
                parse_flap(flap)
            except ImpairmentError as e:
                return usage(_see(flag_error(e) or str(e)))
    if args.flap is not None and (args.dir_in or args.dir_out):
        return usage(_see("--flap takes the whole link down: it goes without --in and --out"))
    if not table_ and args.flap is None:
        if args.dir_in or args.dir_out:
            return usage(_see("--in/--out: give impairment options or clear"))
        return _show_port(config, as_json, switch, port)
    row = None
    if table_:
        row = _request(config, "link_set", directions=directions, table=table_, **where)
        if isinstance(row, int):
            return row
    if args.flap is not None:
        row = _request(config, "link_flap", flap=flap, **where)
        if isinstance(row, int):
            return row
    _printed(as_json, row, _printer(args.target))
    return EXIT_OK


def _see(message: str) -> str:
    return f"{message} (see: netstore link --help)"


def _directions(args: argparse.Namespace) -> list[str]:
    """--in, --out, or neither: both (a link has two ends)."""
    chosen = [d for d, on in zip(DIRECTIONS, (args.dir_in, args.dir_out), strict=True) if on]
    return chosen or list(DIRECTIONS)


def _request(config: Config, op: str, **params: Any) -> Any:
    """The daemon's answer, or the exit status of its refusal: 2 for a value it
    refused (named as the option), 1 otherwise."""
    # the control client needs trio: imported when a command runs, for a fast --help
    from netstore.control import ControlError, request

    try:
        return request(config.daemon.state_dir, op, **params)
    except ControlError as e:
        named = flag_error(str(e))
        return usage(_see(named)) if named else refused(e)


def _printed(as_json: bool, result: Any, show: Any) -> None:
    if as_json:
        print_json(result, sort_keys=True)
    else:
        show(result)


def _answer(config: Config, as_json: bool, show: Any, op: str, **params: Any) -> int:
    result = _request(config, op, **params)
    if isinstance(result, int):
        return result
    _printed(as_json, result, show)
    return EXIT_OK


def _show_port(config: Config, as_json: bool, switch: str, port: str) -> int:
    rows = _request(config, "link_show", switch=switch)
    if isinstance(rows, int):
        return rows
    row = next((r for r in rows if r["port"] == port), None)
    if row is None:
        known = ", ".join(r["port"] for r in rows) or "none"
        return refused(f"switch {switch} has no port {port!r} (ports: {known})")
    _printed(as_json, row, _printer(f"{switch}:{port}"))
    return EXIT_OK


# -- output ---------------------------------------------------------------------

def _link_text(row: dict[str, Any]) -> str:
    admin = row.get("admin")
    text = str(row.get("link", "-"))
    if admin in ("down", False):
        text += " (set down)"
    elif row.get("flapping_down"):
        text += " (flapping)"
    return text


def _printer(target: str) -> Any:
    def show(row: dict[str, Any]) -> None:
        flap = f", flaps {row['flap']}" if row.get("flap") else ""
        print(f"{target}: link {_link_text(row)}{flap}")
        for d in DIRECTIONS:
            imp = row.get(d)
            print(f"  {d}: {imp['text'] if imp else 'none'}")
    return show


def _print_show(rows: list[dict[str, Any]]) -> None:
    out = console()
    t = table(("port", "kind", "link", "flap", "dir", "impairments", *COUNTERS),
              no_wrap=("port", "dir"), title="links")
    for row in rows:
        imps = [(d, row.get(d)) for d in DIRECTIONS]
        if all(imp is None for _, imp in imps):
            imps = [("both", None)]
        for i, (d, imp) in enumerate(imps):
            counters = (imp or {}).get("counters")
            head = [row["port"], str(row.get("kind", "-")), _link_text(row),
                    str(row.get("flap") or "-")] if i == 0 else ["", "", "", ""]
            t.add_row(*head, d, imp["text"] if imp else "none",
                      *(str(counters.get(c, 0)) if counters else "-" for c in COUNTERS))
    if not rows:
        print("no ports")
    else:
        out.print(t)
