# tests/disk/test_convert_qemu.py - images made by qemu-img itself in every
# format and variant netstore reads, filled with qemu-io: probe() names them,
# open_image() reads them as qemu does, and convert() to every write format
# gives a file `qemu-img compare` finds equal and `qemu-img check` clean.
"""Foreign images from qemu-img, read and converted by netstore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netstore.disk import images
from tests.peers import needs_qemu, qemu_img, qemu_io

pytestmark = [needs_qemu, pytest.mark.peers]

MiB = 1 << 20
SIZE = 9 * MiB + 64 * 1024  # not a whole number of VDI/VHD/VHDX blocks

# (id, qemu -f name, -o options, netstore format, variant probe() should see)
SOURCES = [
    ("vdi-dynamic", "vdi", None, "vdi", "dynamic"),
    ("vdi-fixed", "vdi", "static=on", "vdi", "fixed"),
    ("vmdk-monolithicSparse", "vmdk", "subformat=monolithicSparse", "vmdk", "monolithicSparse"),
    ("vmdk-streamOptimized", "vmdk", "subformat=streamOptimized", "vmdk", "streamOptimized"),
    ("vmdk-monolithicFlat", "vmdk", "subformat=monolithicFlat", "vmdk", "monolithicFlat"),
    ("vpc-dynamic", "vpc", "subformat=dynamic", "vhd", "dynamic"),
    ("vpc-fixed", "vpc", "subformat=fixed", "vhd", "fixed"),
    ("vhdx-dynamic", "vhdx", "subformat=dynamic", "vhdx", "dynamic"),
    ("vhdx-fixed", "vhdx", "subformat=fixed", "vhdx", "fixed"),
    ("parallels", "parallels", "cluster_size=256k", "parallels", "dynamic"),
    ("qcow2", "qcow2", None, "qcow2", None),
]

# (netstore format, variant) of every write target
TARGETS = [
    ("raw", "dynamic"),
    ("raw", "fixed"),
    ("qcow2", "dynamic"),
    ("qcow2", "fixed"),
    ("vdi", "dynamic"),
    ("vdi", "fixed"),
    ("vhd", "dynamic"),
    ("vhd", "fixed"),
    ("vmdk", "streamOptimized"),
    ("vmdk", "monolithicSparse"),
    ("vhdx", "dynamic"),
    ("vhdx", "fixed"),
]
QEMU_NAME = {name: spec.qemu_name for name, spec in images.FORMATS.items()}
# qemu-img has no check for these formats
NO_QEMU_CHECK = {"raw", "vhd"}


def _virtual_size(path: Path, qfmt: str) -> int:
    return json.loads(qemu_img("info", "-f", qfmt, "--output=json", str(path)).stdout)["virtual-size"]


def make_source(tmp: Path, qfmt: str, opts: str | None) -> Path:
    """A qemu-img image with patterns at the start, inside, across blocks and the last sector."""
    path = tmp / f"src.{qfmt}"
    args = ["create", "-f", qfmt]
    if opts:
        args += ["-o", opts]
    qemu_img(*args, str(path), str(SIZE))
    vsize = _virtual_size(path, qfmt)
    if "streamOptimized" in (opts or ""):
        # qemu appends whole grains, in increasing order only
        writes = [(0x11, 0, 64 * 1024), (0x22, 3 * MiB, 192 * 1024), (0x33, vsize - 64 * 1024, 64 * 1024)]
    else:
        writes = [
            (0x11, 0, 4096),
            (0x22, 1 * MiB - 512, 1024),  # across a VDI block boundary
            (0x33, 5 * MiB + 12345 // 512 * 512, 70 * 1024),
            (0x44, vsize - 512, 512),  # the last sector
        ]
    qemu_io(str(path), *(f"write -P {p:#x} {o} {n}" for p, o, n in writes), fmt=qfmt)
    return path


@pytest.fixture(scope="module", params=SOURCES, ids=[s[0] for s in SOURCES])
def source(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    sid, qfmt, opts, fmt, variant = request.param
    tmp = tmp_path_factory.mktemp(sid)
    path = make_source(tmp, qfmt, opts)
    raw = tmp / "expected.raw"
    qemu_img("convert", "-f", qfmt, "-O", "raw", str(path), str(raw))
    return path, qfmt, fmt, variant, raw


def test_probe_names_format_and_variant(source) -> None:  # type: ignore[no-untyped-def]
    path, qfmt, fmt, variant, raw = source
    info = images.probe(str(path))
    assert info.format == fmt
    if variant:
        assert info.variant == variant
    assert info.virtual_size == _virtual_size(path, qfmt)
    assert info.file_size == path.stat().st_size


def test_open_reads_what_qemu_reads(source) -> None:  # type: ignore[no-untyped-def]
    path, _qfmt, _fmt, _variant, raw = source
    expected = raw.read_bytes()
    img = images.open_image(str(path), read_only=True)
    try:
        assert img.virtual_size == len(expected)
        assert img.pread(0, img.virtual_size) == expected
        # unaligned reads across block boundaries
        for off, n in ((MiB - 700, 1500), (5 * MiB + 100, 3 * MiB), (img.virtual_size - 513, 513)):
            assert img.pread(off, n) == expected[off : off + n]
        runs = list(img.extents())
        assert runs[0].offset == 0
        assert sum(r.length for r in runs) == img.virtual_size
        for a, b in zip(runs, runs[1:], strict=False):
            assert a.offset + a.length == b.offset
        # everything outside the allocated runs reads as zeros
        for r in runs:
            if not r.allocated:
                assert expected[r.offset : r.offset + r.length] == bytes(r.length)
    finally:
        img.close()


@pytest.mark.parametrize(("fmt", "variant"), TARGETS, ids=[f"{f}-{v}" for f, v in TARGETS])
def test_convert_equal_and_clean(source, fmt: str, variant: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, qfmt, _sfmt, _svariant, _raw = source
    dst = tmp_path / f"out.{fmt}"
    seen: list[tuple[int, int]] = []
    info = images.convert(str(path), str(dst), fmt, variant=variant, progress=lambda d, t: seen.append((d, t)))
    assert info.format == fmt
    assert seen and seen[-1][0] == seen[-1][1]
    qdst = QEMU_NAME[fmt]
    p = qemu_img("compare", "-f", qfmt, "-F", qdst, str(path), str(dst), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    if fmt == "vhd":
        # a VHD's size is a whole CHS geometry: at least the source's, at most a track more
        assert 0 <= _virtual_size(dst, "vpc") - _virtual_size(path, qfmt) < 64 * 16 * 512
    else:
        assert _virtual_size(dst, qdst) == _virtual_size(path, qfmt)
    if fmt not in NO_QEMU_CHECK:
        c = qemu_img("check", "-f", qdst, str(dst), check=False)
        assert c.returncode == 0, c.stdout + c.stderr
    # and netstore reads back its own output
    back = dst.parent / "back.raw"
    images.convert(str(dst), str(back), "raw")
    p = qemu_img("compare", "-f", qfmt, "-F", "raw", str(path), str(back), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
