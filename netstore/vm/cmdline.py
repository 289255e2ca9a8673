# netstore/vm/cmdline.py - the QEMU command line that runs a registered VM
# on netstore: its disks over iscsi:// on the bus they are attached to, its
# NICs as -netdev backends on their switch ports (device nicN, netdev netN),
# CPUs with hot-plug slots, memory and a virtio balloon,
# the boot order or a kernel to boot directly.
# Pure: registry records in, argv out.
"""`netstore vm qemu-args`: a qemu-system command line for a registered VM."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from netstore.registry.machines import Attachment, Controller, Machine, Nic

QEMU = "qemu-system-x86_64"

# Storage controllers as QEMU devices (bus -> (controller device or None for
# the machine's built-in one, disk device, cd device)).
_CONTROLLER_DEVICE = {
    "sata": "ahci",
    "scsi": "lsi53c895a",
    "sas": "mptsas1068",
    "virtio-scsi": "virtio-scsi-pci",
    "usb": "qemu-xhci",
}
_SCSI_CHIPSET_DEVICE = {"buslogic": "lsi53c895a", "lsilogic": "lsi53c895a",
                        "lsilogicsas": "mptsas1068"}
# A NIC's model (netstore.registry.nics.NIC_MODELS) as the QEMU device that
# emulates it.
NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e",
               "rtl8139": "rtl8139", "pcnet": "pcnet", "vmxnet3": "vmxnet3"}


def nic_id(slot: int) -> str:
    """The QEMU device id of the NIC in ``slot`` (QMP set_link names it)."""
    return f"nic{slot}"


def iscsi_url(portal: str, base_iqn: str, vm: str, lun: int) -> str:
    """The iscsi:// URL of LUN `lun` of the VM's target."""
    return f"iscsi://{portal}/{base_iqn}:vm.{vm}/{lun}"


def _drive_device(a: Attachment, drive: str, controllers: dict[str, Controller]) -> str:
    cd = a.slot_kind == "dvd"
    bus = a.bus
    ctl = a.controller
    if bus == "ide":
        # the machine's own IDE: two channels (ports) of two devices
        return (f"{'ide-cd' if cd else 'ide-hd'},drive={drive},bus=ide.{a.port},"
                f"unit={a.device}")
    if bus == "sata":
        return f"{'ide-cd' if cd else 'ide-hd'},drive={drive},bus={ctl}.{a.port}"
    if bus in ("scsi", "sas"):
        return (f"{'scsi-cd' if cd else 'scsi-hd'},drive={drive},bus={ctl}.0,"
                f"scsi-id={a.port},lun={a.device}")
    if bus == "virtio-scsi":
        return (f"{'scsi-cd' if cd else 'scsi-hd'},drive={drive},bus={ctl}.0,channel=0,"
                f"scsi-id={a.port},lun={a.device}")
    if bus == "nvme":
        return f"nvme,drive={drive},serial={a.medium_uuid.replace('-', '')[:20]}"
    if bus == "usb":
        return f"usb-storage,drive={drive},bus={ctl}.0,port={a.port + 1}"
    raise ValueError(f"bus {bus!r} of controller {ctl} has no QEMU device here")


def _netdev(n: Nic, ident: str) -> str:
    def host_port(addr: str, side: str) -> str:
        host, _, port = addr.rpartition(":")
        return f"{side}.type=inet,{side}.host={host},{side}.port={port}"

    if n.transport == "udp":
        return (f"dgram,id={ident},{host_port(n.vm_addr, 'local')},"
                f"{host_port(n.switch_addr, 'remote')}")
    if n.transport == "unixgram":
        return (f"dgram,id={ident},local.type=unix,local.path={n.vm_addr},"
                f"remote.type=unix,remote.path={n.switch_addr}")
    if n.transport == "stream":
        if n.switch_addr.startswith("/"):
            return f"stream,id={ident},server=off,addr.type=unix,addr.path={n.switch_addr}"
        return f"stream,id={ident},server=off,{host_port(n.switch_addr, 'addr')}"
    if n.transport == "tap":
        return f"tap,id={ident},ifname={n.switch_addr},script=no,downscript=no"
    if n.transport == "vde":
        return f"vde,id={ident},sock={n.switch_addr}"
    raise ValueError(f"NIC {n.slot}: transport {n.transport!r} unknown")


def qemu_args(vm: Machine, controllers: Sequence[Controller],
              attachments: Sequence[Attachment], nics: Sequence[Nic], *, portal: str,
              base_iqn: str, qemu: str = QEMU) -> list[str]:
    """The argv of a qemu-system process that runs `vm` on netstore.

    Args:
        vm, controllers, attachments, nics: the registry's records of the VM
            (attachments in LUN order, as ``Machines.attachments`` gives them).
        portal: ``host:port`` of the iSCSI portal.
        base_iqn: the daemon's base IQN (targets are ``<base-iqn>:vm.<name>``).
    """
    # page fusion: QEMU marks the guest's RAM mergeable for the host's KSM
    machine = "q35" if vm.chipset == "ich9" else "pc"
    argv = [qemu, "-name", vm.name, "-uuid", vm.uuid,
            "-machine", f"{machine},mem-merge={'on' if vm.page_fusion else 'off'}"]
    online = vm.online_cpus
    if vm.cpu_hotplug:
        argv += ["-smp", f"cpus={online},maxcpus={vm.cpus}"]
    else:
        argv += ["-smp", str(vm.cpus)]
    if vm.memory_min_mb is not None:
        # a dynamic range: boot with the minimum, hot-add up to the maximum
        argv += ["-m", f"size={vm.memory_min_mb}M,slots=4,maxmem={vm.memory_mb}M"]
    else:
        argv += ["-m", f"{vm.memory_mb}M"]
    argv += ["-device", "virtio-balloon-pci,id=balloon0"]
    argv += ["-iscsi", f"initiator-name={base_iqn}:initiator.{vm.name}"]
    by_name = {c.name: c for c in controllers}
    for c in controllers:
        dev = _CONTROLLER_DEVICE.get(c.bus)
        if c.bus in ("scsi", "sas") and c.chipset:
            dev = _SCSI_CHIPSET_DEVICE.get(c.chipset.lower(), dev)
        if dev is not None:
            argv += ["-device", f"{dev},id={c.name}"]
    for lun, a in enumerate(attachments):
        drive = f"disk{lun}"
        media = "cdrom" if a.slot_kind == "dvd" else "disk"
        readonly = ",readonly=on" if a.type == "readonly" or a.slot_kind == "dvd" else ""
        argv += ["-drive", f"file={iscsi_url(portal, base_iqn, vm.name, lun)},format=raw,"
                           f"if=none,id={drive},media={media},cache=none{readonly}",
                 "-device", _drive_device(a, drive, by_name)]
    for n in nics:
        ident = f"net{n.slot}"
        argv += ["-netdev", _netdev(n, ident),
                 "-device", f"{NIC_DEVICES[n.model]},netdev={ident},mac={n.mac},"
                            f"id={nic_id(n.slot)}"]
    return argv + vm.boot.qemu_args()


def format_args(argv: Sequence[str]) -> str:
    """One shell line, each option on its own continuation line."""
    parts = [shlex.quote(argv[0])]
    i = 1
    while i < len(argv):
        if i + 1 < len(argv) and argv[i].startswith("-") and not argv[i + 1].startswith("-"):
            parts.append(f"{argv[i]} {shlex.quote(argv[i + 1])}")
            i += 2
        else:
            parts.append(shlex.quote(argv[i]))
            i += 1
    return " \\\n  ".join(parts)
