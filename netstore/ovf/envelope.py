# The OVF descriptor (DMTF DSP0243 1.x, the envelope/1 namespace VirtualBox
# and ovftool write; envelope/2 read too; OVF 0.9 and oVirt's forms brought
# to 1.x first: legacy.py) as plain data: build one from an Appliance and
# parse one back (each VirtualSystem of a collection: collection.py), with no
# I/O.  Writing follows VirtualBox's layout (References, DiskSection,
# NetworkSection, VirtualSystem with OperatingSystemSection and
# VirtualHardwareSection); what OVF has no word for (controller names, CPU
# hot-plug, VLANs, transports, disk types, a NIC's impairments: links.py)
# goes in a netstore:MachineSection marked ovf:required="false", which other
# tools skip and import reads back.  Reading matches elements and attributes
# by local name, so prefixes, namespace versions and section order do not
# matter.
"""Build and parse OVF descriptors (pure: bytes in, Appliance out, and back)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from netstore.impairments import Impairment
from netstore.ovf import legacy
from netstore.ovf.errors import OvfError, OvfFormatError, UnsupportedOvfError
from netstore.ovf.eula import read_eulas
from netstore.ovf.files import read_file_attrs
from netstore.ovf.links import IMPAIRMENT_TAG, read_impairment
from netstore.ovf.product import read_product
from netstore.ovf.units import parse_units

NS_OVF = "http://schemas.dmtf.org/ovf/envelope/1"
NS_RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
NS_VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_NETSTORE = "http://netstore.invalid/ovf/1"  # ours; .invalid (RFC 2606) never resolves
PREFIXES = {"ovf": NS_OVF, "rasd": NS_RASD, "vssd": NS_VSSD, "xsi": NS_XSI,
            "netstore": NS_NETSTORE}
OVF_VERSION = "1.0"
# The disk format VirtualBox and ovftool write into OVAs; the two older URIs
# are what ovftool 1.x and VirtualBox before 4.0 wrote for the same format.
VMDK_STREAM_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
STREAM_URIS = (VMDK_STREAM_URI,
               "http://www.vmware.com/specifications/vmdk.html#sparse",
               "http://www.vmware.com/specifications/vmdk.html#compressed")
SYSTEM_TYPE = "netstore-1"
# A descriptor is kilobytes; a multi-megabyte "descriptor" is not one.
MAX_DESCRIPTOR_BYTES = 16 << 20

# CIM_ResourceAllocationSettingData.ResourceType (DSP1041) codes netstore
# reads or writes, and names of others for the "skipped" warning.
RT_PROCESSOR, RT_MEMORY, RT_IDE, RT_SCSI, RT_ETHERNET = 3, 4, 5, 6, 10
RT_FLOPPY, RT_CD, RT_DVD, RT_DISK, RT_OTHER_STORAGE = 14, 15, 16, 17, 20
RESOURCE_NAMES = {
    1: "other", 2: "computer system", 3: "processor", 4: "memory", 5: "IDE controller",
    6: "parallel SCSI HBA", 7: "FC HBA", 8: "iSCSI HBA", 9: "IB HCA", 10: "ethernet adapter",
    11: "other network adapter", 12: "I/O slot", 13: "I/O device", 14: "floppy drive",
    15: "CD drive", 16: "DVD drive", 17: "disk drive", 18: "tape drive", 19: "storage extent",
    20: "other storage device", 21: "serial port", 22: "parallel port", 23: "USB controller",
    24: "graphics controller", 25: "IEEE 1394 controller", 26: "partitionable unit",
    27: "base partitionable unit", 28: "power", 29: "cooling capacity", 30: "ethernet switch port",
    31: "logical disk", 32: "storage volume", 33: "ethernet connection", 35: "sound card",
}
# How each netstore bus appears in an Item: (ResourceType, ResourceSubType);
# None = the controller's chipset (IDE PIIX4, SCSI lsilogic).  SAS, NVMe,
# USB storage and virtio-scsi as VirtualBox 7 exports them.
BUS_RESOURCES: dict[str, tuple[int, str | None]] = {
    "ide": (RT_IDE, None), "sata": (RT_OTHER_STORAGE, "AHCI"), "scsi": (RT_SCSI, None),
    "sas": (RT_OTHER_STORAGE, "LsiLogicSas"), "usb": (RT_OTHER_STORAGE, "USB"),
    "nvme": (RT_OTHER_STORAGE, "NVMe"), "virtio-scsi": (RT_SCSI, "VirtioSCSI"),
}
# Read side: ResourceSubType (lowercase) -> bus, chipset, for types 6 and 20;
# the vmware.* names are ovftool's.
_SUBTYPES: dict[int, dict[str, tuple[str, str]]] = {
    RT_SCSI: {"": ("scsi", "LsiLogic"), "lsilogic": ("scsi", "LsiLogic"),
              "buslogic": ("scsi", "BusLogic"), "lsilogicsas": ("sas", "LsiLogicSas"),
              "virtioscsi": ("virtio-scsi", "VirtIO"), "virtio-scsi": ("virtio-scsi", "VirtIO")},
    RT_OTHER_STORAGE: {"ahci": ("sata", "AHCI"), "vmware.sata.ahci": ("sata", "AHCI"),
                       "lsilogicsas": ("sas", "LsiLogicSas"), "nvme": ("nvme", "NVMe"),
                       "vmware.nvme.controller": ("nvme", "NVMe"), "usb": ("usb", "USB"),
                       "virtioscsi": ("virtio-scsi", "VirtIO")},
}
IDE_CHIPSETS = ("PIIX4", "PIIX3", "ICH6")
DRIVE_TYPES = {"hdd": RT_DISK, "dvd": RT_CD, "floppy": RT_FLOPPY}
# A few CIM_OperatingSystem codes (DSP0215) for OperatingSystemSection ovf:id;
# the exact ostype travels in its Description and in the netstore section.
CIM_OS = {"Other": 1, "Linux": 36, "Linux_64": 101, "Ubuntu": 93, "Ubuntu_64": 94,
          "Debian": 95, "Debian_64": 96, "Fedora": 103, "Fedora_64": 104, "FreeBSD": 42,
          "FreeBSD_64": 78, "Windows10": 116, "Windows10_64": 116, "WindowsNT": 18}
# A NIC's model (netstore.registry NIC_MODELS) as the ResourceSubType other
# tools write (VirtualBox: E1000, PCNet32, virtio; VMware: E1000, E1000e,
# VmxNet3, PCNet32), and back: those, case aside, and others' spellings.
NIC_SUBTYPES = {"virtio": "virtio", "e1000": "E1000", "e1000e": "E1000e",
                "rtl8139": "RTL8139", "pcnet": "PCNet32", "vmxnet3": "VmxNet3"}
_NIC_MODEL_OF = {**{v.lower(): k for k, v in NIC_SUBTYPES.items()},
                 "pcnet": "pcnet", "am79c970a": "pcnet", "am79c973": "pcnet",
                 "vmxnet": "vmxnet3", "vmxnet2": "vmxnet3", "virtio-net": "virtio",
                 "82540em": "e1000", "82543gc": "e1000", "82545em": "e1000"}


def nic_model(subtype: str | None) -> str | None:
    """netstore's NIC model for a ResourceSubType (None: not one it knows)."""
    return _NIC_MODEL_OF.get((subtype or "").strip().lower())


@dataclass
class FileRef:
    """A References/File: a file of the package; gzip-compressed and cut in
    chunks as files.py says (size: of the whole compressed file)."""

    id: str
    href: str
    size: int | None = None
    compression: str | None = None
    chunk_size: int | None = None


@dataclass
class VirtualDisk:
    """A DiskSection/Disk: capacity in bytes, the file holding it (None: an
    empty disk to create) and its format URI."""

    disk_id: str
    file_ref: str | None
    capacity: int
    format: str = VMDK_STREAM_URI
    populated_size: int | None = None
    interface: tuple[str, str] | None = None  # oVirt's bus of a disk with no controller Item


@dataclass
class ControllerDesc:
    """A storage controller Item; ``name`` is netstore's (None from other tools)."""

    instance_id: str
    bus: str
    chipset: str
    name: str | None = None


@dataclass
class DriveDesc:
    """A disk, CD or floppy drive Item on a controller (``controller`` is its
    Parent InstanceID).  An hdd names a Disk (``disk_id``), a dvd or floppy a
    File (``file_ref``) or nothing (an empty drive).  ``medium``, ``type``,
    ``variant`` and ``description`` come from the netstore section."""

    instance_id: str
    kind: str
    controller: str
    port: int
    device: int
    disk_id: str | None = None
    file_ref: str | None = None
    medium: str | None = None
    type: str | None = None
    variant: str | None = None
    description: str = ""


@dataclass
class NicDesc:
    """An ethernet adapter Item: its network (Connection) and MAC (Address);
    slot, switch, VLAN, transport and the link's impairments (in: what the VM
    sends, out: what it receives) from the netstore section."""

    instance_id: str
    network: str
    mac: str | None = None
    subtype: str | None = None
    slot: int | None = None
    switch: str | None = None
    vlan: int | None = None
    transport: str | None = None
    impair_in: Impairment | None = None
    impair_out: Impairment | None = None
    model: str | None = None  # netstore's model (netstore section, else from the subtype)


@dataclass
class MachineDesc:
    """The VirtualSystem's hardware that is not a device."""

    name: str
    ostype: str = "Other"
    cpus: int = 1
    memory_mb: int = 1024
    cpu_hotplug: bool = False
    plugged_cpus: tuple[int, ...] = ()
    cpu_cap: int = 100
    weight: int = 100
    memory_min_mb: int | None = None
    page_fusion: bool = False
    chipset: str = "piix3"


@dataclass
class Appliance:
    """One virtual system and the files and disks it needs: what an OVF
    descriptor says.  ``warnings`` lists what parsing skipped."""

    machine: MachineDesc
    files: list[FileRef] = field(default_factory=list)
    disks: list[VirtualDisk] = field(default_factory=list)
    controllers: list[ControllerDesc] = field(default_factory=list)
    drives: list[DriveDesc] = field(default_factory=list)
    nics: list[NicDesc] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    eulas: list[str] = field(default_factory=list)  # licence texts (EulaSection)
    product: dict[str, Any] | None = None  # its ProductSection (product.py)

    def file(self, file_id: str) -> FileRef:
        for f in self.files:
            if f.id == file_id:
                return f
        raise OvfFormatError(f"the descriptor refers to file {file_id!r}, which References "
                             "does not list")

    def disk(self, disk_id: str) -> VirtualDisk:
        for d in self.disks:
            if d.disk_id == disk_id:
                return d
        raise OvfFormatError(f"a disk drive refers to disk {disk_id!r}, which DiskSection "
                             "does not list")

    def networks(self) -> list[str]:
        """The networks the NICs use, each once, in order."""
        return list(dict.fromkeys(n.network for n in self.nics))


def ide_address(port: int, device: int) -> int:
    """AddressOnParent of an IDE slot: channel * 2 + device, as VirtualBox numbers them."""
    return port * 2 + device


def address_of(bus: str, port: int, device: int) -> int:
    return ide_address(port, device) if bus == "ide" else port


def slot_of(bus: str, address: int) -> tuple[int, int]:
    """(port, device) of an AddressOnParent on `bus` (the inverse of address_of)."""
    return divmod(address, 2) if bus == "ide" else (address, 0)


def bus_resource(bus: str, chipset: str) -> tuple[int, str]:
    """(ResourceType, ResourceSubType) of a controller on `bus`."""
    rtype, sub = BUS_RESOURCES[bus]
    return rtype, sub or (chipset.lower() if bus == "scsi" else chipset)


def bus_of(rtype: int, subtype: str | None) -> tuple[str, str] | None:
    """(bus, chipset) of a controller Item, None when netstore has no such bus."""
    sub = (subtype or "").strip()
    if rtype == RT_IDE:
        chip = [c for c in IDE_CHIPSETS if c.lower() == sub.lower()]
        return "ide", chip[0] if chip else IDE_CHIPSETS[0]
    return _SUBTYPES.get(rtype, {}).get(sub.lower())


# -- writing ------------------------------------------------------------------

def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


# -- reading ------------------------------------------------------------------

def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _kids(el: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in el if _local(c.tag) == name)


def _kid(el: ET.Element, name: str) -> ET.Element | None:
    return next(_kids(el, name), None)


def _attr(el: ET.Element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (ovf:id, id)."""
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return None


def _prop(item: ET.Element, name: str) -> str | None:
    el = _kid(item, name)
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _int(text: str | None, what: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise OvfFormatError(f"{what}: expected a whole number, got {text!r}") from None


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1", "yes", "on")


def _host_resource(text: str) -> tuple[str, str]:
    # "ovf:/disk/vmdisk1" (ovftool, the spec), "/disk/vmdisk1" (VirtualBox)
    t = text.strip()
    if t.startswith("ovf:"):
        t = t[4:]
    parts = t.strip("/").split("/", 1)
    if len(parts) != 2 or parts[0] not in ("disk", "file"):
        raise UnsupportedOvfError(f"HostResource {text!r}: netstore understands ovf:/disk/ID "
                                  "and ovf:/file/ID only")
    return parts[0], parts[1]


def _virtual_system(env: ET.Element) -> ET.Element:
    systems = [e for e in env.iter() if _local(e.tag) == "VirtualSystem"]
    if not systems:
        raise OvfFormatError("the descriptor holds no VirtualSystem")
    if len(systems) > 1:
        raise UnsupportedOvfError(f"the descriptor holds {len(systems)} virtual systems; "
                                  "netstore imports one VM per package")
    return systems[0]


def parse_envelope(data: bytes, where: str = "descriptor") -> Appliance:
    """The Appliance an OVF descriptor describes.  Items netstore does not
    model (sound, USB, serial, graphics) are skipped, each with a line in
    ``warnings``.

    Raises:
        OvfFormatError: not XML, not an OVF Envelope, a value that is not a
            number, a drive on a missing controller, a DTD.
        UnsupportedOvfError: more than one virtual system, a disk on a
            controller netstore has no bus for.
    """
    return parse_system(read_envelope(data, where), None, where)


def read_envelope(data: bytes, where: str) -> ET.Element:
    """The Envelope of a descriptor, its OVF 0.9 forms renamed (legacy.py)."""
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise OvfFormatError(f"{where}: {len(data)} bytes is too large for an OVF descriptor")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        # entity expansion has no place in OVF; refusing DTDs closes that door
        raise OvfFormatError(f"{where}: a DTD or entity declaration; OVF descriptors have none")
    try:
        env = ET.fromstring(data)
    except ET.ParseError as e:
        raise OvfFormatError(f"{where}: not well-formed XML ({e})") from None
    if _local(env.tag) != "Envelope":
        raise OvfFormatError(f"{where}: the root element is {_local(env.tag)}, not an OVF "
                             "Envelope")
    legacy.normalize(env)
    return env


def parse_system(env: ET.Element, vs: ET.Element | None, where: str) -> Appliance:
    """The Appliance of VirtualSystem `vs` of `env` (None: its only one)."""
    try:
        return _parse(env, vs)
    except OvfError as e:
        if str(e).startswith(where):
            raise
        raise type(e)(f"{where}: {e}") from None


def _parse(env: ET.Element, vs: ET.Element | None) -> Appliance:
    warnings: list[str] = []
    files: list[FileRef] = []
    for refs in _kids(env, "References"):
        for f in _kids(refs, "File"):
            fid, href = _attr(f, "id"), _attr(f, "href")
            if not fid or not href:
                raise OvfFormatError("a References/File lacks ovf:id or ovf:href")
            comp, chunk = read_file_attrs(href, _attr(f, "compression"), _attr(f, "chunkSize"))
            size = _attr(f, "size")
            files.append(FileRef(fid, href, _int(size, f"size of {href}") if size else None,
                                 comp, chunk))
    disks: list[VirtualDisk] = []
    for ds in (e for e in env.iter() if _local(e.tag) == "DiskSection"):
        for d in _kids(ds, "Disk"):
            did = _attr(d, "diskId")
            if not did:
                raise OvfFormatError("a Disk lacks ovf:diskId")
            cap = _int(_attr(d, "capacity"), f"capacity of disk {did}")
            cap *= parse_units(_attr(d, "capacityAllocationUnits"), f"disk {did}")
            pop = _attr(d, "populatedSize")
            disks.append(VirtualDisk(did, _attr(d, "fileRef"), cap, _attr(d, "format") or "",
                                     _int(pop, f"populatedSize of {did}") if pop else None,
                                     legacy.disk_interface(d)))
    legacy.resolve_file_refs(disks, files)
    vs = _virtual_system(env) if vs is None else vs
    name = _prop(vs, "Name") or _attr(vs, "id") or ""
    machine = MachineDesc(name=name)
    oss = next((e for e in vs.iter() if _local(e.tag) == "OperatingSystemSection"), None)
    if oss is not None:
        vbox_os = _prop(oss, "OSType")
        machine.ostype = vbox_os or _prop(oss, "Description") or machine.ostype
    hws = [e for e in vs.iter() if _local(e.tag) == "VirtualHardwareSection"]
    if not hws:
        raise OvfFormatError(f"VirtualSystem {name} has no VirtualHardwareSection")
    items = [i for i in hws[0] if _local(i.tag) in ("Item", "StorageItem", "EthernetPortItem")]
    extras, impairments = _netstore_extras(vs), _netstore_impairments(vs)
    app = Appliance(machine, files, disks, warnings=warnings, eulas=read_eulas(env),
                    product=read_product(vs))
    controllers: dict[str, ControllerDesc] = {}
    unknown_controllers: dict[str, str] = {}
    drive_items, nic_items = [], []
    for item in items:
        iid = _prop(item, "InstanceID") or ""
        rtype = _int(_prop(item, "ResourceType"), f"ResourceType of Item {iid}")
        label = _prop(item, "ElementName") or _prop(item, "Caption") or f"Item {iid}"
        if (otype := legacy.ovirt_type(item)) in legacy.OVIRT_SKIPPED_TYPES:
            warnings.append(f"skipped {label}: oVirt {otype} is not modelled by netstore")
        elif rtype == RT_PROCESSOR:
            cpus = legacy.ovirt_cpus(_prop(item, "num_of_sockets"), _prop(item, "cpu_per_socket"))
            machine.cpus = cpus or _int(_prop(item, "VirtualQuantity"), "processor VirtualQuantity")
        elif rtype == RT_MEMORY:
            qty = _int(_prop(item, "VirtualQuantity"), "memory VirtualQuantity")
            unit = parse_units(_prop(item, "AllocationUnits") or "MegaBytes", "memory")
            machine.memory_mb = -(-qty * unit // (1 << 20))
        elif rtype in (RT_IDE, RT_SCSI, RT_OTHER_STORAGE):
            sub = _prop(item, "ResourceSubType")
            found = bus_of(rtype, sub)
            if found is None and rtype == RT_SCSI:
                warnings.append(f"SCSI controller {label} ({sub}) is taken as LsiLogic")
                found = ("scsi", "LsiLogic")
            if found is None:
                unknown_controllers[iid] = f"{RESOURCE_NAMES[rtype]} {sub!r}"
                warnings.append(f"skipped {label}: ResourceType {rtype} ({RESOURCE_NAMES[rtype]}"
                                f") subtype {sub!r} is no bus netstore has")
                continue
            controllers[iid] = ControllerDesc(iid, found[0], found[1])
        elif rtype in (RT_DISK, RT_CD, RT_DVD, RT_FLOPPY):
            drive_items.append((item, iid, rtype, label))
        elif rtype == RT_ETHERNET:
            nic_items.append((item, iid))
        else:
            what = RESOURCE_NAMES.get(rtype, "unknown")
            warnings.append(f"skipped {label}: ResourceType {rtype} ({what}) is not modelled "
                            "by netstore")
    for iid, c in controllers.items():
        x = extras.get(("Controller", iid), {})
        if x.get("bus") in BUS_RESOURCES:
            c.bus = x["bus"]
            c.chipset = x.get("chipset") or c.chipset
        c.name = x.get("name")
    for item, iid, rtype, label in drive_items:
        parent = _prop(item, "Parent") or ""
        kind = "hdd" if rtype == RT_DISK else "floppy" if rtype == RT_FLOPPY else "dvd"
        host = _prop(item, "HostResource")
        if parent not in controllers and kind == "floppy" and not parent:
            warnings.append(f"skipped {label}: a floppy drive on no controller (netstore has none)")
            continue
        bare = legacy.controllerless_disk(host, disks, files) if parent not in controllers else None
        if bare is not None and bare.interface is not None:  # oVirt: the Disk names the bus
            parent, host = f"{bare.interface[0]}-interface", f"ovf:/disk/{bare.disk_id}"
            controllers.setdefault(parent, ControllerDesc(parent, *bare.interface))
        if parent not in controllers:
            if parent in unknown_controllers and kind == "hdd":
                raise UnsupportedOvfError(f"disk drive {label} sits on a controller netstore "
                                          f"has no bus for ({unknown_controllers[parent]})")
            if kind == "hdd" or parent not in unknown_controllers:
                raise OvfFormatError(f"{label}: its Parent {parent!r} is no storage controller "
                                     "of the descriptor")
            warnings.append(f"skipped {label}: its controller was skipped")
            continue
        bus = controllers[parent].bus
        x = extras.get(("Drive", iid), {})
        if "port" in x:
            port = _int(x["port"], f"port of {label}")
            device = _int(x.get("device", "0"), f"device of {label}")
        else:
            free = str(sum(d.controller == parent for d in app.drives))  # no address: next
            port, device = slot_of(bus, _int(_prop(item, "AddressOnParent") or free,
                                             f"AddressOnParent of {label}"))
        drive = DriveDesc(iid, kind, parent, port, device, medium=x.get("medium"),
                          type=x.get("type"), variant=x.get("variant"),
                          description=x.get("description", ""))
        if host:
            what, ref = _host_resource(host)
            if what == "disk":
                app.disk(ref)
                drive.disk_id = ref
            else:
                app.file(ref)
                drive.file_ref = ref
        elif kind == "hdd":
            raise OvfFormatError(f"disk drive {label} has no HostResource")
        app.drives.append(drive)
    app.controllers = list(controllers.values())
    for item, iid in nic_items:
        x = extras.get(("Nic", iid), {})
        mac = _prop(item, "Address")
        if mac and re.fullmatch(r"[0-9A-Fa-f]{12}", mac):
            mac = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
        subtype = _prop(item, "ResourceSubType")
        nic = NicDesc(iid, _prop(item, "Connection") or "", mac or None, subtype,
                      switch=x.get("switch"), transport=x.get("transport"),
                      model=x.get("model") or nic_model(subtype))
        if "slot" in x:
            nic.slot = _int(x["slot"], f"slot of NIC {iid}")
        if "vlan" in x:
            nic.vlan = _int(x["vlan"], f"VLAN of NIC {iid}")
        slot = "" if nic.slot is None else f" (slot {nic.slot})"
        for attrs in impairments.get(iid, ()):
            direction, imp = read_impairment(attrs, f"NIC {iid}{slot} on {nic.network!r}")
            setattr(nic, f"impair_{direction}", imp)
        app.nics.append(nic)
    mx = extras.get(("Machine", ""), {})
    if mx:
        machine.ostype = mx.get("ostype") or machine.ostype
        machine.chipset = mx.get("chipset") or machine.chipset
        machine.cpu_hotplug = _bool(mx.get("cpuHotplug"))
        plugged = mx.get("pluggedCpus") or ""
        machine.plugged_cpus = tuple(_int(p, "pluggedCpus") for p in plugged.split(",") if p)
        machine.cpu_cap = _int(mx.get("cpuCap", "100"), "cpuCap")
        machine.weight = _int(mx.get("weight", "100"), "weight")
        if mx.get("memoryMinMB"):
            machine.memory_min_mb = _int(mx["memoryMinMB"], "memoryMinMB")
        machine.page_fusion = _bool(mx.get("pageFusion"))
    return app


def _netstore_extras(vs: ET.Element) -> dict[tuple[str, str], dict[str, str]]:
    # (element, instanceId) -> attributes of the netstore section, if any
    out: dict[tuple[str, str], dict[str, str]] = {}
    for sec in vs:
        if sec.tag != _q(NS_NETSTORE, "MachineSection"):
            continue
        for el in sec:
            if not el.tag.startswith(f"{{{NS_NETSTORE}}}"):
                continue
            attrs = {_local(k): v for k, v in el.attrib.items()}
            out[(_local(el.tag), attrs.get("instanceId", ""))] = attrs
    return out


def _netstore_impairments(vs: ET.Element) -> dict[str, list[dict[str, str]]]:
    # NIC instanceId -> the attributes of its netstore:Impairment elements
    out: dict[str, list[dict[str, str]]] = {}
    for sec in vs:
        if sec.tag != _q(NS_NETSTORE, "MachineSection"):
            continue
        for el in sec:
            if el.tag != _q(NS_NETSTORE, "Nic"):
                continue
            out.setdefault(_attr(el, "instanceId") or "", []).extend(
                {_local(k): v for k, v in imp.attrib.items()}
                for imp in el if imp.tag == _q(NS_NETSTORE, IMPAIRMENT_TAG))
    return out


__all__ = [
    "Appliance",
    "MachineDesc",
    "ControllerDesc",
    "DriveDesc",
    "NicDesc",
    "NIC_SUBTYPES",
    "nic_model",
    "FileRef",
    "VirtualDisk",
    "parse_envelope",
    "parse_system",
    "read_envelope",
    "parse_units",
    "bus_of",
    "bus_resource",
    "address_of",
    "slot_of",
    "NS_OVF",
    "NS_RASD",
    "NS_VSSD",
    "NS_NETSTORE",
    "VMDK_STREAM_URI",
    "STREAM_URIS",
    "RESOURCE_NAMES",
]
