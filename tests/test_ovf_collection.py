# tests/test_ovf_collection.py - a two-VM collection round trip: two VMs of
# one group (start order and delay) exported together as one OVA hold one
# VirtualSystemCollection with a StartupSection in that order; imported into
# another registry they come back as the same VMs (hardware, disk content
# compared with qemu-img, NICs) in one group with the same order and delay,
# and `vm start --group` starts them in that order. A licence given on export
# is written once, at the collection, and asked for on import. A NIC's model
# and a disk's type travel through an OVA (ResourceSubType and netstore's
# section), and the model reaches QEMU's command line.
"""OVF collections: export several VMs, import them back as a group."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from tests.harness import Cli

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img (qemu-utils) missing")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def make_vm(cli: Cli, name: str, cpus: int, memory: int, fill: int) -> str:
    cli.ok("disk", "create", f"{name}-disk", "--size", "8M")
    loc = cli.json("disk", "info", f"{name}-disk")["location"]
    p = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {fill} 0 2M", loc],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cli.ok("vm", "create", name, "--cpus", str(cpus), "--memory", str(memory))
    cli.ok("vm", "controller", name, "--add", "sata0", "--bus", "sata")
    cli.ok("vm", "attach", name, "--controller", "sata0", "--port", "0", "--disk",
           f"{name}-disk")
    cli.ok("vm", "nic", name, "--slot", "0", "--switch", "sw0")
    return loc


def test_two_vm_collection_round_trips_with_its_start_order(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = Cli(tmp_path / "src")
    disks = {"web": make_vm(src, "web", 2, 512, 7), "db": make_vm(src, "db", 1, 1024, 9)}
    src.ok("vm", "modify", "db", "--group", "shop", "--start-order", "1", "--start-delay", "1")
    src.ok("vm", "modify", "web", "--group", "shop", "--start-order", "2")
    out = tmp_path / "shop.ova"
    r = src.json("ovf", "export", "web", "db", str(out))
    assert r["machine"] == "web, db"
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names[0] == "shop.ovf" and names[-1] == "shop.mf"
        env = ET.fromstring(tar.extractfile("shop.ovf").read())  # type: ignore[union-attr]
    coll = next(e for e in env.iter() if _local(e.tag) == "VirtualSystemCollection")
    assert [vs.get("{http://schemas.dmtf.org/ovf/envelope/1}id")
            for vs in coll if _local(vs.tag) == "VirtualSystem"] == ["web", "db"]
    items = [(i.get("{http://schemas.dmtf.org/ovf/envelope/1}id"),
              i.get("{http://schemas.dmtf.org/ovf/envelope/1}order"),
              i.get("{http://schemas.dmtf.org/ovf/envelope/1}startDelay"))
             for sec in coll if _local(sec.tag) == "StartupSection"
             for i in sec if _local(i.tag) == "Item"]
    assert items == [("db", "1", "1"), ("web", "2", "0")]

    dst = Cli(tmp_path / "dst")
    imported = dst.json("ovf", "import", str(out))
    assert imported["group"] == "shop"
    for name, cpus, memory in (("web", 2, 512), ("db", 1, 1024)):
        info = dst.json("vm", "info", name)
        assert (info["cpus"], info["memory_mb"]) == (cpus, memory)
        assert info["startup"]["group"] == "shop"
        assert len(info["nics"]) == 1 and info["attachments"][0]["controller"] == "sata0"
        loc = dst.json("disk", "info", info["attachments"][0]["medium"])["location"]
        cmp = subprocess.run(["qemu-img", "compare", disks[name], loc], capture_output=True,
                             text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert dst.json("vm", "info", "db")["startup"] == {"group": "shop", "order": 1,
                                                       "delay_s": 1}
    started = dst.json("vm", "start", "--group", "shop", "--type", "external")
    assert [m["name"] for m in started] == ["db", "web"]
    t = {n: datetime.fromisoformat(dst.json("vm", "info", n)["started"]) for n in ("db", "web")}
    assert (t["web"] - t["db"]).total_seconds() >= 0.9


def test_collection_licence_is_written_once_and_asked_for(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = Cli(tmp_path / "src")
    make_vm(src, "a", 1, 256, 1)
    make_vm(src, "b", 1, 256, 2)
    (tmp_path / "eula.txt").write_text("Use it well.\n")
    out = tmp_path / "ab.ova"
    src.ok("ovf", "export", "a", "b", str(out), "--eula", str(tmp_path / "eula.txt"))
    with tarfile.open(out) as tar:
        text = tar.extractfile(tar.getnames()[0]).read().decode()  # type: ignore[union-attr]
    assert text.count("EulaSection") == 2  # one element: its start and end tags
    dst = Cli(tmp_path / "dst")
    p = dst.run("ovf", "import", str(out))
    assert p.returncode == 1 and "Use it well." in p.stdout and "--accept-eula" in p.stderr
    assert dst.json("vm", "list") == []
    imported = dst.json("ovf", "import", str(out), "--accept-eula", "--name", "x")
    assert imported["group"] == "x"
    assert sorted(m["name"] for m in dst.json("vm", "list")) == ["x-a", "x-b"]
    assert "twice" in src.refused("ovf", "export", "a", "a", str(tmp_path / "aa.ova"))


def test_nic_model_and_disk_type_travel_in_netstores_section(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = Cli(tmp_path / "src")
    make_vm(src, "m", 1, 256, 3)
    src.ok("vm", "nic", "m", "--slot", "0", "--model", "e1000e")
    src.ok("vm", "nic", "m", "--slot", "1", "--switch", "sw0", "--model", "vmxnet3")
    src.ok("disk", "create", "m-imm", "--size", "4M", "--type", "immutable")
    src.ok("vm", "attach", "m", "--controller", "sata0", "--port", "1", "--disk", "m-imm")
    argv = src.json("vm", "qemu-args", "m")
    assert any(a.startswith("e1000e,netdev=net0,") for a in argv)
    assert any(a.startswith("vmxnet3,netdev=net1,") for a in argv)
    p = src.run("vm", "nic", "m", "--slot", "0", "--model", "ne2k")
    assert p.returncode == 2 and "--model" in p.stderr
    out = tmp_path / "m.ova"
    src.ok("ovf", "export", "m", str(out))
    with tarfile.open(out) as tar:
        text = tar.extractfile("m.ovf").read().decode()  # type: ignore[union-attr]
    assert "<rasd:ResourceSubType>E1000e</rasd:ResourceSubType>" in text
    assert "<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>" in text
    dst = Cli(tmp_path / "dst")
    dst.ok("ovf", "import", str(out))
    info = dst.json("vm", "info", "m")
    assert [n["model"] for n in info["nics"]] == ["e1000e", "vmxnet3"]
    assert [a["type"] for a in info["attachments"]] == ["normal", "immutable"]


def test_product_section_is_kept_shown_and_written_back(tmp_path):
    from netstore.ovf.collection import parse_package
    from netstore.registry import Registry

    data = open("tests/data/ovf-real/ovf09-vmware-studio-ubuntu.ovf", "rb").read()
    (_, app), = parse_package(data, "studio").systems
    assert app.product == {"product": "ubuntu-name",
                           "vendor": "Independent Software Vendor, Inc.",
                           "version": "1.0.0.0", "full_version": "1.0.0.0 alpha",
                           "app_url": "http://${app.ip}/"}
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = Cli(tmp_path / "src")
    make_vm(src, "appl", 1, 256, 4)
    product = {"product": "Shop", "vendor": "Example Ltd", "version": "2.1",
               "properties": [{"key": "admin.port", "type": "uint16", "value": "8080",
                               "label": "Admin port"}]}
    with Registry.open(tmp_path / "src" / "state") as reg:
        reg.machines.set_product("appl", product)
    out = tmp_path / "appl.ova"
    src.ok("ovf", "export", "appl", str(out))
    with tarfile.open(out) as tar:
        text = tar.extractfile("appl.ovf").read().decode()  # type: ignore[union-attr]
    assert "<ovf:Vendor>Example Ltd</ovf:Vendor>" in text and 'ovf:key="admin.port"' in text
    dst = Cli(tmp_path / "dst")
    dst.ok("ovf", "import", str(out))
    assert dst.json("vm", "info", "appl")["product"] == product
    shown = dst.ok("vm", "info", "appl")
    assert "Shop 2.1 (Example Ltd)" in shown and "property admin.port" in shown


def test_an_ovf_2_0_descriptor_imports(tmp_path):
    # written by hand in the 2.0 form VirtualBox uses (StorageItem,
    # EthernetPortItem, /disk/ID); tests/data/ovf2 says why
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy("tests/data/ovf2/vbox-style-2.0.ovf", pkg / "lab2.ovf")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized",
                    str(pkg / "lab2-disk001.vmdk"), "32M"], check=True)
    (tmp_path / "dst").mkdir()
    dst = Cli(tmp_path / "dst")
    p = dst.run("ovf", "import", str(pkg / "lab2.ovf"))
    assert p.returncode == 0, p.stderr
    warned = [ln for ln in p.stderr.splitlines() if "manifest" not in ln]
    assert len(warned) == 1 and "USB controller" in warned[0], p.stderr
    info = dst.json("vm", "info", "lab2")
    assert (info["cpus"], info["memory_mb"]) == (2, 768)
    assert [(c["bus"], c["chipset"]) for c in info["controllers"]] == [("sata", "AHCI")]
    (a,) = info["attachments"]
    assert (a["slot_kind"], a["port"]) == ("hdd", 0)
    assert dst.json("disk", "info", a["medium"])["virtual_size"] == 32 << 20
    assert [n["model"] for n in info["nics"]] == ["virtio"]
    assert info["product"] == {"product": "Lab Two", "vendor": "netstore tests",
                               "version": "2.0"}


def test_a_gzip_file_that_unpacks_past_the_free_space_is_refused(tmp_path, monkeypatch):
    import gzip

    from netstore.ovf import files
    from netstore.ovf.errors import OvfError

    src = tmp_path / "bomb.vmdk.gz"
    with gzip.open(src, "wb") as f:
        f.write(bytes(8 << 20))  # 8 MiB of zeros: a few KiB packed
    monkeypatch.setattr(files, "room", lambda directory: 1 << 20)
    with pytest.raises(OvfError, match="grows past the 1048576 bytes free"):
        files.gunzip_file("bomb.vmdk", src, tmp_path / "bomb.vmdk")
    assert not (tmp_path / "bomb.vmdk").exists()
    monkeypatch.undo()
    files.gunzip_file("bomb.vmdk", src, tmp_path / "bomb.vmdk")
    assert (tmp_path / "bomb.vmdk").stat().st_size == 8 << 20
