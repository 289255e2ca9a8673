# tests/disk/test_qemu_matrix.py - twenty images made by qemu-img (Parallels,
# VHDX, VMDK, VDI, VHD and qcow2; sizes that are not whole MiB, odd cluster
# and block sizes), filled with qemu-io `write -P`: netstore names each,
# reads it byte for byte as qemu does, and converts it to a format qemu-img
# then finds equal (and clean).  Then the writers on their own: random fills
# converted by netstore to VHDX and to a monolithicSparse VMDK, and random
# fills made into Parallels images by qemu-img and read back by netstore.
"""qemu-img's images read by netstore; netstore's VHDX and VMDK read by qemu-img."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk import images
from netstore.disk.api import DiskError
from tests.peers import needs_qemu, qemu_img, qemu_io

pytestmark = [needs_qemu, pytest.mark.peers]

KiB, MiB = 1024, 1 << 20

# (qemu -f name, -o options, size, netstore format, netstore convert target)
MATRIX = [
    ("parallels", None, 5 * MiB + 512, "parallels", ("qcow2", "dynamic")),
    ("parallels", "cluster_size=64k", 3 * MiB + 3584, "parallels", ("raw", "dynamic")),
    ("parallels", "cluster_size=256k", 17 * MiB, "parallels", ("vhdx", "dynamic")),
    ("parallels", None, 33 * MiB + 4096, "parallels", ("vmdk", "monolithicSparse")),
    ("parallels", "cluster_size=4k", 1 * MiB + 512, "parallels", ("qcow2", "fixed")),
    ("parallels", "cluster_size=2M", 12 * MiB + 1536, "parallels", ("vdi", "dynamic")),
    ("vhdx", "subformat=dynamic", 5 * MiB + 512, "vhdx", ("qcow2", "dynamic")),
    ("vhdx", "subformat=dynamic,block_size=1M", 20 * MiB + 7 * 512, "vhdx", ("vhdx", "dynamic")),
    ("vhdx", "subformat=fixed", 3 * MiB + 512, "vhdx", ("vmdk", "monolithicSparse")),
    ("vhdx", "subformat=dynamic,block_size=8M", 40 * MiB + 4096, "vhdx", ("raw", "dynamic")),
    ("vhdx", "subformat=dynamic,block_size=32M", 2 * MiB + 1536, "vhdx", ("vhd", "dynamic")),
    ("vmdk", "subformat=monolithicSparse", 5 * MiB + 512, "vmdk", ("vhdx", "fixed")),
    ("vmdk", "subformat=monolithicSparse", 33 * MiB + 512, "vmdk", ("vmdk", "monolithicSparse")),
    ("vmdk", "subformat=monolithicFlat", 7 * MiB + 2048, "vmdk", ("qcow2", "dynamic")),
    ("vdi", None, 5 * MiB + 512, "vdi", ("vhdx", "dynamic")),
    ("vdi", "static=on", 2 * MiB + 4096, "vdi", ("vmdk", "monolithicSparse")),
    ("vpc", "subformat=dynamic", 5 * MiB + 512, "vhd", ("vhdx", "dynamic")),
    ("vpc", "subformat=fixed", 3 * MiB, "vhd", ("qcow2", "dynamic")),
    ("qcow2", "compat=0.10,cluster_size=4k", 7 * MiB + 512, "qcow2", ("vhdx", "dynamic")),
    ("qcow2", "cluster_size=2M", 9 * MiB + 3584, "qcow2", ("vmdk", "monolithicSparse")),
]
# qemu-img has no check for these
NO_QEMU_CHECK = {"raw", "vhd"}


def _vsize(path: Path, qfmt: str) -> int:
    return json.loads(qemu_img("info", "-f", qfmt, "--output=json", str(path)).stdout)["virtual-size"]


def _fills(vsize: int) -> list[tuple[int, int, int]]:
    """(pattern, offset, length): the first sector, across the 1 MiB mark, an
    unaligned run in the middle and the last sector."""
    mid = vsize // 2 // 512 * 512 + 3 * 512
    return [
        (0x11, 0, 4096),
        (0x22, MiB - 512, 1024),
        (0x33, mid, min(70 * KiB, vsize - mid)),
        (0x44, vsize - 512, 512),
    ]


@pytest.mark.parametrize(("qfmt", "opts", "size", "fmt", "target"), MATRIX,
                         ids=[f"{i:02}-{m[0]}-{m[2]}" for i, m in enumerate(MATRIX)])
def test_qemu_image_read_and_converted(tmp_path: Path, qfmt: str, opts: str | None, size: int,
                                       fmt: str, target: tuple[str, str]) -> None:
    src = tmp_path / f"src.{qfmt}"
    qemu_img("create", "-q", "-f", qfmt, *(["-o", opts] if opts else []), str(src), str(size))
    vsize = _vsize(src, qfmt)
    qemu_io(str(src), *(f"write -P {p:#x} {o} {n}" for p, o, n in _fills(vsize)), fmt=qfmt)
    ref = tmp_path / "ref.raw"
    qemu_img("convert", "-f", qfmt, "-O", "raw", str(src), str(ref))
    expected = ref.read_bytes()
    model = bytearray(vsize)  # what the fills leave, later ones over earlier ones
    for p, o, n in _fills(vsize):
        model[o : o + n] = bytes([p]) * n
    assert expected == model

    info = images.probe(str(src))
    assert (info.format, info.virtual_size) == (fmt, vsize)
    with images.open_image(str(src), read_only=True) as img:
        assert img.pread(0, vsize) == expected
        for _p, o, n in _fills(vsize):  # unaligned reads
            assert img.pread(o + 7, n - 7) == expected[o + 7 : o + n]
        runs = list(img.extents())
        assert sum(r.length for r in runs) == vsize
        for r in runs:
            if not r.allocated:
                assert expected[r.offset : r.offset + r.length].count(0) == r.length

    out_fmt, variant = target
    dst = tmp_path / f"out.{out_fmt}"
    images.convert(str(src), str(dst), out_fmt, variant=variant)
    q = images.FORMATS[out_fmt].qemu_name
    p = qemu_img("compare", "-f", qfmt, "-F", q, str(src), str(dst), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    if out_fmt not in NO_QEMU_CHECK:
        c = qemu_img("check", "-f", q, str(dst), check=False)
        assert c.returncode == 0, c.stdout + c.stderr


# -- random fills ------------------------------------------------------------------

DISK = 6 * MiB + 1536
_writes = st.lists(
    st.tuples(st.integers(0, DISK // 512 - 1), st.integers(1, 300), st.integers(1, 255)),
    min_size=0, max_size=6,
)


def _raw_with(tmp: Path, writes: list[tuple[int, int, int]]) -> Path:
    raw = tmp / "src.raw"
    data = bytearray(DISK)
    for sector, count, byte in writes:
        start = sector * 512
        end = min(DISK, start + count * 512)
        data[start:end] = bytes([byte]) * (end - start)
    with open(raw, "wb") as f:
        f.truncate(DISK)
        for sector, count, _b in writes:  # only the written runs: the rest stays a hole
            start = sector * 512
            end = min(DISK, start + count * 512)
            f.seek(start)
            f.write(data[start:end])
    return raw


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=_writes, target=st.sampled_from([("vhdx", "dynamic"), ("vhdx", "fixed"),
                                                ("vmdk", "monolithicSparse")]))
def test_random_fills_written_by_netstore_read_by_qemu(writes: list[tuple[int, int, int]],
                                                       target: tuple[str, str]) -> None:
    fmt, variant = target
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw = _raw_with(tmp, writes)
        dst = tmp / f"out.{fmt}"
        info = images.convert(str(raw), str(dst), fmt, variant=variant)
        assert (info.format, info.virtual_size) == (fmt, DISK)
        if fmt == "vmdk":
            assert info.variant == "monolithicSparse"
        p = qemu_img("compare", "-f", "raw", "-F", fmt, str(raw), str(dst), check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        c = qemu_img("check", "-f", fmt, str(dst), check=False)
        assert c.returncode == 0, c.stdout + c.stderr
        assert _vsize(dst, fmt) == DISK


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=_writes, cluster=st.sampled_from(["4k", "64k", "1M"]))
def test_random_fills_in_qemu_parallels_read_by_netstore(writes: list[tuple[int, int, int]],
                                                         cluster: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw = _raw_with(tmp, writes)
        hds = tmp / "p.hds"
        qemu_img("convert", "-f", "raw", "-O", "parallels", "-o", f"cluster_size={cluster}",
                 str(raw), str(hds))
        with images.open_image(str(hds)) as img:
            assert img.format == "parallels" and img.virtual_size == DISK
            assert img.pread(0, DISK) == raw.read_bytes()


UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_new_vhdx_keeps_its_uuid_and_takes_qemu_writes(tmp_path: Path, variant: str) -> None:
    path = tmp_path / "n.vhdx"
    info = images.create_image(str(path), "vhdx", 3 * MiB + 512, variant=variant, uuid=UUID)
    assert (info.format, info.variant, info.uuid, info.virtual_size) == (
        "vhdx", variant, UUID, 3 * MiB + 512)
    # qemu opens it read-write, writes into it, and still finds it clean
    qemu_io(str(path), "write -P 0x7e 1M 1536k", fmt="vhdx")
    assert qemu_img("check", "-f", "vhdx", str(path), check=False).returncode == 0
    with images.open_image(str(path)) as img:
        assert img.pread(MiB, 1536 * KiB) == b"\x7e" * (1536 * KiB)
        assert img.pread(0, MiB) == bytes(MiB)


def test_new_monolithic_sparse_vmdk_uuid_and_qemu_writes(tmp_path: Path) -> None:
    path = tmp_path / "n.vmdk"
    info = images.create_image(str(path), "vmdk", 5 * MiB, variant="monolithicSparse", uuid=UUID)
    assert (info.variant, info.uuid) == ("monolithicSparse", UUID)
    other = "11111111-2222-3333-4444-555555555555"
    images.set_uuid(str(path), other)
    assert images.probe(str(path)).uuid == other
    qemu_io(str(path), "write -P 0x5c 64k 200k", fmt="vmdk")
    assert qemu_img("check", "-f", "vmdk", str(path), check=False).returncode == 0
    q = json.loads(qemu_img("info", "--output=json", str(path)).stdout)
    assert q["format-specific"]["data"]["create-type"] == "monolithicSparse"
    with images.open_image(str(path)) as img:
        assert img.pread(64 * KiB, 200 * KiB) == b"\x5c" * (200 * KiB)


@pytest.mark.parametrize(("fmt", "variant"), [("vhdx", "dynamic"), ("vmdk", "monolithicSparse")])
def test_empty_disk_refused_where_qemu_cannot_open_it(tmp_path: Path, fmt: str, variant: str) -> None:
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    dst = tmp_path / f"out.{fmt}"
    with pytest.raises(DiskError, match="at least one sector"):
        images.convert(str(empty), str(dst), fmt, variant=variant)
    assert not dst.exists()
    info = images.create_image(str(dst), fmt, 1, variant=variant)  # one byte: one sector
    assert info.virtual_size == 512
    assert qemu_img("check", "-f", fmt, str(dst), check=False).returncode == 0
