# OVF's allocation units (DSP0004 programmatic units as DSP0243 uses them):
# "byte * 2^20" as ovftool and VMware write them for memory and disk
# capacities, and the words ("MegaBytes", "GB") VirtualBox, OVF 0.9 and oVirt
# write; an absent unit is bytes.
"""Bytes per unit of an OVF AllocationUnits / capacityAllocationUnits value."""

from __future__ import annotations

import re

from netstore.ovf.errors import OvfFormatError

_UNITS_RE = re.compile(r"byte\s*\*\s*(\d+)\s*\^\s*(-?\d+)", re.IGNORECASE)
_UNIT_WORDS = {"byte": 1, "bytes": 1, "kb": 1 << 10, "kilobytes": 1 << 10, "mb": 1 << 20,
               "megabytes": 1 << 20, "gb": 1 << 30, "gigabytes": 1 << 30, "tb": 1 << 40,
               "terabytes": 1 << 40}


def parse_units(text: str | None, where: str) -> int:
    """Bytes per unit of an AllocationUnits / capacityAllocationUnits value
    ("byte * 2^20", "MegaBytes", "MB"; absent = bytes)."""
    if text is None or not text.strip():
        return 1
    t = text.strip()
    m = _UNITS_RE.fullmatch(t)
    if m:
        base, exp = int(m.group(1)), int(m.group(2))
        if exp < 0 or base < 1 or base ** exp > 1 << 60:
            raise OvfFormatError(f"{where}: allocation units {t!r} are out of range")
        return base ** exp
    if t.lower() in _UNIT_WORDS:
        return _UNIT_WORDS[t.lower()]
    raise OvfFormatError(f"{where}: unknown allocation units {t!r} (expected 'byte * 2^20')")


__all__ = ["parse_units"]
