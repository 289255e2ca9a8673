# netstore/cli/impair.py - the impairment options of the command line
# (--delay 80ms --loss 1% ... --in/--out), as `netstore vm nic` takes them: the
# options themselves, the table of text settings they give (what
# parse_impairment reads, as in a config file), the directions chosen, and a
# refusal's key spelt as its option (loss -> --loss).
"""Impairment options: --delay, --loss, ... and --in/--out."""

from __future__ import annotations

import argparse
from typing import Any

from netstore.impairments import DIRECTIONS, DISTRIBUTIONS

# The impairment options: (key of Impairment, metavar, help), in netem's order.
# Each is the key with "-" for "_" (--delay-correlation).
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("delay", "TIME", 'added delay: "80ms", "500us", "1s"'),
    ("jitter", "TIME", "delay variation around --delay"),
    ("delay_correlation", "PCT", "how much a frame's jitter follows the previous one's"),
    ("distribution", "|".join(DISTRIBUTIONS), "the jitter's distribution (default uniform)"),
    ("loss", "PCT", 'random loss: "1%%", "0.5%%"'),
    ("loss_correlation", "PCT", "how much a loss follows the previous frame's fate"),
    ("gemodel", "P,R[,1-H[,1-K]]",
     "Gilbert-Elliott loss instead of --loss: percentages p (good to bad), r (bad to good), "
     "1-h (loss when bad, default 100%%), 1-k (loss when good, default 0%%)"),
    ("duplicate", "PCT", "frames sent twice"),
    ("duplicate_correlation", "PCT", "correlation of --duplicate"),
    ("corrupt", "PCT", "frames with one random bit flipped"),
    ("corrupt_correlation", "PCT", "correlation of --corrupt"),
    ("reorder", "PCT", "frames sent at once, ahead of the delayed ones (needs --delay)"),
    ("reorder_correlation", "PCT", "correlation of --reorder"),
    ("gap", "N", "with --reorder: only every Nth frame may be reordered"),
    ("rate", "RATE", '"10mbit", "500kbit", "1gbit" (bps: bytes/s, as tc)'),
    ("overhead", "BYTES", "with --rate: bytes counted on top of each frame (may be negative)"),
    ("limit", "N", "frames the link holds at once; more are dropped (default 1000)"),
)
INTEGER_KEYS = ("gap", "overhead", "limit")  # options whose value is a whole number


def flag(key: str) -> str:
    """The option of an impairment key: ``delay_correlation`` -> ``--delay-correlation``;
    a part of one (``gemodel.p``) -> ``--gemodel p``."""
    head, _, part = key.partition(".")
    return "--" + head.replace("_", "-") + (f" {part}" if part else "")


def add_impairment_options(p: argparse.ArgumentParser, what: str) -> None:
    """The impairment options (OPTIONS), each stored as ``args.imp_<key>`` (text
    or None), and --in/--out (``args.dir_in``, ``args.dir_out``)."""
    g = p.add_argument_group(
        "impairments", f"netem's settings (tc-netem(8)) for {what}; the ones given are "
        "merged into its current settings (0 sets one back to none). PCT is a percentage "
        "like 1%%. --in is what the VM sends into the switch, --out what the switch sends "
        "it (what it receives); without either, both directions (a link has two ends).")
    g.add_argument("--in", dest="dir_in", action="store_true",
                   help="only what the VM sends into the switch")
    g.add_argument("--out", dest="dir_out", action="store_true",
                   help="only what the switch sends the VM")
    for key, metavar, text in OPTIONS:
        g.add_argument(flag(key), dest="imp_" + key, metavar=metavar, help=text)


def impairment_table(args: argparse.Namespace) -> dict[str, Any]:
    """The impairment options given, as a table parse_impairment reads: text
    values as a config file has them, "0" as 0 (none), N options as integers
    when they read as one (else parse_impairment says what it expected)."""
    out: dict[str, Any] = {}
    for key, _, _ in OPTIONS:
        text = getattr(args, "imp_" + key, None)
        if text is None:
            continue
        value: Any = text
        if key in INTEGER_KEYS or text.strip() == "0":
            try:
                value = int(text)
            except ValueError:
                pass
        out[key] = value
    return out


def directions(args: argparse.Namespace) -> tuple[str, ...]:
    """--in, --out, or neither: both (a link has two ends)."""
    chosen = tuple(d for d, on in zip(DIRECTIONS, (args.dir_in, args.dir_out), strict=True)
                   if on)
    return chosen or DIRECTIONS


def flag_error(key: str, expected: str, got: str) -> str:
    """An impairment refusal with its key spelt as the option:
    ``--loss: expected a percentage ..., got "120%"``."""
    return f"{flag(key)}: expected {expected}, got {got}"


__all__ = ["INTEGER_KEYS", "OPTIONS", "add_impairment_options", "directions", "flag", "flag_error",
           "impairment_table"]
