# tests/registry/test_media.py - registering media: create, import, clone,
# remove; one UUID per medium; every type rule of semantics.md section 1 and
# the message it gives.
"""Media in the registry and the rules of semantics.md section 1."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netstore.disk import layers
from netstore.disk.api import DiskError
from netstore.disk.images import create_image, open_image, probe
from netstore.registry import (
    USER_SOURCES,
    DuplicateMediumError,
    MediumInUseError,
    MediumRuleError,
    MediumUser,
    NameTakenError,
    NotFoundError,
    Registry,
)

MiB = 1 << 20


@pytest.fixture
def attach(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Attachments as issue 5 will add them: a USER_SOURCES entry (medium name -> machines)."""
    table: dict[str, list[str]] = {}

    def attachments(conn, medium):  # type: ignore[no-untyped-def]
        return [MediumUser(vm, "attached at sata0:0") for vm in table.get(medium.name, [])]

    monkeypatch.setattr("netstore.registry.media.USER_SOURCES", [*USER_SOURCES, attachments])
    yield table


def test_create_every_format_in_media_dir(reg: Registry) -> None:
    for fmt, ext in (("qcow2", "qcow2"), ("raw", "img"), ("vdi", "vdi"), ("vhd", "vhd")):
        m = reg.create(f"d-{fmt}", 3 * MiB, format=fmt)
        assert m.location == str(reg.media_dir / f"d-{fmt}.{ext}")
        info = probe(m.location)
        assert info.format == fmt and m.virtual_size == info.virtual_size >= 3 * MiB
        if info.uuid:  # kept inside where the format has one
            assert info.uuid == m.uuid
        assert m.type == "normal" and m.kind == "hdd" and m.current_size is not None
    assert [m.name for m in reg.media()] == ["d-qcow2", "d-raw", "d-vdi", "d-vhd"]


def test_create_fixed_reports_progress(reg: Registry) -> None:
    seen: list[tuple[int, int]] = []
    m = reg.create("f", 4 * MiB, format="raw", variant="fixed",
                   progress=lambda d, t: seen.append((d, t)))
    assert m.variant == "fixed" and seen and seen[-1][0] == seen[-1][1]
    assert m.current_size is not None and m.current_size >= 4 * MiB


def test_name_taken_and_bad_names(reg: Registry) -> None:
    reg.create("a", MiB)
    with pytest.raises(NameTakenError, match="a medium named a is registered already"):
        reg.create("a", MiB, format="raw")
    for bad in ("", "a/b", "../x", "x@y", ".hidden"):
        with pytest.raises(MediumRuleError, match="is not a medium name"):
            reg.create(bad, MiB)
    assert len(reg.media()) == 1


def test_lookup_by_uuid_and_missing(reg: Registry) -> None:
    m = reg.create("a", MiB)
    assert reg.medium(m.uuid).name == "a" and reg.medium(m.uuid.upper()).name == "a"
    with pytest.raises(NotFoundError, match="no medium 'zz' is registered"):
        reg.medium("zz")


def test_second_medium_with_a_uuid_is_refused_naming_the_other_file(
    reg: Registry, tmp_path: Path
) -> None:
    first = tmp_path / "one.vdi"
    create_image(str(first), "vdi", 2 * MiB)
    copy = tmp_path / "copy.vdi"
    shutil.copyfile(first, copy)  # a plain copy is not a clone
    m = reg.import_image(first)
    assert m.uuid == probe(str(first)).uuid and m.name == "one"
    with pytest.raises(DuplicateMediumError) as e:
        reg.import_image(copy)
    assert str(first) in str(e.value) and m.uuid in str(e.value) and "medium one" in str(e.value)
    with pytest.raises(DuplicateMediumError, match="registered already as medium one"):
        reg.import_image(first, name="again")


def test_clone_gets_a_new_uuid_inside_and_same_content(reg: Registry, tmp_path: Path) -> None:
    src = reg.create("src", 2 * MiB, format="raw")
    with open_image(src.location) as img:
        img.pwrite(4096, b"hello" * 100)
    for fmt in ("vdi", "vhd", "qcow2", "raw", "vmdk"):
        c = reg.clone("src", f"c-{fmt}", format=fmt)
        assert c.uuid != src.uuid and c.type == "normal"
        inside = probe(c.location).uuid
        assert inside in (None, c.uuid)
        with open_image(c.location, read_only=True) as img:
            assert img.pread(4096, 500) == b"hello" * 100
    # a clone of a vdi (UUID inside) registers fine: its UUID is new
    reg.clone("c-vdi", "c-vdi2")
    assert len({m.uuid for m in reg.media()}) == len(reg.media())


def test_import_layer_needs_registered_base(reg: Registry, tmp_path: Path) -> None:
    base = reg.create("base", 2 * MiB, format="raw")
    child = tmp_path / "child.qcow2"
    layers.create_child(base.location, str(child))
    stray = tmp_path / "stray.qcow2"
    other = tmp_path / "other.img"
    other.write_bytes(bytes(MiB))
    layers.create_child(str(other), str(stray))
    with pytest.raises(DiskError, match="is not registered; import that first"):
        reg.import_image(stray)
    c = reg.import_image(child)
    assert c.is_layer and c.parent_id == base.id
    assert [m.name for m in reg.parent_chain("child")] == ["child", "base"]
    assert [m.name for m in reg.children("base")] == ["child"]


def test_import_refuses_damaged_with_the_disk_error(reg: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + bytes(60))
    with pytest.raises(DiskError) as e:
        reg.import_image(bad)
    assert "bad.qcow2" in str(e.value)
    with pytest.raises(DiskError, match="no such image file"):
        reg.import_image(tmp_path / "nope.img")
    assert reg.media() == []


def test_dvd_import(reg: Registry, tmp_path: Path) -> None:
    iso = tmp_path / "boot.iso"
    iso.write_bytes(bytes(2 * MiB))
    m = reg.import_image(iso, kind="dvd")
    assert m.kind == "dvd" and m.type == "readonly"
    hdd = reg.import_image(_copy(iso, "hd.iso"))
    assert hdd.kind == "hdd" and hdd.type == "normal"  # dvd only when asked
    vdi = tmp_path / "x.vdi"
    create_image(str(vdi), "vdi", MiB)
    with pytest.raises(MediumRuleError, match="dvd media are raw"):
        reg.import_image(vdi, kind="dvd")


def _copy(src: Path, name: str) -> Path:
    dst = src.with_name(name)
    shutil.copyfile(src, dst)
    return dst


# -- type rules -------------------------------------------------------------


def test_layer_type_cannot_change(reg: Registry, tmp_path: Path) -> None:
    base = reg.create("base", MiB, format="raw")
    layers.create_child(base.location, str(tmp_path / "l.qcow2"))
    reg.import_image(tmp_path / "l.qcow2")
    with pytest.raises(MediumRuleError) as e:
        reg.modify("l", type="writethrough")
    assert str(e.value) == (
        "l is a differencing layer of base; a differencing layer's type cannot be changed"
    )


def test_not_while_attached_to_more_than_one(reg: Registry, attach) -> None:  # type: ignore[no-untyped-def]
    reg.create("d", MiB)
    attach["d"] = ["vm1", "vm2"]
    with pytest.raises(MediumRuleError) as e:
        reg.modify("d", type="writethrough")
    assert "d is attached to more than one machine (vm1, vm2)" in str(e.value)


def test_not_to_immutable_or_multiattach_while_attached(reg: Registry, attach) -> None:  # type: ignore[no-untyped-def]
    reg.create("d", MiB)
    attach["d"] = ["vm1"]
    for t in ("immutable", "multiattach"):
        with pytest.raises(MediumRuleError) as e:
            reg.modify("d", type=t)
        assert str(e.value) == (
            f"d is attached to machine vm1; a medium becomes {t} only while attached to no machine"
        )
    assert reg.modify("d", type="writethrough").type == "writethrough"  # one machine: allowed


def test_base_only_types_need_no_child_layers(reg: Registry, tmp_path: Path) -> None:
    base = reg.create("base", MiB, format="raw", variant="fixed")
    layers.create_child(base.location, str(tmp_path / "snap.qcow2"))
    reg.import_image(tmp_path / "snap.qcow2")
    for t in ("writethrough", "shareable"):
        with pytest.raises(MediumRuleError) as e:
            reg.modify("base", type=t)
        assert str(e.value) == (
            f"base has child layers (snap); a medium becomes {t} only when it has none"
        )


def test_shareable_only_fixed(reg: Registry) -> None:
    reg.create("dyn", MiB)
    with pytest.raises(MediumRuleError) as e:
        reg.modify("dyn", type="shareable")
    assert str(e.value) == "dyn is dynamic; only fixed-size media can be shareable"
    with pytest.raises(MediumRuleError, match="only fixed-size media can be shareable"):
        reg.create("dyn2", MiB, type="shareable")
    reg.create("fix", MiB, format="raw", variant="fixed")
    assert reg.modify("fix", type="shareable").type == "shareable"


def test_readonly_only_dvd_floppy_and_dvd_always(reg: Registry) -> None:
    reg.create("h", MiB)
    with pytest.raises(MediumRuleError) as e:
        reg.modify("h", type="readonly")
    assert str(e.value) == "h is an hdd; readonly is only for dvd and floppy media"
    fl = reg.create("fl", MiB, format="raw", kind="floppy")
    assert fl.type == "normal" and reg.modify("fl", type="readonly").type == "readonly"
    dvd = reg.create("cd", MiB, format="raw", kind="dvd")
    assert dvd.type == "readonly" and dvd.location.endswith(".iso")
    with pytest.raises(MediumRuleError) as e:
        reg.modify("cd", type="normal")
    assert str(e.value) == "cd is a dvd; dvd media are readonly"


def test_layered_type_with_a_machine_layer_stays(reg: Registry) -> None:
    reg.create("b", MiB, format="raw", type="multiattach")
    reg.layer_for("b", "m1")
    with pytest.raises(MediumRuleError, match="b has a per-machine layer of m1"):
        reg.modify("b", type="normal")
    reg.layer_for("b", "m2")
    with pytest.raises(MediumRuleError, match=r"attached to more than one machine \(m1, m2\)"):
        reg.modify("b", type="immutable")


def test_same_type_is_no_change(reg: Registry, attach) -> None:  # type: ignore[no-untyped-def]
    reg.create("d", MiB, type="immutable", format="raw")
    attach["d"] = ["vm1", "vm2"]
    assert reg.modify("d", type="immutable").type == "immutable"


def test_autoreset_only_immutable(reg: Registry) -> None:
    reg.create("n", MiB)
    with pytest.raises(MediumRuleError, match="n is normal; autoreset applies to immutable"):
        reg.modify("n", autoreset=False)
    m = reg.modify("n", type="immutable", autoreset=False)
    assert m.type == "immutable" and m.autoreset is False


def test_unknown_type_and_kind(reg: Registry) -> None:
    with pytest.raises(MediumRuleError, match="unknown medium type 'weird'"):
        reg.create("x", MiB, type="weird")
    with pytest.raises(MediumRuleError, match="unknown medium kind"):
        reg.create("x", MiB, kind="tape")


# -- modify, remove ---------------------------------------------------------


def test_resize_grows_keeping_data(reg: Registry) -> None:
    m = reg.create("g", MiB)
    with open_image(m.location) as img:
        img.pwrite(0, b"keep")
    m = reg.modify("g", resize=3 * MiB, description="bigger")
    assert m.virtual_size == 3 * MiB and m.description == "bigger"
    with open_image(m.location, read_only=True) as img:
        assert img.virtual_size == 3 * MiB and img.pread(0, 4) == b"keep"
    with pytest.raises(DiskError):
        reg.modify("g", resize=MiB)
    assert reg.medium("g").virtual_size == 3 * MiB


def test_resize_refused_with_layers(reg: Registry) -> None:
    reg.create("b", MiB, format="raw", type="immutable")
    reg.layer_for("b", "m1")
    with pytest.raises(MediumRuleError, match="b cannot be resized: machine m1 uses it"):
        reg.modify("b", resize=2 * MiB)


def test_modify_checks_everything_before_changing(reg: Registry) -> None:
    reg.create("h", MiB)
    with pytest.raises(MediumRuleError):
        reg.modify("h", type="readonly", description="should not stick", resize=2 * MiB)
    m = reg.medium("h")
    assert m.description == "" and m.virtual_size == MiB and m.type == "normal"


def test_remove_refused_with_users_or_children(reg: Registry, tmp_path: Path) -> None:
    reg.create("b", MiB, format="raw", type="immutable")
    reg.layer_for("b", "m1")
    with pytest.raises(MediumInUseError) as e:
        reg.remove("b")
    assert str(e.value) == (
        "b is used by machine m1 (layer b@m1); a medium in use cannot be removed"
    )
    n = reg.create("n", MiB, format="raw")
    layers.create_child(n.location, str(tmp_path / "top.qcow2"))
    reg.import_image(tmp_path / "top.qcow2")
    with pytest.raises(MediumInUseError, match=r"n has child layers \(top\); remove them first"):
        reg.remove("n", delete=True)
    assert Path(n.location).exists()
    reg.remove("top", delete=True)
    assert not (tmp_path / "top.qcow2").exists()
    reg.remove("n")
    assert Path(n.location).exists(), "remove without --delete keeps the file"
    reg.remove(reg.import_image(n.location), delete=True)
    assert not Path(n.location).exists()


def test_create_leaves_nothing_on_failure(reg: Registry) -> None:
    reg.media_dir.mkdir(parents=True, exist_ok=True)
    (reg.media_dir / "x.qcow2").write_bytes(b"someone's file")
    with pytest.raises(DiskError, match="exists already but is not a registered medium"):
        reg.create("x", MiB)
    assert (reg.media_dir / "x.qcow2").read_bytes() == b"someone's file"
    with pytest.raises(DiskError):
        reg.create("y", MiB, format="parallels")  # read only
    assert not list(reg.media_dir.glob("y.*")) and reg.media() == []


def test_immutable_attached_to_one_machine_may_become_normal(reg: Registry, attach) -> None:  # type: ignore[no-untyped-def]
    # an attachment without a layer yet is no per-machine layer
    reg.create("d", MiB, format="raw", type="immutable")
    attach["d"] = ["vm1"]
    assert reg.modify("d", type="normal").type == "normal"
