# tests/disk/test_images.py - images written by netstore as qemu-img sees
# them: create_image sizes and variants, the UUID kept in the header,
# set_uuid, resize_image, and convert's refusals and clean-up.
"""create_image / set_uuid / resize_image / convert edge cases against qemu-img."""

from __future__ import annotations

import json
import os
import struct
import uuid as uuidlib
from pathlib import Path

import pytest

from netstore.disk import images
from netstore.disk.api import DiskError, UnsupportedImageError
from tests.peers import needs_qemu, qemu_img, qemu_io

MiB = 1 << 20
UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CREATE = [
    ("raw", "dynamic"), ("raw", "fixed"), ("qcow2", "dynamic"), ("qcow2", "fixed"),
    ("vdi", "dynamic"), ("vdi", "fixed"), ("vhd", "dynamic"), ("vhd", "fixed"),
    ("vmdk", "streamOptimized"), ("vmdk", "monolithicSparse"), ("vhdx", "dynamic"),
    ("vhdx", "fixed"),
]  # fmt: skip


def qinfo(path: Path, fmt: str) -> dict:
    return json.loads(
        qemu_img("info", "-f", images.FORMATS[fmt].qemu_name, "--output=json", str(path)).stdout
    )


def test_formats_table() -> None:
    assert {n for n, s in images.FORMATS.items() if s.write} == {
        "raw",
        "qcow2",
        "vdi",
        "vmdk",
        "vhd",
        "vhdx",
    }
    assert all(s.read for s in images.FORMATS.values())
    assert {n for n, s in images.FORMATS.items() if s.read_write_open} == {"raw", "qcow2"}
    assert {n for n, s in images.FORMATS.items() if s.stores_uuid} == {"vdi", "vmdk", "vhd", "vhdx"}


@needs_qemu
@pytest.mark.parametrize(("fmt", "variant"), CREATE, ids=[f"{f}-{v}" for f, v in CREATE])
def test_create_image_seen_by_qemu(tmp_path: Path, fmt: str, variant: str) -> None:
    path = tmp_path / f"new.{fmt}"
    size = 33 * MiB + 4096
    seen: list[tuple[int, int]] = []
    info = images.create_image(
        str(path), fmt, size, variant=variant, progress=lambda d, t: seen.append((d, t))
    )
    assert info.format == fmt and images.probe(str(path)).format == fmt
    q = qinfo(path, fmt)
    if fmt == "vhd":
        assert q["virtual-size"] == info.virtual_size >= size
    else:
        assert q["virtual-size"] == info.virtual_size == size
    if variant == "fixed":
        assert seen and seen[-1][0] == seen[-1][1] >= size
        assert info.variant == "fixed"
    if fmt in ("qcow2", "vdi", "vmdk", "vhdx"):
        assert (
            qemu_img(
                "check", "-f", images.FORMATS[fmt].qemu_name, str(path), check=False
            ).returncode
            == 0
        )
    # empty: reads as zeros, nothing allocated in a dynamic image
    with images.open_image(str(path), read_only=True) as img:
        assert img.pread(size - 4096, 4096) == bytes(4096)
    with pytest.raises(DiskError, match="exists"):
        images.create_image(str(path), fmt, size, variant=variant)


@needs_qemu
@pytest.mark.parametrize("fmt", ["vdi", "vhd", "vmdk"])
def test_uuid_is_written_into_the_header(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"u.{fmt}"
    info = images.create_image(str(path), fmt, 8 * MiB, uuid=UUID)
    assert info.uuid == UUID
    raw = path.read_bytes()
    if fmt == "vdi":  # image UUID at 0x188, little-endian fields as VirtualBox stores RTUUIDs
        assert raw[0x188:0x198] == uuidlib.UUID(UUID).bytes_le
    elif fmt == "vhd":  # footer unique id at 68
        assert raw[-512 + 68 : -512 + 84] == uuidlib.UUID(UUID).bytes_le
    else:
        assert f'ddb.uuid.image = "{UUID}"'.encode() in raw[:16384]
    other = str(uuidlib.uuid4())
    images.set_uuid(str(path), other)
    assert images.probe(str(path)).uuid == other
    qinfo(path, fmt)  # still opens in qemu (VHD checksum, VMDK descriptor)
    if fmt != "vhd":
        assert (
            qemu_img(
                "check", "-f", images.FORMATS[fmt].qemu_name, str(path), check=False
            ).returncode
            == 0
        )


def test_generated_uuids_differ(tmp_path: Path) -> None:
    a = images.create_image(str(tmp_path / "a.vdi"), "vdi", MiB)
    b = images.create_image(str(tmp_path / "b.vdi"), "vdi", MiB)
    assert a.uuid and b.uuid and a.uuid != b.uuid
    c = images.convert(str(tmp_path / "a.vdi"), str(tmp_path / "c.vhd"), "vhd")
    assert c.uuid and c.uuid != a.uuid


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_set_uuid_refused_where_no_field(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"n.{fmt}"
    images.create_image(str(path), fmt, MiB)
    with pytest.raises(UnsupportedImageError, match="keep no UUID"):
        images.set_uuid(str(path), UUID)
    with pytest.raises(DiskError, match="not a UUID"):
        images.set_uuid(str(path), "nope")


@needs_qemu
@pytest.mark.parametrize(
    ("fmt", "variant"),
    [("raw", "dynamic"), ("qcow2", "dynamic"), ("vdi", "dynamic"), ("vhd", "fixed")],
)
def test_resize_keeps_data(tmp_path: Path, fmt: str, variant: str) -> None:
    q = images.FORMATS[fmt].qemu_name
    path = tmp_path / f"g.{fmt}"
    if fmt == "vdi":
        # qemu's block map has no slack; netstore's rounds the data area to 4 KiB
        images.create_image(str(path), fmt, 100 * MiB, variant=variant)
    else:
        images.create_image(str(path), fmt, 8 * MiB, variant=variant)
    old = images.probe(str(path)).virtual_size
    if fmt in ("raw", "qcow2"):
        qemu_io(str(path), "write -P 0x5a 1M 64k", fmt=q)
    before = images.convert(str(path), str(tmp_path / "before.raw"), "raw")
    new = old + 200 * MiB if fmt == "vdi" else old + 8 * MiB
    if fmt == "vdi":
        with pytest.raises(UnsupportedImageError, match="no room"):
            images.resize_image(str(path), old + (8 << 30))
    images.resize_image(str(path), new)
    info = images.probe(str(path))
    assert info.virtual_size >= new
    assert qinfo(path, fmt)["virtual-size"] == info.virtual_size
    p = qemu_img(
        "compare", "-f", q, "-F", "raw", str(path), str(tmp_path / "before.raw"), check=False
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert before.virtual_size == old
    with pytest.raises(DiskError):
        images.resize_image(str(path), MiB)


def test_convert_refuses_existing_destination(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes(b"x" * MiB)
    dst = tmp_path / "d.vdi"
    dst.write_bytes(b"keep")
    with pytest.raises(DiskError, match="exists"):
        images.convert(str(src), str(dst), "vdi")
    assert dst.read_bytes() == b"keep"


def test_convert_removes_partial_destination(tmp_path: Path) -> None:
    # a dynamic VHD whose second block is cut off by truncation
    src = tmp_path / "s.raw"
    with open(src, "wb") as f:
        f.write(b"\x01" * (5 * MiB))
    vhd = tmp_path / "s.vhd"
    images.convert(str(src), str(vhd), "vhd")
    data = bytearray(vhd.read_bytes())
    del data[len(data) - 512 - 3 * MiB : len(data) - 512]  # keep the footer, drop data
    vhd.write_bytes(bytes(data))
    for fmt in ("raw", "vdi", "vmdk", "vhd", "qcow2"):
        dst = tmp_path / f"out.{fmt}"
        with pytest.raises(DiskError, match="s.vhd"):
            images.convert(str(vhd), str(dst), fmt)
        assert not dst.exists()


def test_open_image_read_only_formats(tmp_path: Path) -> None:
    path = tmp_path / "r.vdi"
    images.create_image(str(path), "vdi", MiB)
    with images.open_image(str(path)) as img:
        assert img.read_only and img.format == "vdi" and img.num_blocks == MiB // 512
        with pytest.raises(DiskError, match="read-only"):
            img.pwrite(0, b"x" * 512)
        with pytest.raises(DiskError):
            img.pread(MiB - 1, 2)


def test_probe_ignores_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "disk.qcow2"  # really a VHD
    images.create_image(str(tmp_path / "x.vhd"), "vhd", MiB, variant="fixed")
    os.rename(tmp_path / "x.vhd", path)
    assert images.probe(str(path)).format == "vhd"
    plain = tmp_path / "plain.vhd"
    plain.write_bytes(struct.pack(">Q", 1) * 1000)
    assert images.probe(str(plain)).format == "raw"


def test_unknown_format_and_variant(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="unknown image format"):
        images.create_image(str(tmp_path / "a"), "qed", MiB)
    with pytest.raises(DiskError, match="not 'sparse'"):
        images.create_image(str(tmp_path / "a"), "vdi", MiB, variant="sparse")
    assert not (tmp_path / "a").exists()
    with pytest.raises(UnsupportedImageError, match="does not write"):
        images.create_image(str(tmp_path / "b"), "parallels", MiB)
    assert not (tmp_path / "b").exists()
