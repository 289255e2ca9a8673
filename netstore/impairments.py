# netstore/impairments.py - what an impaired link is asked to do, as a
# frozen value: netem's parameter set (tc-netem(8)) for one direction of one
# switch port, the text forms users write ("80ms", "1%", "10mbit"), and the
# flap schedule of a port ("down 2s every 30s"). The config loader, the CLI,
# the registry and OVF all read and write impairments through this module; the
# emulator that applies them is switch/emulation.py. A leaf module (it imports
# nothing of netstore), so the registry may check a NIC's settings too.
"""Impairment (one direction of a link, as tc-netem has it), Flap, and their text forms."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "DIRECTIONS",
    "DISTRIBUTIONS",
    "IMPAIRMENT_KEYS",
    "Flap",
    "GeModel",
    "Impairment",
    "ImpairmentError",
    "format_percent",
    "format_rate",
    "format_time",
    "parse_flap",
    "parse_impairment",
    "parse_percent",
    "parse_rate",
    "parse_time",
]

# The two directions of a switch port, from the switch's side (as tc on the
# port's device): "in" is what the peer (the VM) sends, "out" what it receives.
DIRECTIONS = ("in", "out")
# netem's delay distributions; without one, jitter is uniform (netem's default).
DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
DEFAULT_LIMIT = 1000  # frames a link holds, netem's default limit
LIMIT_MAX = 1_000_000
DELAY_MAX_S = 60.0  # a longer delay is a cut link: set the port down instead
RATE_MIN, RATE_MAX = 8, 400_000_000_000  # bit/s: one byte a second .. 400 Gbit/s
OVERHEAD_MIN, OVERHEAD_MAX = -64, 1024  # bytes added to each frame for the rate (netem)
GAP_MAX = 1_000_000

_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6}
# tc's rate units: bit is bits/s, bps is BYTES/s; k, m, g, t are powers of 1000,
# ki, mi, gi, ti powers of 1024.
_RATE_PREFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
                "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_TIME_RE = re.compile(_NUMBER + r"\s*([a-z]*)")
_PERCENT_RE = re.compile(_NUMBER + r"\s*%")
_RATE_RE = re.compile(_NUMBER + r"\s*(|k|m|g|t|ki|mi|gi|ti)(bit|bps)")
_FLAP_RE = re.compile(r"down\s+(\S+)\s+every\s+(\S+)")


class ImpairmentError(ValueError):
    """A value an impairment cannot take: ``key`` names it, ``expected`` says
    what would do, ``got`` how the value read."""

    def __init__(self, key: str, expected: str, got: str) -> None:
        super().__init__(f"{key}: expected {expected}, got {got}")
        self.key = key
        self.expected = expected
        self.got = got


def _got(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # one line, quoted as the loader does
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def parse_time(value: Any, key: str = "delay") -> float:
    """``"80ms"``, ``"5us"``, ``"1.5s"`` (or ``0``) -> seconds."""
    expected = 'a time like "80ms", "500us" or "1s"'
    if (value == 0 and not isinstance(value, bool)) or value == "0":
        return 0.0
    if not isinstance(value, str):
        raise ImpairmentError(key, expected, _got(value))
    m = _TIME_RE.fullmatch(value.strip().lower())
    if m is None or m.group(2) not in _TIME_UNITS:
        raise ImpairmentError(key, expected, _got(value))
    seconds = float(m.group(1)) * _TIME_UNITS[m.group(2)]
    if seconds > DELAY_MAX_S:
        raise ImpairmentError(key, f"at most {DELAY_MAX_S:g}s", _got(value))
    return seconds


def parse_percent(value: Any, key: str = "loss") -> float:
    """``"1%"``, ``"0.5%"`` -> a fraction 0..1."""
    expected = 'a percentage from "0%" to "100%"'
    if (value == 0 and not isinstance(value, bool)) or value == "0":
        return 0.0
    if not isinstance(value, str):
        raise ImpairmentError(key, expected, _got(value))
    m = _PERCENT_RE.fullmatch(value.strip())
    if m is None or float(m.group(1)) > 100:
        raise ImpairmentError(key, expected, _got(value))
    return float(m.group(1)) / 100


def parse_rate(value: Any, key: str = "rate") -> int:
    """``"10mbit"``, ``"500kbit"``, ``"1gbit"``, ``"2mbps"`` (bytes/s, as tc) -> bit/s."""
    expected = 'a rate like "10mbit", "500kbit" or "1gbit" (bps: bytes/s, as tc)'
    if not isinstance(value, str):
        raise ImpairmentError(key, expected, _got(value))
    m = _RATE_RE.fullmatch(value.strip().lower())
    if m is None:
        raise ImpairmentError(key, expected, _got(value))
    bits = float(m.group(1)) * _RATE_PREFIX[m.group(2)] * (8 if m.group(3) == "bps" else 1)
    if not RATE_MIN <= bits <= RATE_MAX:
        raise ImpairmentError(key, f"{expected}, from 8bit to 400gbit", _got(value))
    return round(bits)


def format_time(seconds: float) -> str:
    """Seconds as the shortest exact text of parse_time (``0.08`` -> ``"80ms"``)."""
    if seconds == 0:
        return "0"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        v = seconds / scale
        if v >= 1 or unit == "us":
            return f"{round(v, 3):g}{unit}"
    return f"{seconds}s"  # not reached


def format_percent(fraction: float) -> str:
    return f"{round(fraction * 100, 6):g}%"


def format_rate(bits: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= scale and bits % (scale // 1000) == 0:
            return f"{bits / scale:g}{unit}"
    return f"{bits}bit"


@dataclass(frozen=True, slots=True)
class GeModel:
    """Gilbert-Elliott loss (netem ``gemodel p r 1-h 1-k``): ``p`` moves the link
    from good to bad, ``r`` back; ``bad_loss`` (1-h) and ``good_loss`` (1-k) are
    the loss probabilities in each state. Mean burst length is 1/r."""

    p: float
    r: float = 1.0
    bad_loss: float = 1.0
    good_loss: float = 0.0


@dataclass(frozen=True, slots=True)
class Impairment:
    """One direction of an impaired link, netem's parameters (fractions, seconds, bit/s).

    delay + jitter (+ delay_correlation, distribution); loss random (+
    loss_correlation) or a Gilbert-Elliott ``gemodel``; duplicate, corrupt (one
    random bit of the frame flipped), reorder (with gap: which frames jump the
    delay queue), each with a correlation; rate (bit/s, 0 = the port's own
    speed) with a per-frame ``overhead`` in bytes; ``limit`` frames held at once
    (tail drop beyond). A correlation is the chance an outcome repeats the last
    one beyond chance, so a percentage stays the long-run proportion.
    """

    delay: float = 0.0
    jitter: float = 0.0
    delay_correlation: float = 0.0
    distribution: str = "uniform"
    loss: float = 0.0
    loss_correlation: float = 0.0
    gemodel: GeModel | None = None
    duplicate: float = 0.0
    duplicate_correlation: float = 0.0
    corrupt: float = 0.0
    corrupt_correlation: float = 0.0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    gap: int = 0
    rate: int = 0
    overhead: int = 0
    limit: int = DEFAULT_LIMIT

    @property
    def active(self) -> bool:
        """True unless the link is perfect (every setting at its default)."""
        return self != _PERFECT

    @property
    def holds(self) -> bool:
        """True if frames may wait in the link (a delay, jitter or a rate)."""
        return bool(self.delay or self.jitter or self.rate)

    def to_table(self) -> dict[str, Any]:
        """The settings that differ from a perfect link, in their text forms
        (what parse_impairment reads back, and what a config file holds)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v == f.default:
                continue
            if f.name in ("delay", "jitter"):
                out[f.name] = format_time(v)
            elif f.name == "rate":
                out[f.name] = format_rate(v)
            elif f.name == "gemodel":
                out[f.name] = {k.name: format_percent(getattr(v, k.name)) for k in fields(v)}
            elif f.name in ("distribution", "gap", "overhead", "limit"):
                out[f.name] = v
            else:
                out[f.name] = format_percent(v)
        return out

    def describe(self) -> str:
        """One line, netem's order: ``delay 80ms jitter 5ms normal loss 1% rate 10mbit``."""
        t = self.to_table()
        if "gemodel" in t:
            g = t.pop("gemodel")
            t["gemodel"] = ",".join(g[k] for k in ("p", "r", "bad_loss", "good_loss"))
        return " ".join(f"{k} {v}" for k, v in t.items()) or "none"


_PERFECT = Impairment()
IMPAIRMENT_KEYS = tuple(f.name for f in fields(Impairment))
_PERCENT_KEYS = ("delay_correlation", "loss", "loss_correlation", "duplicate",
                 "duplicate_correlation", "corrupt", "corrupt_correlation", "reorder",
                 "reorder_correlation")
_GE_KEYS = tuple(f.name for f in fields(GeModel))


def _integer(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ImpairmentError(key, f"an integer in {lo}..{hi}", _got(value))
    return value


def _gemodel(value: Any, key: str) -> GeModel:
    """A table {p, r, bad_loss, good_loss}, or netem's text "P[,R[,1-H[,1-K]]]"."""
    if isinstance(value, str):
        parts = [s.strip() for s in value.split(",")]
        if not 1 <= len(parts) <= 4:
            raise ImpairmentError(key, '"P[,R[,1-H[,1-K]]]" percentages', _got(value))
        value = dict(zip(_GE_KEYS, parts, strict=False))
    if not isinstance(value, Mapping):
        raise ImpairmentError(key, "a table of p, r, bad_loss, good_loss", _got(value))
    for k in value:
        if k not in _GE_KEYS:
            raise ImpairmentError(f"{key}.{k}", "one of the keys " + ", ".join(_GE_KEYS),
                                  f"the unknown key {json.dumps(str(k))}")
    if "p" not in value:
        raise ImpairmentError(f"{key}.p", "the chance of entering the bad state", "nothing")
    v = {k: parse_percent(value[k], f"{key}.{k}") for k in value}
    if v["p"] == 0:
        raise ImpairmentError(f"{key}.p", "more than 0%", _got(value["p"]))
    if v.get("r", 1.0) == 0:
        raise ImpairmentError(f"{key}.r", "more than 0% (the link must leave the bad state)",
                              _got(value["r"]))
    return GeModel(**v)


def parse_impairment(table: Mapping[str, Any], base: Impairment | None = None) -> Impairment:
    """An Impairment from the text forms of ``table`` (the keys of IMPAIRMENT_KEYS),
    over ``base`` (default: a perfect link).

    Raises:
        ImpairmentError: an unknown key, a wrong unit, a value out of range, or
            settings that cannot go together (its key names which).
    """
    if not isinstance(table, Mapping):
        raise ImpairmentError("", "a table of impairments", _got(table))
    values: dict[str, Any] = {}
    for k, v in table.items():
        if k in ("delay", "jitter"):
            values[k] = parse_time(v, k)
        elif k in _PERCENT_KEYS:
            values[k] = parse_percent(v, k)
        elif k == "distribution":
            if v not in DISTRIBUTIONS:
                raise ImpairmentError(k, "one of " + ", ".join(DISTRIBUTIONS), _got(v))
            values[k] = v
        elif k == "gemodel":
            values[k] = _gemodel(v, k)
        elif k == "rate":
            values[k] = 0 if v == 0 and not isinstance(v, bool) else parse_rate(v, k)
        elif k == "overhead":
            values[k] = _integer(v, k, OVERHEAD_MIN, OVERHEAD_MAX)
        elif k == "limit":
            values[k] = _integer(v, k, 1, LIMIT_MAX)
        elif k == "gap":
            values[k] = _integer(v, k, 0, GAP_MAX)
        else:
            close = difflib.get_close_matches(str(k), IMPAIRMENT_KEYS, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ImpairmentError(str(k), "one of the keys " + ", ".join(IMPAIRMENT_KEYS),
                                  f"the unknown key {json.dumps(str(k))}{hint}")
    base = base or _PERFECT
    merged = {f.name: values.get(f.name, getattr(base, f.name)) for f in fields(Impairment)}
    # The loss model is one setting: random loss given over a gemodel replaces
    # it, and a gemodel replaces random loss (as `tc qdisc change` does).
    if values.get("loss") and "gemodel" not in values:
        merged["gemodel"] = None
    if values.get("gemodel") is not None and "loss" not in values:
        merged["loss"] = merged["loss_correlation"] = 0.0
    imp = Impairment(**merged)
    _check(imp, table)
    return imp


def _check(imp: Impairment, table: Mapping[str, Any]) -> None:
    """Settings that cannot go together (tc refuses the same)."""
    def fail(key: str, expected: str) -> ImpairmentError:
        return ImpairmentError(key, expected, _got(table.get(key, "nothing")))

    if imp.gemodel is not None and (imp.loss or imp.loss_correlation):
        raise fail("gemodel", "either loss (random) or gemodel, not both")
    if imp.reorder and not imp.delay:
        raise fail("reorder", "a delay as well (reordered frames jump the delay)")
    if imp.gap and not imp.reorder:
        raise fail("gap", "reorder as well (gap says which frames reorder may pick)")
    for base in ("loss", "duplicate", "corrupt", "reorder"):
        if getattr(imp, base + "_correlation") and not getattr(imp, base):
            raise fail(base + "_correlation", f"{base} as well")
    if imp.delay_correlation and not imp.jitter:
        raise fail("delay_correlation", "jitter as well (it correlates the jitter)")
    if imp.overhead and not imp.rate:
        raise fail("overhead", "a rate as well (overhead counts toward the rate)")
    if not math.isfinite(imp.delay + imp.jitter):
        raise fail("delay", "a finite time")


@dataclass(frozen=True, slots=True)
class Flap:
    """A link that goes down for ``down_s`` in every period of ``every_s``
    seconds: up for ``every_s - down_s``, then down, and again (failover tests)."""

    down_s: float
    every_s: float

    def describe(self) -> str:
        return f"down {format_time(self.down_s)} every {format_time(self.every_s)}"


def parse_flap(value: Any, key: str = "flap") -> Flap:
    """``"down 2s every 30s"`` -> Flap(2.0, 30.0)."""
    expected = 'a schedule like "down 2s every 30s" (down shorter than the period)'
    if not isinstance(value, str):
        raise ImpairmentError(key, expected, _got(value))
    m = _FLAP_RE.fullmatch(value.strip().lower())
    if m is None:
        raise ImpairmentError(key, expected, _got(value))
    down, every = parse_time(m.group(1), key), _period(m.group(2), key, value)
    if not 0 < down < every:
        raise ImpairmentError(key, expected, _got(value))
    return Flap(down, every)


def _period(text: str, key: str, value: str) -> float:
    m = _TIME_RE.fullmatch(text)
    if m is None or m.group(2) not in _TIME_UNITS:
        raise ImpairmentError(key, 'a schedule like "down 2s every 30s"', _got(value))
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]
