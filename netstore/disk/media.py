# Media: the vocabulary of semantics.md section 1 (device kinds, the six
# types, variants) and its type rules as pure functions, so the registry (which
# knows attachments and layers) and the CLI (which parses sizes) share one copy.
# No I/O in here: callers pass what they know about the medium.
"""Media kinds, types and the rules for choosing and changing a medium's type."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netstore.disk.api import DiskError

KINDS = ("hdd", "dvd", "floppy")
# VirtualBox's medium types (semantics.md section 1, the types table).
TYPES = ("normal", "writethrough", "shareable", "immutable", "multiattach", "readonly")
VARIANTS = ("dynamic", "fixed")
# Types whose writes go to a per-machine differencing layer.
LAYERED_TYPES = ("immutable", "multiattach")
# Types one running machine at a time may write ("only one running").
EXCLUSIVE_TYPES = ("normal", "writethrough")
# Types that need the medium to have no child layers (writes go to the base,
# or nowhere).
BASE_ONLY_TYPES = ("writethrough", "shareable", "readonly")
# Kinds that may be readonly; a dvd always is.
READONLY_KINDS = ("dvd", "floppy")

# Medium names are file names in <state_dir>/media/ and bare LUN names in the
# configuration (config.py's _NAME_RE); '@' is kept free for layer names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MediumRuleError(DiskError):
    """An operation on a medium that a rule of semantics.md section 1 refuses;
    the message names the rule and the medium (or the object in the way)."""


def parse_size(text: str) -> int:
    """Bytes in `text`: a whole number with an optional K, M, G or T suffix
    (powers of 1024; "KiB"/"KB" spellings accepted).

    Raises:
        ValueError: not a size, or zero.
    """
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (a whole number with K, M, G or T: 512M, 20G)")
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if size <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0")
    return size


def format_size(n: int | None) -> str:
    """A byte count as the CLI shows it (1.5 GiB, 512 MiB, 0 B)."""
    if n is None:
        return "-"
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            v = n / div
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def check_name(name: str) -> str:
    """`name` if it is a valid medium name; MediumRuleError otherwise."""
    if not NAME_RE.fullmatch(name):
        raise MediumRuleError(
            f"{name!r} is not a medium name (1-64 letters, digits, '.', '_', '-'; "
            "starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True, slots=True)
class TypeContext:
    """What the type rules need to know about one medium.

    Attributes:
        name: the medium's name (for messages).
        kind: hdd, dvd or floppy.
        variant: fixed or dynamic.
        current: its type now (None while it is being created).
        parent: the name of its parent when it is a differencing layer.
        children: names of its child layers.
        machines: names of the machines that use it (attachments, and owners of
            per-machine layers on it).
        layer_owners: the machines that have a per-machine layer on it.
    """

    name: str
    kind: str
    variant: str
    current: str | None = None
    parent: str | None = None
    children: Sequence[str] = ()
    machines: Sequence[str] = ()
    layer_owners: Sequence[str] = ()


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" or word == "hdd" else "a ") + word


def _names(items: Sequence[str]) -> str:
    return ", ".join(items)


def check_type(ctx: TypeContext, new: str) -> None:
    """Refuse a medium of `ctx` getting type `new` (at creation or by a change).

    The rules of semantics.md section 1 ("Type changes"), in this order:
    a differencing layer's type cannot be changed; not while attached to more
    than one machine; not to immutable or multiattach while attached to any;
    to writethrough, shareable or readonly only without child layers; to
    shareable only when fixed-size; readonly only for dvd/floppy media; and a
    dvd is readonly by nature.

    Raises:
        MediumRuleError: one line naming the rule and the medium or machine in the way.
    """
    if new not in TYPES:
        raise MediumRuleError(f"unknown medium type {new!r} (one of {', '.join(TYPES)})")
    changing = ctx.current is not None
    if changing and ctx.parent is not None:
        raise MediumRuleError(
            f"{ctx.name} is a differencing layer of {ctx.parent}; a differencing layer's "
            "type cannot be changed"
        )
    if changing and new == ctx.current:
        return
    if changing and len(ctx.machines) > 1:
        raise MediumRuleError(
            f"{ctx.name} is attached to more than one machine ({_names(ctx.machines)}); "
            "its type cannot change until it is attached to one at most"
        )
    if changing and new in LAYERED_TYPES and ctx.machines:
        raise MediumRuleError(
            f"{ctx.name} is attached to machine {ctx.machines[0]}; a medium becomes {new} "
            "only while attached to no machine"
        )
    if changing and ctx.current in LAYERED_TYPES and ctx.layer_owners:
        # The machine's layer would be left on a medium whose writes go elsewhere.
        raise MediumRuleError(
            f"{ctx.name} has a per-machine layer of {ctx.layer_owners[0]}; {_a(ctx.current)} "
            "medium changes type only while no machine has a layer on it"
        )
    if new in BASE_ONLY_TYPES and ctx.children:
        raise MediumRuleError(
            f"{ctx.name} has child layers ({_names(ctx.children)}); a medium becomes {new} "
            "only when it has none"
        )
    if new == "shareable" and ctx.variant != "fixed":
        raise MediumRuleError(
            f"{ctx.name} is {ctx.variant}; only fixed-size media can be shareable"
        )
    if new == "readonly" and ctx.kind not in READONLY_KINDS:
        raise MediumRuleError(
            f"{ctx.name} is {_a(ctx.kind)}; readonly is only for dvd and floppy media"
        )
    if ctx.kind == "dvd" and new != "readonly":
        raise MediumRuleError(f"{ctx.name} is a dvd; dvd media are readonly")


def default_type(kind: str) -> str:
    """The type a new medium of `kind` gets when none is asked for."""
    return "readonly" if kind == "dvd" else "normal"


__all__ = [
    "KINDS",
    "TYPES",
    "VARIANTS",
    "LAYERED_TYPES",
    "BASE_ONLY_TYPES",
    "READONLY_KINDS",
    "NAME_RE",
    "MediumRuleError",
    "TypeContext",
    "check_type",
    "check_name",
    "default_type",
    "parse_size",
    "format_size",
]
