# tests/test_cli_disk.py - `netstore disk ...` as a user runs it: a subprocess
# with NETSTORE_CONFIG naming a config whose state directory is in tmp_path.
# Flows of create/list/info/modify/clone/convert/remove, imports of images
# made by qemu-img, converts checked by `qemu-img compare`, and refusals
# (exit 1, one line naming the rule) and usage errors (exit 2).
"""The netstore disk commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import Cli
from tests.peers import needs_qemu

MiB = 1 << 20


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"qemu-img {args}: {p.stdout}{p.stderr}"
    return p


def qemu_io(path: Path, fmt: str, *cmds: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    p = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "error" not in (p.stdout + p.stderr).lower(), p.stdout + p.stderr


def test_create_list_info_modify_remove(cli: Cli) -> None:
    out = cli.ok("disk", "create", "web", "--size", "64M")
    assert out.startswith("created web: qcow2 dynamic hdd, 64 MiB, normal")
    path = cli.state / "media" / "web.qcow2"
    assert path.exists()
    cli.ok("disk", "create", "shared", "--size", "4M", "--format", "raw", "--variant", "fixed",
           "--type", "shareable")
    listing = cli.ok("disk", "list")
    for word in ("name", "uuid", "virtual size", "current size", "used by", "web", "shared",
                 "shareable", "64 MiB", "4 MiB"):
        assert word in listing
    media = cli.json("disk", "list")
    assert [m["name"] for m in media] == ["shared", "web"]
    web = media[1]
    assert web["virtual_size"] == 64 * MiB and web["format"] == "qcow2" and web["used_by"] == []
    assert web["location"] == str(path) and web["current_size"] > 0
    info = cli.json("disk", "info", "web")
    assert info["uuid"] == web["uuid"] and info["backing_chain"] == [str(path)]
    text = cli.ok("disk", "info", web["uuid"])
    assert "location:" in text and str(path) in text and "backing chain:" in text
    m = cli.json("disk", "modify", "web", "--type", "immutable", "--autoreset", "off",
                 "--description", "the web disk", "--resize", "128M")
    assert (m["type"], m["autoreset"], m["description"], m["virtual_size"]) == (
        "immutable", False, "the web disk", 128 * MiB)
    out = cli.ok("disk", "remove", "web")
    assert "file kept" in out and path.exists()
    cli.ok("disk", "import", str(path))  # it registers again where it lies
    cli.ok("disk", "remove", "web", "--delete")
    assert not path.exists()
    assert [m["name"] for m in cli.json("disk", "list")] == ["shared"]


def test_fixed_create_quiet_when_piped(cli: Cli) -> None:
    p = cli.run("disk", "create", "f", "--size", "8M", "--variant", "fixed", "--format", "raw")
    assert p.returncode == 0 and p.stderr == ""
    st = os.stat(cli.state / "media" / "f.img")
    assert st.st_size == 8 * MiB and st.st_blocks * 512 >= 8 * MiB


def test_sizes(cli: Cli) -> None:
    for text, n in (("1K", 1024), ("3M", 3 * MiB), ("2g", 2 << 30), ("1T", 1 << 40),
                    ("4096", 4096), ("1GiB", 1 << 30)):
        name = f"s{n}"
        assert cli.json("disk", "create", name, "--size", text)["virtual_size"] == n


@pytest.mark.parametrize("argv", [
    ["disk", "create", "x", "--size", "12Q"],
    ["disk", "create", "x", "--size", "0"],
    ["disk", "create", "x"],
    ["disk", "create", "x", "--size", "1M", "--type", "weird"],
    ["disk", "create", "x", "--size", "1M", "--format", "parallels"],  # read only
    ["disk", "modify", "x", "--autoreset", "maybe"],
    ["disk", "modify", "x"],
    ["disk", "convert", "a", "b"],
    ["disk"],
    ["disk", "frobnicate"],
], ids=lambda a: "-".join(a[1:3]))
def test_usage_errors_exit_2(cli: Cli, argv: list[str]) -> None:
    p = cli.run(*argv)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("netstore: ") and p.stderr.count("\n") == 1


def test_refusals_exit_1_naming_the_rule(cli: Cli, tmp_path: Path) -> None:
    cli.ok("disk", "create", "d", "--size", "1M")
    assert "a medium named d is registered already" in cli.refused(
        "disk", "create", "d", "--size", "1M")
    assert "only fixed-size media can be shareable" in cli.refused(
        "disk", "modify", "d", "--type", "shareable")
    assert "d is an hdd; readonly is only for dvd and floppy media" in cli.refused(
        "disk", "modify", "d", "--type", "readonly")
    assert "no medium 'nope' is registered" in cli.refused("disk", "info", "nope")
    assert "autoreset applies to immutable media only" in cli.refused(
        "disk", "modify", "d", "--autoreset", "off")
    cli.ok("disk", "create", "cd", "--size", "1M", "--kind", "dvd", "--format", "raw")
    assert "cd is a dvd; dvd media are readonly" in cli.refused(
        "disk", "modify", "cd", "--type", "normal")
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"QFI\xfb" + bytes(100))
    assert "junk.qcow2" in cli.refused("disk", "import", str(junk))
    assert "no such image file" in cli.refused("disk", "import", str(tmp_path / "none.img"))


def test_layer_rules_through_the_cli(cli: Cli) -> None:
    from netstore.disk import layers

    base = cli.json("disk", "create", "base", "--size", "2M", "--format", "raw")
    child = cli.dir / "snap.qcow2"
    layers.create_child(base["location"], str(child))
    layer = cli.json("disk", "import", str(child))
    assert layer["parent_id"] == base["id"]
    info = cli.json("disk", "info", "snap")
    assert info["parent"] == "base" and info["backing_chain"] == [str(child), base["location"]]
    assert "base has child layers (snap); remove them first" in cli.refused(
        "disk", "remove", "base")
    assert "base has child layers (snap); a medium becomes writethrough only when it has none" \
        in cli.refused("disk", "modify", "base", "--type", "writethrough")
    assert "a differencing layer's type cannot be changed" in cli.refused(
        "disk", "modify", "snap", "--type", "immutable")
    assert [m["name"] for m in cli.json("disk", "list", "--layers")] == ["base", "snap"]
    assert [m["name"] for m in cli.json("disk", "list")] == ["base"]


def test_used_by_shows_machine_layers(cli: Cli) -> None:
    from netstore.registry import Registry

    cli.ok("disk", "create", "gold", "--size", "1M", "--type", "multiattach")
    with Registry.open(cli.state) as reg:
        reg.layer_for("gold", "iqn.2026-11.org.x:vm1")
    assert "iqn.2026-11.org.x:vm1" in cli.ok("disk", "list")
    err = cli.refused("disk", "remove", "gold")
    assert "gold is used by machine iqn.2026-11.org.x:vm1 (layer gold@iqn.2026-11.org.x:vm1)" \
        in err


def test_clone_new_uuid_same_content(cli: Cli) -> None:
    from netstore.disk.images import open_image, probe

    src = cli.json("disk", "create", "src", "--size", "4M", "--format", "raw")
    with open_image(src["location"]) as img:
        img.pwrite(MiB, b"payload" * 1000)
    for fmt in ("qcow2", "vdi", "vhd", "vmdk", "raw"):
        c = cli.json("disk", "clone", "src", f"c{fmt}", "--format", fmt)
        assert c["uuid"] != src["uuid"] and c["format"] == fmt
        assert probe(c["location"]).uuid in (None, c["uuid"])
        with open_image(c["location"], read_only=True) as img:
            assert img.pread(MiB, 7000) == b"payload" * 1000
    assert "a medium named cvdi is registered already" in cli.refused(
        "disk", "clone", "src", "cvdi")
    uuids = [m["uuid"] for m in cli.json("disk", "list")]
    assert len(set(uuids)) == len(uuids) == 6


def test_duplicate_uuid_import_names_the_other_file(cli: Cli, tmp_path: Path) -> None:
    cli.ok("disk", "create", "orig", "--size", "1M", "--format", "vdi")
    copy = tmp_path / "copy.vdi"
    shutil.copyfile(cli.state / "media" / "orig.vdi", copy)
    err = cli.refused("disk", "import", str(copy))
    assert str(cli.state / "media" / "orig.vdi") in err and "cannot share a UUID" in err


def test_import_iso_as_dvd_only_when_asked(cli: Cli, tmp_path: Path) -> None:
    iso = tmp_path / "install.iso"
    iso.write_bytes(bytes(MiB))
    assert cli.json("disk", "import", str(iso))["kind"] == "hdd"
    cli.ok("disk", "remove", "install")
    m = cli.json("disk", "import", str(iso), "--kind", "dvd", "--name", "cd0")
    assert (m["kind"], m["type"], m["name"]) == ("dvd", "readonly", "cd0")


# qemu-img formats and the variants it makes, as `qemu-img create -f F -o ...`
QEMU_IMAGES = [
    ("vdi", "vdi", []), ("vdi", "vdi", ["-o", "static=on"]),
    ("vmdk", "vmdk", []), ("vmdk", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vpc", "vhd", []), ("vpc", "vhd", ["-o", "subformat=fixed"]),
    ("vhdx", "vhdx", []), ("qcow2", "qcow2", []),
]


@needs_qemu
@pytest.mark.parametrize("qfmt,fmt,opts", QEMU_IMAGES,
                         ids=[f"{q}{'-' + o[1] if o else ''}" for q, _, o in QEMU_IMAGES])
def test_import_qemu_images_and_clone(cli: Cli, tmp_path: Path, qfmt: str, fmt: str,
                                      opts: list[str]) -> None:
    src = tmp_path / f"made.{fmt}"
    if "subformat=streamOptimized" in opts:  # qemu writes it only by conversion
        raw = tmp_path / "pattern.raw"
        qemu_img("create", "-f", "raw", str(raw), "8M")
        qemu_io(raw, "raw", "write -P 0x5a 1M 64k")
        qemu_img("convert", "-O", "vmdk", *opts, str(raw), str(src))
    else:
        qemu_img("create", "-f", qfmt, *opts, str(src), "8M")
        qemu_io(src, qfmt, "write -P 0x5a 1M 64k")
    m = cli.json("disk", "import", str(src), "--name", "imp")
    assert m["format"] == fmt and m["virtual_size"] >= 8 * MiB
    assert m["location"] == str(src)
    c = cli.json("disk", "clone", "imp", "copy", "--format", "qcow2")
    assert c["uuid"] != m["uuid"]
    qemu_img("compare", "-f", qfmt, "-F", "qcow2", str(src), c["location"])


@needs_qemu
@pytest.mark.parametrize("out_fmt,qemu_name", [
    ("raw", "raw"), ("qcow2", "qcow2"), ("vdi", "vdi"), ("vmdk", "vmdk"), ("vhd", "vpc"),
])
def test_convert_equal_per_qemu_compare(cli: Cli, tmp_path: Path, out_fmt: str,
                                        qemu_name: str) -> None:
    src = tmp_path / "src.vdi"
    qemu_img("create", "-f", "vdi", str(src), "16M")
    qemu_io(src, "vdi", "write -P 0x11 0 64k", "write -P 0x22 5M 1M", "write -P 0x33 15M 4k")
    out = tmp_path / f"out.{out_fmt}"
    p = cli.run("disk", "convert", str(src), str(out), "--format", out_fmt)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    qemu_img("compare", "-f", "vdi", "-F", qemu_name, str(src), str(out))
    assert "already" in cli.refused("disk", "convert", str(src), str(out), "--format", out_fmt)
    assert not (cli.state / "registry.db").exists() or cli.json("disk", "list") == []


@needs_qemu
def test_convert_fixed_variant(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src.qcow2"
    qemu_img("create", "-f", "qcow2", str(src), "4M")
    qemu_io(src, "qcow2", "write -P 0x44 1M 8k")
    out = tmp_path / "fixed.vhd"
    cli.ok("disk", "convert", str(src), str(out), "--format", "vhd", "--variant", "fixed")
    # qemu does not probe a fixed VHD (its footer is at the end): name the format
    info = json.loads(qemu_img("info", "-f", "vpc", "--output=json", str(out)).stdout)
    assert info["virtual-size"] >= 4 * MiB
    qemu_img("compare", "-F", "vpc", str(src), str(out))
