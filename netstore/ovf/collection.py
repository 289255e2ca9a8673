# A descriptor's virtual systems: the one VirtualSystem of most packages, or
# the members of a VirtualSystemCollection with its StartupSection (DSP0243
# 9.7: each member's ovf:order and ovf:startDelay in seconds), which import
# turns into a VM group of the registry (netstore/registry/startup.py).
# Pure, as envelope.py is: bytes in, a Package out.
"""The virtual systems of an OVF descriptor and their start order."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from netstore.ovf.envelope import Appliance, parse_system, read_envelope
from netstore.ovf.errors import OvfFormatError, UnsupportedOvfError


@dataclass
class StartupEntry:
    """A StartupSection Item: the member (its ovf:id), its order and the
    delay after it starts, in seconds."""

    system_id: str
    order: int
    delay_s: int


@dataclass
class Package:
    """What a descriptor describes: its systems in document order, each with
    its ovf:id; a collection's name (None for a single VM) and start order."""

    systems: list[tuple[str, Appliance]]
    collection: str | None = None
    startup: list[StartupEntry] = field(default_factory=list)

    def startup_of(self, system_id: str) -> StartupEntry | None:
        return next((e for e in self.startup if e.system_id == system_id), None)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(el: ET.Element, name: str) -> str | None:
    return next((v for k, v in el.attrib.items() if _local(k) == name), None)


def _number(el: ET.Element, name: str, what: str) -> int:
    text = _attr(el, name) or "0"
    try:
        return int(text)
    except ValueError:
        raise OvfFormatError(f"StartupSection {what}: ovf:{name} {text!r} is not a whole "
                             "number") from None


def parse_package(data: bytes, where: str = "descriptor") -> Package:
    """The virtual systems `data` describes: one, or each member of a
    VirtualSystemCollection with its StartupSection.

    Raises:
        OvfFormatError, UnsupportedOvfError: as parse_envelope; a collection
            inside a collection (unsupported).
    """
    env = read_envelope(data, where)
    colls = [e for e in env.iter() if _local(e.tag) == "VirtualSystemCollection"]
    if not colls:
        return Package([("", parse_system(env, None, where))])
    if len(colls) > 1:
        raise UnsupportedOvfError(f"{where}: {len(colls)} VirtualSystemCollections; netstore "
                             "imports one collection of VMs, not nested ones")
    coll = colls[0]
    systems = [e for e in coll.iter() if _local(e.tag) == "VirtualSystem"]
    if not systems:
        raise OvfFormatError(f"{where}: VirtualSystemCollection {_attr(coll, 'id')} holds no "
                             "VirtualSystem")
    out = Package([(_attr(vs, "id") or "", parse_system(env, vs, where)) for vs in systems],
                  _attr(coll, "id") or next((c.text for c in coll if _local(c.tag) == "Name"),
                                            None) or "collection")
    for sec in (c for c in coll if _local(c.tag) == "StartupSection"):
        for item in (i for i in sec if _local(i.tag) == "Item"):
            sid = _attr(item, "id") or ""
            out.startup.append(StartupEntry(sid, _number(item, "order", sid),
                                            _number(item, "startDelay", sid)))
    return out


__all__ = ["Package", "StartupEntry", "parse_package"]
