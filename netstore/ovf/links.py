# The impairments of a NIC's link (issue 11) as netstore's OVF section keeps
# them: one netstore:Impairment element per impaired direction inside the
# NIC's netstore:Nic element, its attributes the text settings of
# Impairment.to_table() with camelCase names as the section's others
# (delayCorrelation="25%"), a Gilbert-Elliott model as netem's "P,R,1-H,1-K":
#   <netstore:Impairment direction="out" delay="80ms" loss="1%"/>
# Reading them back checks every value as the config and the registry do.
"""NIC impairments <-> netstore:Impairment attributes."""

from __future__ import annotations

import re

from netstore.impairments import (
    DIRECTIONS,
    IMPAIRMENT_KEYS,
    Impairment,
    ImpairmentError,
    parse_impairment,
)
from netstore.ovf.errors import OvfFormatError

IMPAIRMENT_TAG = "Impairment"
_INTEGERS = ("gap", "overhead", "limit")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def impairment_attrs(direction: str, imp: Impairment) -> dict[str, str]:
    """The attributes of the netstore:Impairment element of one direction."""
    out = {"direction": direction}
    for key, value in imp.to_table().items():
        if key == "gemodel":
            value = ",".join(value[k] for k in ("p", "r", "bad_loss", "good_loss"))
        out[_camel(key)] = str(value)
    return out


def read_impairment(attrs: dict[str, str], nic: str) -> tuple[str, Impairment]:
    """(direction, impairment) of a netstore:Impairment element's attributes.

    Raises:
        OvfFormatError: no or an unknown direction, an unknown setting or a bad
            value; the message names the NIC (``nic``) and the setting.
    """
    direction = attrs.get("direction")
    if direction not in DIRECTIONS:
        raise OvfFormatError(f"{nic}: a netstore impairment has direction {direction!r}; "
                             f"expected one of {', '.join(DIRECTIONS)}")
    table: dict[str, object] = {}
    for name, text in attrs.items():
        if name == "direction":
            continue
        key = _snake(name)
        if key not in IMPAIRMENT_KEYS:
            key = name  # parse_impairment names the unknown key as the file spells it
        value: object = text
        if key in _INTEGERS:
            try:
                value = int(text)
            except ValueError:
                pass  # parse_impairment says what it expected
        table[key] = value
    try:
        return direction, parse_impairment(table)
    except ImpairmentError as e:
        raise OvfFormatError(f"{nic}: netstore impairment {direction}: {_camel(e.key)}: "
                             f"expected {e.expected}, got {e.got}") from None


__all__ = ["IMPAIRMENT_TAG", "impairment_attrs", "read_impairment"]
