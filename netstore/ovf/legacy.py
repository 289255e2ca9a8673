# What older and other tools write that OVF 1.x says otherwise, brought to the
# 1.x form envelope.py reads (issue 14): OVF 0.9's `Section xsi:type=
# "ovf:DiskSection_Type"` and `Content xsi:type="ovf:VirtualSystem_Type"`
# (VMware's http://www.vmware.com/schema/ovf/1/envelope namespace, oVirt's
# trailing-slash DMTF one: reading goes by local name, so namespaces do not
# matter) and `rasd:InstanceId`; oVirt's flavour (a CPU Item counted in
# sockets x cores, ResourceType 20 for its video card, a disk with no
# controller Item whose bus is the Disk's ovf:disk-interface and whose
# HostResource is "<image-group>/<volume>"); the disk format URIs import
# reads, and which Items are a floppy drive netstore has nowhere to put.
"""Normalise OVF 0.9, VMware-0.9 and oVirt descriptors to OVF 1.x (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from netstore.ovf.errors import OvfFormatError

if TYPE_CHECKING:
    from netstore.ovf.envelope import FileRef, VirtualDisk

# Disk ovf:format URIs import reads -> (image format, variant or None = any)
# as netstore.disk.images.probe names them.  The VMDK URIs are envelope.py's
# STREAM_URIS (ovftool 1.x and VirtualBox before 4.0 wrote the two older
# ones); the raw one is what oVirt and virt-v2v write.
RAW_URI = "http://en.wikipedia.org/wiki/Byte"
# oVirt's ovf:disk-interface -> netstore bus, chipset.
OVIRT_INTERFACES = {"ide": ("ide", "PIIX4"), "virtio": ("virtio-scsi", "VirtIO"),
                    "virtio_scsi": ("virtio-scsi", "VirtIO"), "sata": ("sata", "AHCI"),
                    "scsi": ("scsi", "LsiLogic")}
# oVirt <Type> values of an Item that is no device netstore models.
OVIRT_SKIPPED_TYPES = ("video", "sound", "balloon", "controller", "rng", "watchdog",
                       "console", "graphics", "smartcard", "hostdev")
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def normalize(env: ET.Element) -> None:
    """Rename OVF 0.9 elements of `env` in place to their 1.x names:
    ``Section``/``Content`` with ``xsi:type="ovf:XSection_Type"`` become
    ``XSection`` (``VirtualSystem_Type``: ``VirtualSystem``), in the
    element's own namespace; ``InstanceId`` becomes ``InstanceID``."""
    for el in env.iter():
        local = _local(el.tag)
        ns = el.tag[:-len(local)]
        if local in ("Section", "Content"):
            xtype = el.get(_XSI_TYPE) or ""
            name = xtype.rsplit(":", 1)[-1]
            if name.endswith("_Type"):
                el.tag = ns + name[:-len("_Type")]
        elif local == "InstanceId":
            el.tag = ns + "InstanceID"


def ovirt_type(item: ET.Element) -> str | None:
    """The oVirt <Type> of an Item (video, disk, interface...), lowercase."""
    for kid in item:
        if _local(kid.tag) == "Type" and kid.text:
            return kid.text.strip().lower()
    return None


def ovirt_cpus(sockets: str | None, cores: str | None) -> int | None:
    """vCPUs of an oVirt CPU Item (num_of_sockets x cpu_per_socket), None
    when it has neither."""
    if sockets is None and cores is None:
        return None
    try:
        return int(sockets or "1") * int(cores or "1")
    except ValueError:
        raise OvfFormatError(f"processor: num_of_sockets {sockets!r} x cpu_per_socket "
                             f"{cores!r} are not whole numbers") from None


def disk_interface(disk: ET.Element) -> tuple[str, str] | None:
    """(bus, chipset) an oVirt Disk names in ovf:disk-interface, if any."""
    for key, value in disk.attrib.items():
        if _local(key) == "disk-interface":
            return OVIRT_INTERFACES.get(value.strip().lower())
    return None


def resolve_file_refs(disks: list[VirtualDisk], files: list[FileRef]) -> None:
    """oVirt's Disk ovf:fileRef is the File's href ("<image-group>/<volume>"),
    not its ovf:id: make each such fileRef the File's id."""
    ids = {f.id for f in files}
    by_href = {f.href: f.id for f in files}
    for d in disks:
        if d.file_ref is not None and d.file_ref not in ids and d.file_ref in by_href:
            d.file_ref = by_href[d.file_ref]


def controllerless_disk(host: str | None, disks: list[VirtualDisk],
                        files: list[FileRef]) -> VirtualDisk | None:
    """The Disk an oVirt HostResource ("<image-group>/<volume>", the href of
    the Disk's File) names when that Disk gives its bus in ovf:disk-interface."""
    hrefs = {f.id: f.href for f in files}
    return next((d for d in disks if host and d.interface and d.file_ref is not None
                 and host in (d.file_ref, hrefs.get(d.file_ref))), None)


__all__ = ["controllerless_disk", "resolve_file_refs", "normalize", "ovirt_type", "ovirt_cpus", "disk_interface", "RAW_URI",
           "OVIRT_INTERFACES", "OVIRT_SKIPPED_TYPES"]
