# tests/test_ovf.py - OVF/OVA export and import on real files: a VM with a
# qcow2 disk, a raw disk, a dvd and two NICs goes out as an OVA (checked with
# tar, sha256sum, qemu-img info/check/compare and the XML itself) and comes
# back as an equal VM with equal disks; tampered, malformed and hostile
# packages are refused with one line and leave nothing registered or on disk;
# VirtualBox- and ovftool-style descriptors are read; the CLI as a user runs it.
"""OVF/OVA export and import."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.disk.api import DiskError
from netstore.disk.images import open_image
from netstore.impairments import GeModel, Impairment
from netstore.ovf import (
    ManifestError,
    OvfError,
    OvfFormatError,
    OvfWarning,
    UnsupportedOvfError,
    export_vm,
    import_appliance,
)
from netstore.ovf.envelope import (
    NIC_SUBTYPES,
    NS_NETSTORE,
    NS_OVF,
    NS_RASD,
    Appliance,
    ControllerDesc,
    DriveDesc,
    FileRef,
    MachineDesc,
    NicDesc,
    VirtualDisk,
    parse_envelope,
)
from netstore.ovf.writer import build_envelope
from netstore.registry import MachineRuleError, NameTakenError, Registry

MiB = 1 << 20
R = f"{{{NS_RASD}}}"
OV = f"{{{NS_OVF}}}"


def qemu_img(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, f"qemu-img {args}: {p.stdout}{p.stderr}"
    return p


def write(path: str, offset: int, data: bytes) -> None:
    img = open_image(path)
    try:
        img.pwrite(offset, data)
        img.flush()
    finally:
        img.close()


@pytest.fixture
def reg(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Registry.open(tmp_path / "state")
    yield r
    r.close()


def make_vm(reg: Registry, tmp_path: Path, name: str = "web1") -> None:
    """2 vCPUs, 1536 MB; sata0: a qcow2 disk (port 0) and a raw disk (port 3);
    ide0: a dvd at port 1 device 1; NICs in slots 0 (sw0, VLAN 10) and 2 (lab, stream)."""
    a = reg.create(f"{name}-a", 64 * MiB)
    b = reg.create(f"{name}-b", 24 * MiB, format="raw")
    write(a.location, 0, b"hello, ovf " * 500)
    write(a.location, 40 * MiB + 123, os.urandom(70_000))
    write(b.location, MiB, b"raw!" * 1000)
    write(b.location, 24 * MiB - 512, b"\xff" * 512)
    iso = tmp_path / f"{name}-cd.iso"
    iso.write_bytes(os.urandom(300 * 1024) + bytes(724 * 1024))
    reg.import_image(iso, kind="dvd")
    m = reg.machines
    m.create(name, cpus=2, memory_mb=1536, ostype="Debian_64")
    m.add_controller(name, "sata0", "sata")
    m.add_controller(name, "ide0", "ide", "PIIX3")
    m.attach(name, "sata0", 0, f"{name}-a")
    m.attach(name, "sata0", 3, f"{name}-b")
    m.attach(name, "ide0", 1, f"{name}-cd", device=1)
    m.set_nic(name, 0, "sw0", vlan=10)
    m.set_nic(name, 2, "lab", transport="stream")


def members(ova: Path) -> dict[str, bytes]:
    with tarfile.open(ova) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]


def snapshot_of(reg: Registry) -> tuple[list[str], list[str], list[str]]:
    """Machines, media and files under the state directory: nothing may change on a refusal."""
    files = sorted(str(p.relative_to(reg.state_dir)) for p in reg.state_dir.rglob("*")
                   if p.is_file() and not p.name.startswith("registry.db"))
    return ([m.name for m in reg.machines.list()], [m.name for m in reg.media(layers=True)],
            files)


@pytest.fixture
def exported(reg: Registry, tmp_path: Path) -> Path:
    make_vm(reg, tmp_path)
    ova = tmp_path / "web1.ova"
    seen: list[tuple[int, int]] = []
    r = export_vm(reg, "web1", ova, progress=lambda d, t: seen.append((d, t)))
    assert r.path == str(ova) and r.size == ova.stat().st_size
    assert seen and seen[-1][0] == seen[-1][1] > 0
    return ova


# -- export -------------------------------------------------------------------

def test_export_tar_layout_and_manifest(exported: Path, tmp_path: Path) -> None:
    with tarfile.open(exported) as t:
        names = t.getnames()
        assert all(m.isfile() for m in t.getmembers())
    assert names == ["web1.ovf", "web1-disk1.vmdk", "web1-disk2.vmdk", "web1-dvd1.iso",
                     "web1.mf"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(exported), "-C", str(out)], check=True)
    mf = (out / "web1.mf").read_text().splitlines()
    assert mf[0].startswith("SHA256(web1.ovf)= ")
    sums = subprocess.run(["sha256sum", *names[:-1]], cwd=out, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert mf == [f"SHA256({n})= {h}" for h, n in (line.split("  ") for line in sums)]


def test_export_disks_are_stream_optimized_and_equal(reg: Registry, exported: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(exported), "-C", str(out)], check=True)
    for n, medium in ((1, "web1-a"), (2, "web1-b")):
        vmdk = out / f"web1-disk{n}.vmdk"
        info = json.loads(qemu_img("info", "--output=json", str(vmdk)).stdout)
        assert info["format"] == "vmdk"
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        assert info["virtual-size"] == reg.medium(medium).virtual_size
        qemu_img("check", str(vmdk))
        qemu_img("compare", str(vmdk), reg.medium(medium).location)
    assert (out / "web1-dvd1.iso").read_bytes() == Path(reg.medium("web1-cd").location).read_bytes()


def test_descriptor_structure(reg: Registry, exported: Path) -> None:
    files = members(exported)
    env = ET.fromstring(files["web1.ovf"])
    assert env.tag == f"{OV}Envelope" and env.get(f"{OV}version") == "1.0"
    assert [c.tag for c in env] == [f"{OV}References", f"{OV}DiskSection", f"{OV}NetworkSection",
                                    f"{OV}VirtualSystem"]
    refs = {f.get(f"{OV}id"): f for f in env.find(f"{OV}References")}  # type: ignore[union-attr]
    for f in refs.values():
        assert int(f.get(f"{OV}size")) == len(files[f.get(f"{OV}href")])  # type: ignore[arg-type]
    disks = env.find(f"{OV}DiskSection").findall(f"{OV}Disk")  # type: ignore[union-attr]
    assert [(d.get(f"{OV}diskId"), int(d.get(f"{OV}capacity")),  # type: ignore[arg-type]
             d.get(f"{OV}capacityAllocationUnits")) for d in disks] == [
        ("vmdisk1", 64 * MiB, "byte"), ("vmdisk2", 24 * MiB, "byte")]
    for d in disks:
        assert d.get(f"{OV}format") == \
            "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
        assert d.get(f"{OV}fileRef") in refs
        assert 0 < int(d.get(f"{OV}populatedSize")) <= int(d.get(f"{OV}capacity"))  # type: ignore[arg-type]
    nets = [n.get(f"{OV}name") for n in env.iter(f"{OV}Network")]
    assert nets == ["sw0", "lab"]
    vs = env.find(f"{OV}VirtualSystem")
    assert vs is not None and vs.get(f"{OV}id") == "web1"
    assert vs.find(f"{OV}OperatingSystemSection/{OV}Description").text == "Debian_64"  # type: ignore[union-attr]
    items = vs.findall(f"{OV}VirtualHardwareSection/{OV}Item")
    by_type: dict[int, list[ET.Element]] = {}
    for it in items:
        by_type.setdefault(int(it.findtext(f"{R}ResourceType")), []).append(it)  # type: ignore[arg-type]
        keys = [c.tag for c in it]
        assert keys == sorted(keys)  # CIM RASD properties in schema (alphabetical) order
    assert sorted(by_type) == [3, 4, 5, 10, 15, 17, 20]
    assert by_type[3][0].findtext(f"{R}VirtualQuantity") == "2"
    mem = by_type[4][0]
    assert (mem.findtext(f"{R}AllocationUnits"), mem.findtext(f"{R}VirtualQuantity")) == \
        ("byte * 2^20", "1536")
    sata, ide = by_type[20][0], by_type[5][0]
    assert sata.findtext(f"{R}ResourceSubType") == "AHCI"
    assert ide.findtext(f"{R}ResourceSubType") == "PIIX3"
    disk_items = by_type[17]
    assert [(d.findtext(f"{R}HostResource"), d.findtext(f"{R}Parent"),
             d.findtext(f"{R}AddressOnParent")) for d in disk_items] == [
        ("ovf:/disk/vmdisk1", sata.findtext(f"{R}InstanceID"), "0"),
        ("ovf:/disk/vmdisk2", sata.findtext(f"{R}InstanceID"), "3")]
    cd = by_type[15][0]
    assert cd.findtext(f"{R}Parent") == ide.findtext(f"{R}InstanceID")
    assert cd.findtext(f"{R}AddressOnParent") == "3"  # IDE port 1 device 1: 1 * 2 + 1
    assert cd.findtext(f"{R}HostResource") == "ovf:/file/file3"
    macs = [n.mac for n in reg.machines.nics("web1")]
    assert [(n.findtext(f"{R}Connection"), n.findtext(f"{R}Address")) for n in by_type[10]] == \
        list(zip(["sw0", "lab"], macs, strict=True))
    ids = [it.findtext(f"{R}InstanceID") for it in items]
    assert len(set(ids)) == len(ids)
    sec = vs.find(f"{{{NS_NETSTORE}}}MachineSection")
    assert sec is not None and sec.get(f"{OV}required") == "false"
    nics = sec.findall(f"{{{NS_NETSTORE}}}Nic")
    assert [(n.get("slot"), n.get("vlan"), n.get("transport")) for n in nics] == [
        ("0", "10", "udp"), ("2", "1", "stream")]


def test_export_reads_through_layers(reg: Registry, tmp_path: Path) -> None:
    make_vm(reg, tmp_path)
    reg.machines.take_snapshot("web1", "s1")
    top = str(reg.current_top("web1-a"))
    assert top != reg.medium("web1-a").location
    write(top, 8 * MiB, b"after the snapshot" * 100)
    imm = reg.create("shared", 8 * MiB)
    write(imm.location, 0, b"base" * 100)
    reg.modify("shared", type="immutable")
    reg.machines.attach("web1", "sata0", 5, "shared")
    reg.machines.start("web1")
    with pytest.raises(OvfError, match="web1 is running; export a powered-off VM"):
        export_vm(reg, "web1", tmp_path / "r.ova")
    layer = reg.layer_path("shared", "web1")
    write(str(layer), 4096, b"mine" * 100)
    reg.machines.stop("web1")
    export_vm(reg, "web1", tmp_path / "l.ova")
    out = tmp_path / "l"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "l.ova"), "-C", str(out)], check=True)
    qemu_img("compare", str(out / "web1-disk1.vmdk"), top)
    qemu_img("compare", str(out / "web1-disk3.vmdk"), str(layer))
    assert qemu_img("compare", str(out / "web1-disk1.vmdk"), reg.medium("web1-a").location,
                    ok=False).returncode == 1


def test_export_refusals_leave_nothing(reg: Registry, tmp_path: Path) -> None:
    make_vm(reg, tmp_path)
    (tmp_path / "there.ova").write_bytes(b"x")
    with pytest.raises(OvfError, match="exists already"):
        export_vm(reg, "web1", tmp_path / "there.ova")
    with pytest.raises(OvfError, match="no such directory"):
        export_vm(reg, "web1", tmp_path / "nope" / "x.ova")
    with pytest.raises(DiskError, match="no VM 'ghost'"):
        export_vm(reg, "ghost", tmp_path / "g.ova")
    os.unlink(reg.medium("web1-b").location)  # a disk that cannot be read
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(DiskError):
        export_vm(reg, "web1", tmp_path / "broken.ova")
    assert sorted(os.listdir(tmp_path)) == before


# -- import -------------------------------------------------------------------

def test_round_trip_equal_vm_and_disks(reg: Registry, exported: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = import_appliance(reg, exported, name="web2")
    # same registry: the MACs collide, so new ones are generated and said
    assert [str(w.message) for w in caught if issubclass(w.category, OvfWarning)] == [
        f"NIC {n.slot}: MAC {n.mac} is taken in this registry; a new MAC is generated"
        for n in reg.machines.nics("web1")]
    old, new = reg.machines.get("web1"), r.machine
    assert new.name == "web2" and new.uuid != old.uuid
    for f in ("cpus", "memory_mb", "ostype", "chipset", "cpu_cap", "weight", "cpu_hotplug"):
        assert getattr(new, f) == getattr(old, f), f
    assert (new.cpus, new.memory_mb) == (2, 1536)
    assert reg.machines.controllers("web2") == reg.machines.controllers("web1")
    olds, news = reg.machines.attachments("web1"), reg.machines.attachments("web2")
    assert [(a.controller, a.bus, a.port, a.device, a.slot_kind, a.type) for a in news] == \
        [(a.controller, a.bus, a.port, a.device, a.slot_kind, a.type) for a in olds]
    assert [a.medium for a in news] == ["web2-disk1", "web2-disk2", "web2-dvd1"]
    assert not {a.medium_uuid for a in news} & {a.medium_uuid for a in olds}
    for a, b in zip(olds, news, strict=True):
        assert b.location.startswith(str(reg.media_dir) + os.sep)
        qemu_img("compare", a.location, b.location)
        if b.slot_kind == "hdd":
            assert reg.medium(b.medium).format == "qcow2"
            qemu_img("check", b.location)
    on, nn = reg.machines.nics("web1"), reg.machines.nics("web2")
    assert [(n.slot, n.switch, n.vlan, n.transport) for n in nn] == \
        [(n.slot, n.switch, n.vlan, n.transport) for n in on]
    assert not {n.mac for n in nn} & {n.mac for n in on}
    assert {m.name for m in r.media} == {"web2-disk1", "web2-disk2", "web2-dvd1"}
    assert not [p for p in reg.state_dir.iterdir() if p.name.startswith(".ovf-import-")]


def test_import_into_another_registry_keeps_macs_and_settings(reg: Registry,
                                                              tmp_path: Path) -> None:
    make_vm(reg, tmp_path)
    reg.machines.modify("web1", cpu_hotplug=True, cpu_cap=50, weight=300,
                        memory_range=(512, 1536), page_fusion=True)
    reg.machines.modify("web1", unplug_cpu=1)
    reg.modify("web1-b", type="writethrough")
    export_vm(reg, "web1", tmp_path / "w.ova")
    with Registry.open(tmp_path / "other") as other:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OvfWarning)
            r = import_appliance(other, tmp_path / "w.ova")
        vm = r.machine
        assert vm.name == "web1"  # the descriptor's name
        src = reg.machines.get("web1")
        for f in ("cpus", "cpu_hotplug", "plugged_cpus", "cpu_cap", "weight", "memory_mb",
                  "memory_min_mb", "page_fusion", "ostype"):
            assert getattr(vm, f) == getattr(src, f), f
        assert [n.mac for n in other.machines.nics("web1")] == \
            [n.mac for n in reg.machines.nics("web1")]
        assert other.medium("web1-disk2").type == "writethrough"
        assert other.medium("web1-dvd1").type == "readonly"


def test_import_plain_ovf_with_files_beside(reg: Registry, exported: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(exported), "-C", str(out)], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = import_appliance(reg, out / "web1.ovf", name="web3")
    assert len(r.media) == 3
    assert sorted(os.listdir(out)) == ["web1-disk1.vmdk", "web1-disk2.vmdk", "web1-dvd1.iso",
                                       "web1.mf", "web1.ovf"]  # the package is left as it was
    qemu_img("compare", reg.medium("web1-a").location, reg.medium("web3-disk1").location)


def _retar(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Copy the OVA `src` to `dst`, passing each (name, data) through `change`
    (which returns a list of (name, data), possibly empty)."""
    with tarfile.open(src) as t, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as out:
        for m in t.getmembers():
            data = t.extractfile(m).read()  # type: ignore[union-attr]
            for name, new in change(m.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(new)
                out.addfile(info, io.BytesIO(new))


def _refused(reg: Registry, path: Path, error: type, text: str, **kw) -> str:  # type: ignore[no-untyped-def]
    before = snapshot_of(reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DiskError) as e:
            import_appliance(reg, path, **kw)
    msg = str(e.value)
    assert isinstance(e.value, error), repr(e.value)
    assert text in msg, msg
    assert "\n" not in msg
    assert snapshot_of(reg) == before
    assert not [p for p in reg.state_dir.iterdir() if p.name.startswith(".ovf-import-")]
    return msg


def test_tampered_disk_fails_the_manifest(reg: Registry, exported: Path,
                                          tmp_path: Path) -> None:
    bad = tmp_path / "bad.ova"
    bad.write_bytes(exported.read_bytes())
    with tarfile.open(bad) as t:
        m = t.getmember("web1-disk2.vmdk")
    with open(bad, "r+b") as f:  # one byte inside the disk's data, in place
        f.seek(m.offset_data + m.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    msg = _refused(reg, bad, ManifestError, "web1-disk2.vmdk", name="web9")
    assert msg == ("web1-disk2.vmdk: its SHA256 digest does not match the manifest web1.mf; "
                   "the file was changed or damaged (refused)")


def test_tampered_descriptor_fails_the_manifest(reg: Registry, exported: Path,
                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.ova"
    _retar(exported, bad, lambda n, d: [(n, d.replace(b">1536<", b">4096<") if n.endswith(".ovf")
                                         else d)])
    _refused(reg, bad, ManifestError, "web1.ovf: its SHA256 digest does not match", name="w9")
    # an edit that breaks the XML is still reported as the manifest mismatch it is
    _retar(exported, bad2 := tmp_path / "bad2.ova",
           lambda n, d: [(n, d[:-40] if n.endswith(".ovf") else d)])
    _refused(reg, bad2, ManifestError, "web1.ovf: its SHA256 digest", name="w9")


def test_missing_or_unlisted_files(reg: Registry, exported: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone.ova"
    _retar(exported, gone, lambda n, d: [] if n == "web1-disk1.vmdk" else [(n, d)])
    _refused(reg, gone, ManifestError,
             "web1-disk1.vmdk: listed in the manifest web1.mf but missing from gone.ova",
             name="w9")
    unlisted = tmp_path / "unlisted.ova"
    _retar(exported, unlisted, lambda n, d: [(n, b"".join(
        line + b"\n" for line in d.splitlines() if b"dvd1" not in line) if n.endswith(".mf")
        else d)])
    _refused(reg, unlisted, ManifestError, "web1-dvd1.iso: not covered by the manifest",
             name="w9")


def test_hostile_and_malformed_packages(reg: Registry, exported: Path, tmp_path: Path) -> None:
    trav = tmp_path / "trav.ova"
    _retar(exported, trav, lambda n, d: [(n, d), ("../evil", b"x")] if n.endswith(".ovf")
           else [(n, d)])
    _refused(reg, trav, OvfFormatError, "member name '../evil' leaves the package", name="w9")
    assert not (reg.state_dir / "evil").exists() and not (tmp_path / "evil").exists()
    absolute = tmp_path / "abs.ova"
    _retar(exported, absolute, lambda n, d: [(n, d), ("/tmp/evil", b"x")]
           if n.endswith(".ovf") else [(n, d)])
    _refused(reg, absolute, OvfFormatError, "leaves the package", name="w9")
    with tarfile.open(link := tmp_path / "link.ova", "w") as t:
        info = tarfile.TarInfo("x.ovf")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    _refused(reg, link, OvfFormatError, "member x.ovf is not a plain file")
    late = tmp_path / "late.ova"
    with tarfile.open(exported) as t, tarfile.open(late, "w") as out:
        ms = t.getmembers()
        for m in ms[1:] + ms[:1]:
            out.addfile(m, t.extractfile(m))
    _refused(reg, late, OvfFormatError, "the first member is web1-disk1.vmdk; an OVA starts "
             "with its OVF descriptor (.ovf)", name="w9")
    junk = tmp_path / "junk.ova"
    junk.write_bytes(os.urandom(4096))
    _refused(reg, junk, OvfFormatError, "junk.ova: neither an OVA (a tar archive) nor an OVF")
    cut = tmp_path / "cut.ova"
    cut.write_bytes(exported.read_bytes()[:20_000])
    _refused(reg, cut, OvfFormatError, "cut.ova")
    xml_bad = tmp_path / "x.ova"
    with tarfile.open(xml_bad, "w") as t:
        data = b"<Envelope><unclosed></Envelope>"
        info = tarfile.TarInfo("x.ovf")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    _refused(reg, xml_bad, OvfFormatError, "x.ovf: not well-formed XML")
    bomb = tmp_path / "bomb.ovf"
    bomb.write_bytes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Envelope/>')
    _refused(reg, bomb, OvfFormatError, "a DTD or entity declaration")


def test_refusals_before_and_after_conversion_leave_nothing(reg: Registry, exported: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _refused(reg, exported, NameTakenError, "a VM named web1 is registered already; choose "
             "another name with --name")
    _refused(reg, exported, MachineRuleError, "'Bad Name' is not a VM name", name="Bad Name")
    # a failure after the disks are converted and registered undoes them all
    from netstore.registry.machines import Machines

    def boom(self, *a, **k):  # type: ignore[no-untyped-def]
        raise OvfError("injected NIC failure")

    monkeypatch.setattr(Machines, "set_nic", boom)
    _refused(reg, exported, OvfError, "injected NIC failure", name="web5")


def test_unsupported_disk_format_is_refused(reg: Registry, exported: Path,
                                            tmp_path: Path) -> None:
    def change(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith(".mf"):
            return []
        if n.endswith(".ovf"):
            d = d.replace(b"vmdk.html#streamOptimized", b"vmdk.html#monolithicSparse", 1)
        return [(n, d)]

    _retar(exported, bad := tmp_path / "sparse.ova", change)
    _refused(reg, bad, UnsupportedOvfError, "disk vmdisk1 (web1-disk1.vmdk) has format "
             "'http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicSparse'",
             name="w9")
    # a file that says streamOptimized but is a qcow2 is refused too
    qcow = tmp_path / "q.qcow2"
    qemu_img("create", "-f", "qcow2", str(qcow), "1M")

    def swap(n: str, d: bytes) -> list[tuple[str, bytes]]:
        if n.endswith(".mf"):
            return []
        if n == "web1-disk1.vmdk":
            d = qcow.read_bytes()
        if n.endswith(".ovf"):
            d = d.replace(b'ovf:size="%d"' % len(members(exported)["web1-disk1.vmdk"]),
                          b'ovf:size="%d"' % qcow.stat().st_size)
        return [(n, d)]

    _retar(exported, bad2 := tmp_path / "q.ova", swap)
    _refused(reg, bad2, UnsupportedOvfError, "web1-disk1.vmdk is a qcow2", name="w9")



# -- the descriptor as data: build and parse agree ------------------------------

_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


@st.composite
def appliances(draw):  # type: ignore[no-untyped-def]
    from netstore.registry.machines import BUSES

    cpus = draw(st.integers(1, 32))
    hot = draw(st.booleans())
    machine = MachineDesc(draw(_names), draw(st.sampled_from(["Other", "Debian_64", "x y"])),
                          cpus, draw(st.integers(4, 1 << 20)), hot,
                          tuple(sorted(draw(st.sets(st.integers(0, cpus - 1))) | {0}))
                          if hot else (), draw(st.integers(1, 100)), draw(st.integers(1, 10000)),
                          draw(st.none() | st.integers(4, 1024)), draw(st.booleans()),
                          draw(st.sampled_from(["piix3", "ich9"])))
    app = Appliance(machine)
    ids = iter(range(3, 10_000))
    for i in range(draw(st.integers(0, 3))):
        bus = draw(st.sampled_from(sorted(BUSES)))
        app.controllers.append(ControllerDesc(str(next(ids)), bus,
                                              draw(st.sampled_from(BUSES[bus].chipsets)),
                                              f"c{i}"))
    for c in app.controllers:
        b = BUSES[c.bus]
        for port in draw(st.sets(st.integers(0, b.ports - 1), max_size=3)):
            kind = draw(st.sampled_from(b.kinds))
            n = len(app.files) + 1
            app.files.append(FileRef(f"file{n}", f"f{n}.bin", draw(st.integers(0, 1 << 40))))
            d = DriveDesc(str(next(ids)), kind, c.instance_id, port,
                          draw(st.integers(0, b.devices - 1)), medium=f"m{n}",
                          type="normal", variant="dynamic", description="")
            if kind == "hdd":
                app.disks.append(VirtualDisk(f"vmdisk{n}", f"file{n}",
                                             draw(st.integers(0, 1 << 40)),
                                             populated_size=draw(st.integers(0, 1 << 30))))
                d.disk_id = f"vmdisk{n}"
            else:
                d.file_ref = f"file{n}"
            app.drives.append(d)
    for slot in draw(st.sets(st.integers(0, 7), max_size=3)):
        sw = draw(_names)
        model = draw(st.sampled_from(sorted(NIC_SUBTYPES)))
        app.nics.append(NicDesc(str(next(ids)), sw, f"52:54:00:12:34:{slot:02x}",
                                NIC_SUBTYPES[model], slot, sw, draw(st.integers(1, 4094)),
                                draw(st.sampled_from(["udp", "stream", "vde"])),
                                draw(_impairments), draw(_impairments), model))
    return app


_impairments = st.none() | st.sampled_from([
    Impairment(delay=0.08, loss=0.01), Impairment(rate=10_000_000, overhead=-4, limit=50),
    Impairment(delay=0.02, jitter=0.002, delay_correlation=0.25, distribution="paretonormal",
               gemodel=GeModel(0.01, 0.3, 0.9, 0.001), duplicate=0.5, duplicate_correlation=0.1,
               corrupt=0.001, corrupt_correlation=0.2, reorder=0.25, reorder_correlation=0.5,
               gap=5)])


@settings(max_examples=60, deadline=None)
@given(appliances())
def test_parse_of_build_is_identity(app: Appliance) -> None:
    assert parse_envelope(build_envelope(app)) == app


# -- the command line ---------------------------------------------------------

def test_cli_export_then_import(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "netstore.toml"
    config.write_text(f'[daemon]\nstate_dir = "{state}"\n')
    with Registry.open(state) as reg:
        make_vm(reg, tmp_path)
    env = {**os.environ, "NETSTORE_CONFIG": str(config)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "netstore", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    p = run("ovf", "export", "web1", "out.ova")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"exported web1 to {tmp_path / 'out.ova'} (")
    assert p.stderr == ""  # quiet when piped: no progress bar
    p = run("ovf", "export", "web1", "out.ova")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "exists already" in p.stderr
    p = run("ovf", "import", "out.ova", "--name", "web2", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["machine"]["name"] == "web2" and d["machine"]["cpus"] == 2
    assert len(d["media"]) == 3
    assert p.stderr.count("netstore: warning: NIC ") == 2  # MACs taken by web1
    info = json.loads(run("vm", "info", "web2", "--json").stdout)
    assert [(a["controller"], a["port"], a["device"]) for a in info["attachments"]] == [
        ("sata0", 0, 0), ("sata0", 3, 0), ("ide0", 1, 1)]
    for a in info["attachments"]:
        src = next(x for x in json.loads(run("vm", "info", "web1", "--json").stdout)
                   ["attachments"] if (x["controller"], x["port"]) == (a["controller"], a["port"]))
        qemu_img("compare", src["location"], a["location"])
    bad = tmp_path / "bad.ova"
    bad.write_bytes((tmp_path / "out.ova").read_bytes())
    with tarfile.open(bad) as t:
        m = t.getmember("web1-disk1.vmdk")
    with open(bad, "r+b") as f:
        f.seek(m.offset_data + 1000)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    p = run("ovf", "import", "bad.ova", "--name", "web3")
    assert p.returncode == 1
    assert p.stderr == ("netstore: web1-disk1.vmdk: its SHA256 digest does not match the "
                        "manifest web1.mf; the file was changed or damaged (refused)\n")
    assert "web3" not in run("vm", "list").stdout
    p = run("ovf", "import", "missing.ova")
    assert p.returncode == 1 and "missing.ova: no such file" in p.stderr
    p = run("ovf", "frob")
    assert p.returncode == 2


def test_no_manifest_warns_and_ovf_hrefs_stay_inside(reg: Registry, exported: Path,
                                                     tmp_path: Path) -> None:
    bare = tmp_path / "bare.ova"
    _retar(exported, bare, lambda n, d: [] if n.endswith(".mf") else [(n, d)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_appliance(reg, bare, name="bare")
    assert "bare.ova has no manifest; its files' integrity was not checked" in \
        [str(w.message) for w in caught]
    out = tmp_path / "pkg"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(exported), "-C", str(out)], check=True)
    (out / "web1.mf").unlink()
    ovf = out / "web1.ovf"
    ovf.write_bytes(ovf.read_bytes().replace(b'ovf:href="web1-disk1.vmdk"',
                                             b'ovf:href="../secret.vmdk"'))
    _refused(reg, ovf, OvfFormatError, "member name '../secret.vmdk' leaves the package",
             name="w9")


# -- impairments of the NICs' links (issue 11) --------------------------------------

IMP_IN = Impairment(delay=0.02, jitter=0.002, delay_correlation=0.25, distribution="normal",
                    gemodel=GeModel(0.01, 0.3), reorder=0.25, gap=5, limit=100)
IMP_OUT = Impairment(loss=0.01, loss_correlation=0.5, duplicate=0.02, corrupt=0.001,
                     rate=10_000_000, overhead=14)


def test_nic_impairments_round_trip(reg: Registry, tmp_path: Path) -> None:
    make_vm(reg, tmp_path)
    reg.machines.set_nic("web1", 0, impair_in=IMP_IN, impair_out=IMP_OUT)
    reg.machines.set_nic("web1", 2, impair_out={"delay": "80ms"})
    export_vm(reg, "web1", tmp_path / "w.ova")
    vs = ET.fromstring(members(tmp_path / "w.ova")["web1.ovf"]).find(f"{OV}VirtualSystem")
    nics = vs.find(f"{{{NS_NETSTORE}}}MachineSection").findall(f"{{{NS_NETSTORE}}}Nic")  # type: ignore[union-attr]
    imps = [[dict(i.attrib) for i in n] for n in nics]
    assert imps == [
        [{"direction": "in", "delay": "20ms", "jitter": "2ms", "delayCorrelation": "25%",
          "distribution": "normal", "gemodel": "1%,30%,100%,0%", "reorder": "25%", "gap": "5",
          "limit": "100"},
         {"direction": "out", "loss": "1%", "lossCorrelation": "50%", "duplicate": "2%",
          "corrupt": "0.1%", "rate": "10mbit", "overhead": "14"}],
        [{"direction": "out", "delay": "80ms"}]]
    with Registry.open(tmp_path / "other") as other:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OvfWarning)
            import_appliance(other, tmp_path / "w.ova")
        assert [(n.slot, n.impair_in, n.impair_out) for n in other.machines.nics("web1")] == [
            (0, IMP_IN, IMP_OUT), (2, None, Impairment(delay=0.08))]


@pytest.mark.parametrize(("old", "new", "message"), [
    (b'lossCorrelation="50%"', b'lossCorrelation="150%"',
     "NIC 9 (slot 0) on 'sw0': netstore impairment out: lossCorrelation: expected a percentage from "
     '"0%" to "100%", got "150%"'),
    (b'rate="10mbit"', b'rate="10 megabits"',
     "NIC 9 (slot 0) on 'sw0': netstore impairment out: rate: expected a rate like"),
    (b'overhead="14"', b'lose="1%"',
     "NIC 9 (slot 0) on 'sw0': netstore impairment out: lose: expected one of the keys"),
    (b'direction="out"', b'direction="both"',
     "NIC 9 (slot 0) on 'sw0': a netstore impairment has direction 'both'; expected one of in, out"),
])
def test_a_bad_impairment_is_refused_naming_the_nic(reg: Registry, exported: Path,
                                                    tmp_path: Path, old: bytes, new: bytes,
                                                    message: str) -> None:
    reg.machines.set_nic("web1", 0, impair_in=IMP_IN, impair_out=IMP_OUT)
    export_vm(reg, "web1", tmp_path / "w.ova")
    bad = tmp_path / "bad.ova"

    def change(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name.endswith(".mf"):
            return []
        if name.endswith(".ovf"):
            assert old in data
            data = data.replace(old, new)
        return [(name, data)]

    _retar(tmp_path / "w.ova", bad, change)
    desc = members(bad)["web1.ovf"]
    iid = re.search(rb'<netstore:Nic instanceId="(\d+)" slot="0"', desc).group(1)  # type: ignore[union-attr]
    msg = _refused(reg, bad, OvfFormatError, message.replace("NIC 9", f"NIC {iid.decode()}"),
                   name="w9")
    assert msg.startswith(f"web1.ovf: NIC {iid.decode()} (slot 0) on 'sw0': ")
