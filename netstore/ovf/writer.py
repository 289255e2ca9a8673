# netstore/ovf/writer.py - writing OVF descriptors (envelope.py holds the
# model and the reading): the Envelope's References, DiskSection and
# NetworkSection, each VM as a VirtualSystem with its hardware Items and
# netstore's own section (settings OVF has no word for; other tools skip it
# as ovf:required="false"), and several VMs as a VirtualSystemCollection with
# a StartupSection (DSP0243 9.7) from their VM group.
"""Build OVF 1.0 descriptors: one VM, or a collection of VMs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from netstore.ovf.envelope import (
    CIM_OS,
    DRIVE_TYPES,
    NIC_SUBTYPES,
    NS_NETSTORE,
    NS_OVF,
    NS_RASD,
    NS_VSSD,
    OVF_VERSION,
    PREFIXES,
    RT_ETHERNET,
    RT_MEMORY,
    RT_PROCESSOR,
    SYSTEM_TYPE,
    Appliance,
    FileRef,
    VirtualDisk,
    _q,
    address_of,
    bus_resource,
)
from netstore.ovf.eula import add_eula_section
from netstore.ovf.links import IMPAIRMENT_TAG, impairment_attrs
from netstore.ovf.product import add_product_section

__all__ = ["Startup", "build_collection", "build_envelope"]


@dataclass(frozen=True)
class Startup:
    """A member's place in a collection's StartupSection (its VM group)."""

    name: str
    order: int
    delay_s: int


def _ovf(tag: str) -> str:
    return _q(NS_OVF, tag)


def _sub(parent: ET.Element, tag: str, text: str | None = None,
         attrs: dict[str, str] | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs or {})
    if text is not None:
        el.text = text
    return el


def _item(parent: ET.Element, props: dict[str, str | None]) -> ET.Element:
    item = _sub(parent, _ovf("Item"))
    # CIM_ResourceAllocationSettingData is an xs:sequence in alphabetical order
    for key in sorted(props):
        if props[key] is not None:
            _sub(item, _q(NS_RASD, key), props[key])
    return item


def _head(files: list[FileRef], disks: list[VirtualDisk], networks: list[str]) -> ET.Element:
    """An Envelope with its References, DiskSection and NetworkSection."""
    for prefix, uri in PREFIXES.items():
        ET.register_namespace(prefix, uri)
    env = ET.Element(_ovf("Envelope"), {_ovf("version"): OVF_VERSION,
                                        "{http://www.w3.org/XML/1998/namespace}lang": "en-US"})
    refs = _sub(env, _ovf("References"))
    for f in files:
        attrs = {_ovf("href"): f.href, _ovf("id"): f.id}
        if f.size is not None:
            attrs[_ovf("size")] = str(f.size)
        if f.compression is not None:
            attrs[_ovf("compression")] = f.compression
        if f.chunk_size is not None:
            attrs[_ovf("chunkSize")] = str(f.chunk_size)
        _sub(refs, _ovf("File"), attrs=attrs)
    ds = _sub(env, _ovf("DiskSection"))
    _sub(ds, _ovf("Info"), "List of the virtual disks used in the package")
    for d in disks:
        attrs = {_ovf("capacity"): str(d.capacity), _ovf("capacityAllocationUnits"): "byte",
                 _ovf("diskId"): d.disk_id, _ovf("format"): d.format}
        if d.file_ref is not None:
            attrs[_ovf("fileRef")] = d.file_ref
        if d.populated_size is not None:
            attrs[_ovf("populatedSize")] = str(d.populated_size)
        _sub(ds, _ovf("Disk"), attrs=attrs)
    ns = _sub(env, _ovf("NetworkSection"))
    _sub(ns, _ovf("Info"), "Logical networks used in the package")
    for net in networks:
        n = _sub(ns, _ovf("Network"), attrs={_ovf("name"): net})
        _sub(n, _ovf("Description"), f"netstore switch {net}")
    return env


def _virtual_system(parent: ET.Element, app: Appliance) -> None:
    """The VirtualSystem of `app` under `parent` (the Envelope or a collection)."""
    m = app.machine
    vs = _sub(parent, _ovf("VirtualSystem"), attrs={_ovf("id"): m.name})
    _sub(vs, _ovf("Info"), "A virtual machine")
    _sub(vs, _ovf("Name"), m.name)
    oss = _sub(vs, _ovf("OperatingSystemSection"), attrs={_ovf("id"): str(CIM_OS.get(m.ostype, 1))})
    _sub(oss, _ovf("Info"), "The kind of installed guest operating system")
    _sub(oss, _ovf("Description"), m.ostype)
    hw = _sub(vs, _ovf("VirtualHardwareSection"))
    _sub(hw, _ovf("Info"), "Virtual hardware requirements for a virtual machine")
    system = _sub(hw, _ovf("System"))
    for key, value in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                       ("VirtualSystemIdentifier", m.name), ("VirtualSystemType", SYSTEM_TYPE)):
        _sub(system, _q(NS_VSSD, key), value)
    _item(hw, {"Caption": f"{m.cpus} virtual CPU", "Description": "Number of virtual CPUs",
               "ElementName": f"{m.cpus} virtual CPU", "InstanceID": "1",
               "ResourceType": str(RT_PROCESSOR), "VirtualQuantity": str(m.cpus)})
    _item(hw, {"AllocationUnits": "byte * 2^20", "Caption": f"{m.memory_mb} MB of memory",
               "Description": "Memory Size", "ElementName": f"{m.memory_mb} MB of memory",
               "InstanceID": "2", "ResourceType": str(RT_MEMORY),
               "VirtualQuantity": str(m.memory_mb)})
    buses = {c.instance_id: c for c in app.controllers}
    per_bus: dict[str, int] = {}
    for c in app.controllers:
        rtype, sub = bus_resource(c.bus, c.chipset)
        index = per_bus[c.bus] = per_bus.get(c.bus, -1) + 1
        _item(hw, {"Address": str(index), "Caption": c.name or f"{c.bus}{index}",
                   "Description": f"{c.bus.upper()} controller", "ElementName": c.name,
                   "InstanceID": c.instance_id, "ResourceSubType": sub,
                   "ResourceType": str(rtype)})
    for d in app.drives:
        bus = buses[d.controller].bus
        host = (f"ovf:/disk/{d.disk_id}" if d.disk_id else
                f"ovf:/file/{d.file_ref}" if d.file_ref else None)
        _item(hw, {"AddressOnParent": str(address_of(bus, d.port, d.device)),
                   "Caption": f"{d.kind} {d.medium or d.disk_id or ''}".strip(),
                   "Description": {"hdd": "Disk Image", "dvd": "CD-ROM Drive",
                                   "floppy": "Floppy Drive"}[d.kind],
                   "ElementName": f"{d.kind}{d.port}:{d.device}", "HostResource": host,
                   "InstanceID": d.instance_id, "Parent": d.controller,
                   "ResourceType": str(DRIVE_TYPES[d.kind])})
    for n in app.nics:
        _item(hw, {"Address": n.mac, "AutomaticAllocation": "true",
                   "Caption": f"Ethernet adapter on '{n.network}'", "Connection": n.network,
                   "ElementName": f"Ethernet adapter on '{n.network}'",
                   "InstanceID": n.instance_id, "ResourceSubType": NIC_SUBTYPES.get(n.model or "", n.subtype or "E1000"),
                   "ResourceType": str(RT_ETHERNET)})
    if app.product:
        add_product_section(vs, NS_OVF, app.product)
    for text in app.eulas:
        add_eula_section(vs, NS_OVF, text)
    _netstore_section(vs, app)


def _finish(env: ET.Element) -> bytes:
    ET.indent(env, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="unicode").encode() + b"\n"


def build_envelope(app: Appliance) -> bytes:
    """The OVF descriptor of `app`, as UTF-8 XML with its declaration."""
    env = _head(app.files, app.disks, app.networks())
    _virtual_system(env, app)
    return _finish(env)


def build_collection(name: str, apps: list[Appliance], startup: list[Startup],
                     eulas: list[str]) -> bytes:
    """One descriptor of several VMs: a VirtualSystemCollection ``name`` whose
    StartupSection lists ``startup`` (members in their start order), the
    package's licences ``eulas`` once at the collection, the files, disks and
    networks of every member in the Envelope's sections."""
    networks = list(dict.fromkeys(n for a in apps for n in a.networks()))
    env = _head([f for a in apps for f in a.files], [d for a in apps for d in a.disks],
                networks)
    coll = _sub(env, _ovf("VirtualSystemCollection"), attrs={_ovf("id"): name})
    _sub(coll, _ovf("Info"), "A collection of virtual machines, started in order")
    _sub(coll, _ovf("Name"), name)
    if startup:
        sec = _sub(coll, _ovf("StartupSection"))
        _sub(sec, _ovf("Info"), "The order the virtual machines start in")
        for s in startup:
            _sub(sec, _ovf("Item"), attrs={_ovf("id"): s.name, _ovf("order"): str(s.order),
                                            _ovf("startDelay"): str(s.delay_s),
                                            _ovf("startAction"): "powerOn"})
    for text in eulas:
        add_eula_section(coll, NS_OVF, text)
    for a in apps:
        _virtual_system(coll, a)
    return _finish(env)


def _attrs(**values: object) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _netstore_section(vs: ET.Element, app: Appliance) -> None:
    sec = _sub(vs, _q(NS_NETSTORE, "MachineSection"), attrs={_ovf("required"): "false"})
    _sub(sec, _ovf("Info"), "netstore settings OVF has no word for; other tools ignore them")
    m = app.machine
    _sub(sec, _q(NS_NETSTORE, "Machine"), attrs=_attrs(
        ostype=m.ostype, chipset=m.chipset, cpuHotplug=m.cpu_hotplug,
        pluggedCpus=",".join(map(str, m.plugged_cpus)), cpuCap=m.cpu_cap, weight=m.weight,
        memoryMinMB=m.memory_min_mb, pageFusion=m.page_fusion))
    for c in app.controllers:
        _sub(sec, _q(NS_NETSTORE, "Controller"), attrs=_attrs(
            instanceId=c.instance_id, name=c.name, bus=c.bus, chipset=c.chipset))
    for d in app.drives:
        _sub(sec, _q(NS_NETSTORE, "Drive"), attrs=_attrs(
            instanceId=d.instance_id, port=d.port, device=d.device, medium=d.medium,
            type=d.type, variant=d.variant, description=d.description or None))
    for n in app.nics:
        el = _sub(sec, _q(NS_NETSTORE, "Nic"), attrs=_attrs(
            instanceId=n.instance_id, slot=n.slot, switch=n.switch, vlan=n.vlan,
            transport=n.transport, model=n.model))
        for direction, imp in (("in", n.impair_in), ("out", n.impair_out)):
            if imp is not None and imp.active:
                _sub(el, _q(NS_NETSTORE, IMPAIRMENT_TAG), attrs=impairment_attrs(direction, imp))


