# tests/registry/test_machines.py - the VM registry's limits and rules
# (semantics.md section 2, the "several VMs" column of section 1), each
# refusal checked by its exact message; two processes at once lose nothing.
"""Machines: CPUs, memory, controllers, attachments, NICs, power, users of media."""

from __future__ import annotations

import multiprocessing as mp
import re
import traceback
from pathlib import Path

import pytest

from netstore.registry import (
    MachineRuleError,
    MachineStateError,
    MachineWarning,
    MediumBusyError,
    MediumInUseError,
    MediumRuleError,
    NameTakenError,
    NotFoundError,
    Registry,
)
from netstore.registry import host as host_mod

MiB = 1 << 20


@pytest.fixture(autouse=True)
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_mod, "host_cores", lambda: 8)


def exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def test_create_and_cpu_limits(reg: Registry) -> None:
    vm = reg.machines.create("web1", cpus=2, memory_mb=512, ostype="Linux_64")
    assert (vm.cpus, vm.memory_mb, vm.power, vm.cpu_cap, vm.weight) == (2, 512, "poweroff", 100, 100)
    with pytest.raises(NameTakenError, match=exact("a VM named web1 is registered already")):
        reg.machines.create("web1")
    with pytest.raises(MachineRuleError, match=exact("big: 33 vCPUs is more than 32, the most a VM has")):
        reg.machines.create("big", cpus=33)
    with pytest.raises(MachineRuleError, match=exact(
            "big: 17 vCPUs is more than twice this host's 8 cores (16); give it fewer")):
        reg.machines.create("big", cpus=17)
    with pytest.raises(MachineRuleError, match=exact("big: 0 vCPUs; a VM has at least 1")):
        reg.machines.create("big", cpus=0)
    with pytest.warns(MachineWarning, match=exact(
            "big: 9 vCPUs is more than this host's 8 cores; oversubscribed vCPUs run slower")):
        assert reg.machines.create("big", cpus=9).cpus == 9
    with pytest.raises(MachineRuleError, match="is not a VM name"):
        reg.machines.create("Web_1")
    with pytest.raises(MachineRuleError, match=exact("x: memory 2 MB is outside 4..2097152 MB")):
        reg.machines.create("x", memory_mb=2)
    assert [m.name for m in reg.machines.list()] == ["big", "web1"]


def test_cpu_hotplug(reg: Registry) -> None:
    reg.machines.create("vm", cpus=4)
    with pytest.raises(MachineRuleError, match=exact(
            "CPU hot-plug of vm is off; a vCPU is plugged only with it on "
            "(netstore vm modify vm --cpuhotplug on, while powered off)")):
        reg.machines.modify("vm", plug_cpu=1)
    vm = reg.machines.modify("vm", cpu_hotplug=True)
    assert vm.plugged_cpus == (0, 1, 2, 3) and vm.online_cpus == 4
    vm = reg.machines.modify("vm", unplug_cpu=3)
    assert vm.plugged_cpus == (0, 1, 2)
    with pytest.raises(MachineRuleError, match=exact("vCPU 0 of vm can never be unplugged")):
        reg.machines.modify("vm", unplug_cpu=0)
    with pytest.raises(MachineRuleError, match=exact("vCPU 3 of vm is not plugged")):
        reg.machines.modify("vm", unplug_cpu=3)
    with pytest.raises(MachineRuleError, match=exact("vCPU 2 of vm is plugged already")):
        reg.machines.modify("vm", plug_cpu=2)
    with pytest.raises(MachineRuleError, match=exact(
            "vCPU 4 is beyond vm's maximum of 4 (indexes 0..3; raise --cpus while powered off)")):
        reg.machines.modify("vm", plug_cpu=4)
    reg.machines.start("vm")
    assert reg.machines.modify("vm", plug_cpu=3).online_cpus == 4  # hot-plug while running
    assert reg.machines.modify("vm", unplug_cpu=1).plugged_cpus == (0, 2, 3)
    with pytest.raises(MachineStateError, match=exact(
            "vm is running; its CPU count can be changed only while it is powered off "
            "(netstore vm stop vm)")):
        reg.machines.modify("vm", cpus=2)
    with pytest.raises(MachineStateError, match="CPU hot-plug can be changed only while"):
        reg.machines.modify("vm", cpu_hotplug=False)
    reg.machines.stop("vm")
    assert reg.machines.modify("vm", cpus=3).plugged_cpus == (0, 2)  # those above the max go
    vm = reg.machines.modify("vm", cpu_hotplug=False)
    assert vm.plugged_cpus == () and vm.online_cpus == 3
    reg.machines.create("other", cpus=2)
    reg.machines.start("other")
    with pytest.raises(MachineRuleError, match="CPU hot-plug of other is off"):
        reg.machines.modify("other", plug_cpu=1)


def test_cap_weight_memory_balloon_pagefusion(reg: Registry) -> None:
    reg.machines.create("vm", memory_mb=1024)
    for bad in (0, 101):
        with pytest.raises(MachineRuleError, match=exact(f"vm: execution cap {bad} % is outside 1..100 %")):
            reg.machines.modify("vm", cpu_cap=bad)
    assert reg.machines.modify("vm", cpu_cap=50, weight=200).cpu_cap == 50
    with pytest.raises(MachineRuleError, match=exact("vm: weight 0 is outside 1..10000")):
        reg.machines.modify("vm", weight=0)
    vm = reg.machines.modify("vm", memory_range=(512, 2048))
    assert (vm.memory_min_mb, vm.memory_mb) == (512, 2048)
    with pytest.raises(MachineRuleError, match=exact(
            "vm: memory range 2048:512 MB has its minimum above its maximum")):
        reg.machines.modify("vm", memory_range=(2048, 512))
    with pytest.raises(MachineStateError, match=exact(
            "vm is powered off; a balloon is set only while the VM runs")):
        reg.machines.modify("vm", balloon_mb=100)
    assert reg.machines.modify("vm", page_fusion=True).page_fusion
    reg.machines.start("vm")
    assert reg.machines.modify("vm", balloon_mb=2048).balloon_mb == 2048
    with pytest.raises(MachineRuleError, match=exact(
            "vm: balloon 2049 MB is more than its memory (2048 MB); a balloon never exceeds "
            "the VM's memory")):
        reg.machines.modify("vm", balloon_mb=2049)
    with pytest.raises(MachineStateError, match=exact(
            "vm is running; page fusion can be changed only while it is powered off "
            "(netstore vm stop vm)")):
        reg.machines.modify("vm", page_fusion=False)
    with pytest.raises(MachineStateError, match="its memory can be changed only while"):
        reg.machines.modify("vm", memory_mb=512)
    assert reg.machines.modify("vm", cpu_cap=80).cpu_cap == 80  # allowed while running
    assert reg.machines.stop("vm").balloon_mb == 0
    vm = reg.machines.modify("vm", memory_mb=768)
    assert (vm.memory_min_mb, vm.memory_mb) == (None, 768)


@pytest.mark.parametrize("bus,limit,ok,bad,msg", [
    ("ide", None, (1, 1), (2, 0), "ide0 port 2 device 0 is beyond the bus limit: IDE has 2 ports "
     "x 2 devices (4 devices): ports 0..1, devices 0..1"),
    ("ide", None, (0, 1), (0, 2), "ide0 port 0 device 2 is beyond the bus limit: IDE has 2 ports "
     "x 2 devices (4 devices): ports 0..1, devices 0..1"),
    ("sata", 30, (29, 0), (30, 0), "sata0 port 30 device 0 is beyond the bus limit: SATA has 30 "
     "ports (0..29), device 0"),
    ("scsi", 16, (15, 0), (16, 0), "scsi0 port 16 device 0 is beyond the bus limit: SCSI has 16 "
     "ports (0..15), device 0"),
    ("sas", 255, (254, 0), (255, 0), "sas0 port 255 device 0 is beyond the bus limit: SAS has 255 "
     "ports (0..254), device 0"),
    ("usb", 8, (7, 0), (8, 0), "usb0 port 8 device 0 is beyond the bus limit: USB has 8 ports "
     "(0..7), device 0"),
    ("nvme", 255, (254, 0), (255, 0), "nvme0 port 255 device 0 is beyond the bus limit: NVMe has "
     "255 ports (0..254), device 0"),
    ("virtio-scsi", 256, (255, 0), (256, 0), "virtio-scsi0 port 256 device 0 is beyond the bus "
     "limit: virtio-scsi has 256 ports (0..255), device 0"),
])
def test_bus_limits(reg: Registry, bus: str, limit: int | None, ok: tuple[int, int],
                    bad: tuple[int, int], msg: str) -> None:
    reg.machines.create("vm")
    reg.create("d", MiB)
    ctl = f"{bus}0"
    reg.machines.add_controller("vm", ctl, bus)
    with pytest.raises(MachineRuleError, match=exact(msg)):
        reg.machines.attach("vm", ctl, bad[0], "d", device=bad[1])
    a = reg.machines.attach("vm", ctl, ok[0], "d", device=ok[1])
    assert a.slot == f"{ctl}:{ok[0]}:{ok[1]}"


def test_controllers_and_chipsets(reg: Registry) -> None:
    reg.machines.create("vm")
    assert reg.machines.add_controller("vm", "ide0", "ide").chipset == "PIIX4"
    assert reg.machines.add_controller("vm", "ide1", "ide", "ich6").chipset == "ICH6"
    assert reg.machines.add_controller("vm", "scsi0", "scsi", "BusLogic").chipset == "BusLogic"
    with pytest.raises(MachineRuleError, match=exact(
            "SCSI controllers have no chipset 'AHCI' (one of LsiLogic, BusLogic)")):
        reg.machines.add_controller("vm", "scsi1", "scsi", "AHCI")
    with pytest.raises(MachineRuleError, match=exact("vm has a controller named ide0 already")):
        reg.machines.add_controller("vm", "ide0", "sata")
    with pytest.raises(MachineRuleError, match="unknown bus 'pata'"):
        reg.machines.add_controller("vm", "x", "pata")
    assert [c.name for c in reg.machines.controllers("vm")] == ["ide0", "ide1", "scsi0"]
    with pytest.raises(NotFoundError, match=exact(
            "vm has no controller sata9 (add one: netstore vm controller vm --add sata9 --bus sata)")):
        reg.machines.attach("vm", "sata9", 0, "x")


def test_attachment_rules(reg: Registry, tmp_path: Path) -> None:
    reg.machines.create("vm")
    reg.machines.add_controller("vm", "sata0", "sata")
    reg.machines.add_controller("vm", "nvme0", "nvme")
    reg.create("d", MiB)
    reg.create("d2", MiB)
    iso = tmp_path / "cd.iso"
    iso.write_bytes(bytes(2048 * 4))
    reg.import_image(iso, kind="dvd")
    reg.machines.attach("vm", "sata0", 0, "d")
    with pytest.raises(MachineRuleError, match=exact(
            "sata0 port 0 device 0 of vm holds disk d already; detach it first")):
        reg.machines.attach("vm", "sata0", 0, "d2")
    with pytest.raises(MachineRuleError, match=exact("disk d is attached to vm already at sata0:0:0")):
        reg.machines.attach("vm", "sata0", 1, "d")
    with pytest.raises(MachineRuleError, match=exact(
            "disk cd is a dvd; a dvd goes on a dvd slot, not a hdd slot")):
        reg.machines.attach("vm", "sata0", 2, "cd", slot_kind="hdd")
    with pytest.raises(MachineRuleError, match=exact("NVMe controllers take hdd media; cd is a dvd")):
        reg.machines.attach("vm", "nvme0", 0, "cd")
    assert reg.machines.attach("vm", "sata0", 2, "cd").slot_kind == "dvd"
    with pytest.raises(NotFoundError, match="no medium 'nope'"):
        reg.machines.attach("vm", "sata0", 3, "nope")
    assert [a.medium for a in reg.machines.attachments("vm")] == ["d", "cd"]
    d = reg.machines.detach("vm", "sata0", 0)
    assert d.medium == "d" and [a.medium for a in reg.machines.attachments("vm")] == ["cd"]
    with pytest.raises(NotFoundError, match=exact("sata0 port 0 device 0 of vm is empty")):
        reg.machines.detach("vm", "sata0", 0)


def test_attachments_are_users_of_media(reg: Registry) -> None:
    for vm in ("a", "b"):
        reg.machines.create(vm)
        reg.machines.add_controller(vm, "sata0", "sata")
    reg.create("d", MiB)
    reg.machines.attach("a", "sata0", 0, "d")
    assert [(u.machine, u.via) for u in reg.users_of("d")] == [("a", "attached at sata0:0:0")]
    with pytest.raises(MediumRuleError, match=exact(
            "d is attached to machine a; a medium becomes immutable only while attached to no "
            "machine")):
        reg.modify("d", type="immutable")
    reg.machines.attach("b", "sata0", 1, "d")
    with pytest.raises(MediumRuleError, match=exact(
            "d is attached to more than one machine (a, b); its type cannot change until it is "
            "attached to one at most")):
        reg.modify("d", type="writethrough")
    with pytest.raises(MediumInUseError, match=exact(
            "d is used by machine a (attached at sata0:0:0); b (attached at sata0:1:0); a medium "
            "in use cannot be removed")):
        reg.remove("d")
    reg.machines.detach("a", "sata0", 0)
    reg.machines.detach("b", "sata0", 1)
    reg.modify("d", type="immutable")
    reg.remove("d", delete=True)


def test_start_rules_of_each_type(reg: Registry) -> None:
    for vm in ("web1", "web2"):
        reg.machines.create(vm)
        reg.machines.add_controller(vm, "sata0", "sata")
    reg.create("base.qcow2", MiB)
    reg.create("wt", MiB, type="writethrough")
    reg.create("sh", MiB, format="raw", variant="fixed", type="shareable")
    reg.create("imm", MiB, type="immutable")
    reg.create("multi", MiB, type="multiattach")
    for port, disk in enumerate(("base.qcow2", "wt", "sh", "imm", "multi")):
        for vm in ("web1", "web2"):
            reg.machines.attach(vm, "sata0", port, disk)
    g = reg.generation()
    assert reg.machines.start("web1").power == "running"
    assert reg.generation() > g  # a polling daemon notices
    with pytest.raises(MediumBusyError, match=exact(
            "disk base.qcow2 is attached to running VM web1; normal disks run in one VM at a time")):
        reg.machines.start("web2")
    assert reg.machines.get("web2").power == "poweroff"
    reg.machines.detach("web2", "sata0", 0)
    with pytest.raises(MediumBusyError, match=exact(
            "disk wt is attached to running VM web1; writethrough disks run in one VM at a time")):
        reg.machines.start("web2")
    reg.machines.detach("web2", "sata0", 1)
    reg.machines.start("web2")  # shareable, immutable, multiattach run in both
    assert {m.name: m.power for m in reg.machines.list()} == {"web1": "running", "web2": "running"}
    with pytest.raises(MediumBusyError, match="disk wt is attached to running VM web1"):
        reg.machines.attach("web2", "sata0", 1, "wt")  # attaching to a running VM: same rule
    with pytest.raises(MachineStateError, match=exact("web1 is running already")):
        reg.machines.start("web1")
    reg.machines.stop("web1")
    with pytest.raises(MachineStateError, match=exact("web1 is powered off already")):
        reg.machines.stop("web1")
    reg.machines.attach("web2", "sata0", 1, "wt")  # web1 is off now
    assert sorted(reg.machines_of("imm")) == ["web1", "web2"]


def _write(path: Path, data: bytes) -> None:
    from netstore.disk.images import open_image

    with open_image(str(path)) as img:
        img.pwrite(0, data)
        img.flush()


def _read(path: Path, n: int) -> bytes:
    from netstore.disk.images import open_image

    with open_image(str(path), read_only=True) as img:
        return img.pread(0, n)


def test_start_resets_immutable_keeps_multiattach(reg: Registry) -> None:
    reg.machines.create("vm")
    reg.machines.add_controller("vm", "sata0", "sata")
    reg.create("imm", MiB, type="immutable")
    reg.create("multi", MiB, type="multiattach")
    reg.machines.attach("vm", "sata0", 0, "imm")
    reg.machines.attach("vm", "sata0", 1, "multi")
    reg.machines.start("vm")
    imm, multi = reg.layer_for("imm", "vm"), reg.layer_for("multi", "vm")
    _write(imm, b"gone")
    _write(multi, b"kept")
    assert _read(reg.layer_for("imm", "vm"), 4) == b"gone"  # a guest reboot keeps it
    reg.machines.stop("vm")
    reg.machines.start("vm")
    assert _read(reg.layer_for("imm", "vm"), 4) == bytes(4)
    assert _read(reg.layer_for("multi", "vm"), 4) == b"kept"
    reg.machines.stop("vm")
    reg.modify("imm", autoreset=False)
    _write(reg.layer_for("imm", "vm"), b"stay")
    reg.machines.start("vm")
    assert _read(reg.layer_for("imm", "vm"), 4) == b"stay"


def test_nics(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.machines.create("a")
    reg.machines.create("b")
    n = reg.machines.set_nic("a", 0, "sw0")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", n.mac)
    assert (n.vlan, n.transport) == (1, "udp")
    assert n.switch_addr == "127.0.0.1:20000" and n.vm_addr == "127.0.0.1:20001"
    s = reg.machines.set_nic("b", 0, "sw0", transport="stream", mac="02-00-00-AA-BB-CC", vlan=10)
    assert (s.mac, s.vlan, s.switch_addr, s.vm_addr) == ("02:00:00:aa:bb:cc", 10,
                                                         "127.0.0.1:20002", "")
    with pytest.raises(MachineRuleError, match=exact(
            "MAC 02:00:00:aa:bb:cc is taken by NIC 0 of VM b; MACs are unique across the registry")):
        reg.machines.set_nic("a", 1, "sw0", mac="02:00:00:aa:bb:cc")
    with pytest.raises(MachineRuleError, match=exact(
            "MAC 01:00:5e:00:00:01 is a multicast address (first octet odd); a NIC needs a "
            "unicast MAC")):
        reg.machines.set_nic("a", 1, "sw0", mac="01:00:5e:00:00:01")
    with pytest.raises(MachineRuleError, match=exact(
            "MAC '52:54:00:zz:00:01' is malformed (six hex octets: 52:54:00:12:34:56)")):
        reg.machines.set_nic("a", 1, "sw0", mac="52:54:00:zz:00:01")
    with pytest.raises(MachineRuleError, match=exact("NIC slot 8 is outside 0..7")):
        reg.machines.set_nic("a", 8, "sw0")
    with pytest.raises(MachineRuleError, match=exact("VLAN 4095 is outside 1..4094")):
        reg.machines.set_nic("a", 1, "sw0", vlan=4095)
    with pytest.raises(MachineRuleError, match="unknown transport 'ipx'"):
        reg.machines.set_nic("a", 1, "sw0", transport="ipx")
    # changing a NIC keeps what is not given; a new transport gets new addresses
    c = reg.machines.set_nic("a", 0, "sw1", vlan=20)
    assert (c.mac, c.switch, c.vlan, c.switch_addr) == (n.mac, "sw1", 20, n.switch_addr)
    t = reg.machines.set_nic("a", 0, "sw1", transport="unixgram")
    assert t.switch_addr.endswith("-0-sw.sock") and t.vm_addr.endswith("-0-vm.sock")
    assert reg.machines.set_nic("a", 1, "sw0").switch_addr == "127.0.0.1:20000"  # freed, reused
    assert reg.machines.set_nic("a", 2, "sw0", transport="tap").switch_addr.startswith("nstap")
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "20000-20003")
    with pytest.raises(MachineRuleError, match=exact(
            "no free port left in 20000-20003 for NIC 3 of a; widen the range "
            "(NETSTORE_NIC_PORTS=LO-HI)")):
        reg.machines.set_nic("a", 3, "sw0")
    assert reg.machines.remove_nic("a", 1).slot == 1
    assert [x.slot for x in reg.machines.nics("a")] == [0, 2]


def test_remove(reg: Registry) -> None:
    reg.machines.create("vm")
    reg.machines.add_controller("vm", "sata0", "sata")
    reg.create("imm", MiB, type="immutable")
    reg.machines.attach("vm", "sata0", 0, "imm")
    reg.machines.set_nic("vm", 0, "sw0")
    reg.machines.start("vm")
    layer = reg.layer_for("imm", "vm")
    with pytest.raises(MachineStateError, match=exact(
            "vm is running; a VM is removed only while powered off (netstore vm stop vm)")):
        reg.machines.remove("vm")
    reg.machines.stop("vm")
    reg.machines.remove("vm")
    assert not layer.exists() and reg.users_of("imm") == [] and reg.children("imm") == []
    with pytest.raises(NotFoundError, match=exact("no VM 'vm' is registered (see: netstore vm list)")):
        reg.machines.get("vm")
    reg.machines.create("vm")  # the name, MAC and ports are free again
    assert reg.machines.set_nic("vm", 0, "sw0").switch_addr == "127.0.0.1:20000"


def test_host_report(reg: Registry) -> None:
    reg.machines.create("a", cpus=6, memory_mb=1024)
    with pytest.warns(MachineWarning):
        reg.machines.create("b", cpus=9)
    reg.machines.modify("b", memory_range=(256, 4096))
    r = host_mod.host_report(reg)
    assert r["vcpus"] == 0 and r["warnings"] == []
    reg.machines.start("a")
    reg.machines.start("b")
    reg.machines.modify("a", balloon_mb=100)
    r = host_mod.host_report(reg)
    assert (r["host_cores"], r["vcpus"], r["cpu_ratio"]) == (8, 15, 1.875)
    assert r["memory_committed_mb"] == 1024 + 4096 and r["balloons_mb"] == 100
    assert r["warnings"][0] == ("vCPUs oversubscribed: 15 vCPUs of running VMs on 8 host cores "
                                "(ratio 1.88 > 1)")


def _worker(state_dir: str, tag: str, start, out) -> None:  # type: ignore[no-untyped-def]
    try:
        start.wait(10)
        for i in range(10):
            with Registry.open(state_dir) as reg:  # each CLI command opens its own
                name = f"{tag}{i}"
                reg.machines.create(name)
                reg.machines.set_nic(name, 0, "sw0")
                reg.machines.set_nic(name, 1, "sw0", transport="stream")
                reg.machines.modify("shared", cpu_cap=1 + i)
        out.put(("ok", tag))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _starter(state_dir: str, vm: str, start, out) -> None:  # type: ignore[no-untyped-def]
    try:
        start.wait(10)
        with Registry.open(state_dir) as reg:
            reg.machines.start(vm)
        out.put(("started", vm))
    except MediumBusyError as e:
        out.put(("refused", str(e)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _run(ctx, target, args_list):  # type: ignore[no-untyped-def]
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, start, out)) for a in args_list]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def test_two_processes_lose_no_update(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Registry.open(state) as reg:
        reg.machines.create("shared")
    ctx = mp.get_context("spawn")
    results = _run(ctx, _worker, [(str(state), "a"), (str(state), "b")])
    assert all(r[0] == "ok" for r in results), results
    with Registry.open(state) as reg:
        vms = [m.name for m in reg.machines.list()]
        assert len(vms) == 21
        nics = [n for vm in vms for n in reg.machines.nics(vm)]
        assert len(nics) == 40 and len({n.mac for n in nics}) == 40
        ports = [a for n in nics for a in (n.switch_addr, n.vm_addr) if a]
        assert len(ports) == 60 and len(set(ports)) == 60


def test_two_processes_start_one_normal_disk(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Registry.open(state) as reg:
        reg.create("base", MiB)
        for vm in ("web1", "web2"):
            reg.machines.create(vm)
            reg.machines.add_controller(vm, "sata0", "sata")
            reg.machines.attach(vm, "sata0", 0, "base")
    ctx = mp.get_context("spawn")
    results = _run(ctx, _starter, [(str(state), "web1"), (str(state), "web2")])
    kinds = sorted(r[0] for r in results)
    assert kinds == ["refused", "started"], results
    winner = next(r[1] for r in results if r[0] == "started")
    refusal = next(r[1] for r in results if r[0] == "refused")
    assert refusal == (f"disk base is attached to running VM {winner}; normal disks run in one "
                       "VM at a time")
