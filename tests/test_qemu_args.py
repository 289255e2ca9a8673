"""The QEMU command line of `netstore vm qemu-args`, for every bus and transport."""

import pytest

from netstore.registry.machines import Attachment, Controller, Machine, Nic
from netstore.vm.cmdline import format_args, qemu_args


def machine(**kw):
    base = dict(id=1, uuid="11111111-2222-3333-4444-555555555555", name="vm1", ostype="Linux",
                cpus=4, cpu_hotplug=False, plugged_cpus=(0, 1, 2, 3), cpu_cap=100, weight=100,
                memory_mb=2048, memory_min_mb=None, balloon_mb=0, page_fusion=False,
                chipset="piix3", power="running", started="now", current_snapshot=None,
                created="then")
    base.update(kw)
    return Machine(**base)


def att(ctl, bus, port, device=0, kind="hdd", type_="normal"):
    return Attachment(controller=ctl, bus=bus, port=port, device=device, slot_kind=kind,
                      medium=f"m-{ctl}-{port}", medium_uuid="abcd-ef01-2345-6789-abcdef012345",
                      type=type_, location="/x")


def ctl(name, bus, chipset=""):
    return Controller(name=name, bus=bus, chipset=chipset)


@pytest.mark.parametrize("bus, expect", [
    ("ide", "ide-hd,drive=disk0,bus=ide.1,unit=1"),
    ("sata", "ide-hd,drive=disk0,bus=c0.1"),
    ("scsi", "scsi-hd,drive=disk0,bus=c0.0,scsi-id=1,lun=1"),
    ("sas", "scsi-hd,drive=disk0,bus=c0.0,scsi-id=1,lun=1"),
    ("virtio-scsi", "scsi-hd,drive=disk0,bus=c0.0,channel=0,scsi-id=1,lun=1"),
    ("usb", "usb-storage,drive=disk0,bus=c0.0,port=2"),
    ("nvme", "nvme,drive=disk0,serial="),
])
def test_each_bus_gets_its_device(bus, expect):
    a = att("c0", bus, 1, 1 if bus in ("ide", "scsi", "sas", "virtio-scsi") else 0)
    argv = qemu_args(machine(), [ctl("c0", bus)], [a], [], portal="127.0.0.1:3260",
                     base_iqn="iqn.2026-11.org.netstore")
    assert any(x.startswith(expect) for x in argv), argv
    assert "file=iscsi://127.0.0.1:3260/iqn.2026-11.org.netstore:vm.vm1/0,format=raw" in \
        " ".join(argv)


def test_dvd_is_a_readonly_cdrom():
    argv = qemu_args(machine(), [ctl("s", "sata")], [att("s", "sata", 0, kind="dvd")], [],
                     portal="h:1", base_iqn="iqn.x")
    drive = argv[argv.index("-drive") + 1]
    assert "media=cdrom" in drive and "readonly=on" in drive
    assert "ide-cd,drive=disk0,bus=s.0" in argv


def test_cpus_hotplug_memory_range_and_balloon():
    vm = machine(cpu_hotplug=True, plugged_cpus=(0, 1), memory_min_mb=1024, chipset="ich9")
    argv = qemu_args(vm, [], [], [], portal="h:1", base_iqn="iqn.x")
    assert argv[argv.index("-smp") + 1] == "cpus=2,maxcpus=4"
    assert argv[argv.index("-m") + 1] == "size=1024M,slots=4,maxmem=2048M"
    assert argv[argv.index("-machine") + 1] == "q35,mem-merge=off"
    assert "virtio-balloon-pci,id=balloon0" in argv


@pytest.mark.parametrize("transport, switch_addr, vm_addr, expect", [
    ("udp", "127.0.0.1:40000", "127.0.0.1:40001",
     "dgram,id=net3,local.type=inet,local.host=127.0.0.1,local.port=40001,"
     "remote.type=inet,remote.host=127.0.0.1,remote.port=40000"),
    ("unixgram", "/s/sw.sock", "/s/vm.sock",
     "dgram,id=net3,local.type=unix,local.path=/s/vm.sock,remote.type=unix,remote.path=/s/sw.sock"),
    ("stream", "127.0.0.1:40002", "", "stream,id=net3,server=off,addr.type=inet,"
     "addr.host=127.0.0.1,addr.port=40002"),
    ("tap", "nstap1n3", "", "tap,id=net3,ifname=nstap1n3,script=no,downscript=no"),
    ("vde", "/state/vde/sw0", "", "vde,id=net3,sock=/state/vde/sw0"),
])
def test_nic_transports(transport, switch_addr, vm_addr, expect):
    nic = Nic(slot=3, mac="52:54:00:12:34:56", switch="sw0", vlan=1, transport=transport,
              switch_addr=switch_addr, vm_addr=vm_addr)
    argv = qemu_args(machine(), [], [], [nic], portal="h:1", base_iqn="iqn.x")
    assert expect in argv
    assert "virtio-net-pci,netdev=net3,mac=52:54:00:12:34:56,id=nic3" in argv


def test_format_args_is_one_shell_line_per_option():
    text = format_args(["qemu", "-name", "a b", "-S"])
    assert text == "qemu \\\n  -name 'a b' \\\n  -S"


def test_page_fusion_marks_guest_memory_mergeable():
    fused = qemu_args(machine(page_fusion=True), [], [], [], portal="h:1", base_iqn="iqn.x")
    assert fused[fused.index("-machine") + 1] == "pc,mem-merge=on"
    plain = qemu_args(machine(), [], [], [], portal="h:1", base_iqn="iqn.x")
    assert plain[plain.index("-machine") + 1] == "pc,mem-merge=off"
