# tests/disk/test_foreign_formats.py - formats qemu-img knows and netstore
# does not read (qcow 1, QED, LUKS made by qemu-img; DMG, cloop, bochs and
# VMDK 3 headers built here, qemu-img agreeing where it can tell): every
# entry point refuses them naming the format and writes nothing.  Parallels
# images (qemu-img's, and an old "WithoutFreeSpace" one built here with
# 63-sector clusters) read as qemu reads them, convert, import, and their
# damage is named.
"""Format detection, refusals of foreign formats, and the Parallels reader."""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk import images
from netstore.disk.api import DiskError, ImageFormatError, UnsupportedImageError
from netstore.disk.formats import detect, parallels
from tests.harness import Cli
from tests.peers import HAVE_QEMU, needs_qemu, qemu_img, qemu_io

MiB = 1 << 20
UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def _cloop(tmp: Path) -> Path:
    path = tmp / "c.cloop"
    head = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
    head += bytes(128 - len(head)) + struct.pack(">II", 65536, 1) + struct.pack(">QQ", 144, 144)
    path.write_bytes(head)
    return path


def _bochs(tmp: Path) -> Path:
    path = tmp / "b.img"
    hdr = bytearray(512)
    hdr[0:32] = b"Bochs Virtual HD Image".ljust(32, b"\0")
    hdr[32:48] = b"Redolog".ljust(16, b"\0")
    hdr[48:64] = b"Growing".ljust(16, b"\0")
    struct.pack_into("<II", hdr, 64, 0x00020000, 512)  # version, header size
    struct.pack_into("<IIIQ", hdr, 72, 1, 512, 8 * 512, MiB)  # catalog, bitmap, extent, disk
    path.write_bytes(bytes(hdr) + b"\xff" * 4 + bytes(508))
    return path


def _dmg(tmp: Path) -> Path:
    path = tmp / "d.dmg"
    trailer = b"koly" + struct.pack(">II", 4, 512) + bytes(500)
    path.write_bytes(bytes(MiB) + trailer)
    return path


def _cowd(tmp: Path) -> Path:
    path = tmp / "v3.vmdk"
    path.write_bytes(b"COWD" + struct.pack("<III", 1, 3, 2048) + bytes(MiB - 16))
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """One image of every refused format, keyed by its detect.FOREIGN name."""
    tmp = tmp_path_factory.mktemp("foreign")
    made = {"dmg": _dmg(tmp), "cloop": _cloop(tmp), "bochs": _bochs(tmp), "vmdk3": _cowd(tmp)}
    if not HAVE_QEMU:  # only the built ones
        return made
    for fmt, opts in (("qcow", []), ("qed", []),
                      # qemu 7's PBKDF benchmark fails ("Unable to get accurate CPU usage")
                      # when its first round takes under 1 ms of CPU: sha512 rounds are slower
                      ("luks", ["--object", "secret,id=s0,data=pw",
                                "-o", "key-secret=s0,iter-time=10,hash-alg=sha512"])):
        path = tmp / f"x.{fmt}"
        for _ in range(5):  # and if it still fails, again
            if qemu_img("create", "-q", "-f", fmt, *opts, str(path), "4M", check=False).returncode == 0:
                break
        else:
            qemu_img("create", "-q", "-f", fmt, *opts, str(path), "4M")
        made[fmt] = path
    return made


def test_every_foreign_format_has_an_image(foreign: dict[str, Path]) -> None:
    if HAVE_QEMU:
        assert set(foreign) == set(detect.FOREIGN)


@needs_qemu
@pytest.mark.parametrize("fmt", ["cloop", "bochs"])
def test_qemu_sees_the_built_headers_as_we_do(foreign: dict[str, Path], fmt: str) -> None:
    info = json.loads(qemu_img("info", "--output=json", str(foreign[fmt])).stdout)
    assert info["format"] == fmt


@pytest.mark.parametrize("fmt", sorted(detect.FOREIGN))
def test_refused_everywhere_naming_the_format(foreign: dict[str, Path], fmt: str,
                                              tmp_path: Path) -> None:
    if fmt not in foreign:
        pytest.skip("qemu-img is not installed")
    src = str(foreign[fmt])
    before = hashlib.sha256(foreign[fmt].read_bytes()).hexdigest()
    title = detect.FOREIGN[fmt].title
    assert images.identify(src) == fmt
    calls = [
        lambda: images.detect_format(src),
        lambda: images.probe(src),
        lambda: images.open_image(src),
        lambda: images.open_image(src, read_only=True),
        lambda: images.resize_image(src, 64 * MiB),
        lambda: images.set_uuid(src, UUID),
    ]
    for call in calls:
        with pytest.raises(UnsupportedImageError) as e:
            call()
        assert str(e.value).startswith(f"{src} is a {title} image; netstore does not read {title} (")
        assert "qemu-img convert" in str(e.value)
    for out_fmt in ("qcow2", "raw", "vmdk"):
        dst = tmp_path / f"out.{out_fmt}"
        with pytest.raises(UnsupportedImageError, match=re.escape(title)):
            images.convert(src, str(dst), out_fmt)
        assert not dst.exists()
    assert hashlib.sha256(foreign[fmt].read_bytes()).hexdigest() == before


def test_near_misses_are_raw(tmp_path: Path) -> None:
    cases = {
        "script": b"#!/bin/sh\necho hello\n#V2.0 Format\n",  # cloop's line, but not second
        "qed-ish": b"QED!" + bytes(60),
        "luks-ish": b"LUKS\xba\xbf" + bytes(58),
        "bochs-ish": b"Bochs Virtual HD" + bytes(48),
        "short": b"QFI",
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data + bytes(2048))
        assert images.detect_format(str(path)) == "raw", name
    # a qcow2 v3 header is qcow2, whatever else follows
    assert detect.sniff(b"QFI\xfb\0\0\0\3" + bytes(100), b"koly") == "qcow2"
    assert detect.sniff(b"QFI\xfb\0\0\0\1", b"") == "qcow"


def test_a_directory_is_named(tmp_path: Path) -> None:
    bundle = tmp_path / "win.hdd"
    bundle.mkdir()
    with pytest.raises(DiskError, match="is a directory.*hds"):
        images.probe(str(bundle))


# -- Parallels ---------------------------------------------------------------------


def _old_parallels(path: Path, data: bytes, tracks: int = 63) -> None:
    """A "WithoutFreeSpace" image of `data` (whole sectors), clusters of `tracks`
    sectors, data offset 0 (computed), BAT in sectors, empty clusters left out."""
    nb = len(data) // 512
    cluster = tracks * 512
    entries = -(-nb // tracks)
    data_start = -(-(64 + 4 * entries) // 512)
    bat, body = [], bytearray()
    for i in range(entries):
        chunk = data[i * cluster : (i + 1) * cluster]
        if chunk.count(0) == len(chunk):
            bat.append(0)
            continue
        bat.append(data_start + len(body) // 512)
        body += chunk.ljust(cluster, b"\0")
    head = struct.pack("<16sIIIIIQIIIQ", parallels.MAGIC, 2, 16, nb // (16 * tracks), tracks,
                       entries, nb, 0, 0, 0, 0)
    raw = head + struct.pack(f"<{entries}I", *bat)
    path.write_bytes(raw.ljust(data_start * 512, b"\0") + body)


@needs_qemu
def test_old_parallels_format_read_as_qemu_reads_it(tmp_path: Path) -> None:
    rnd = random.Random(7)
    data = bytearray(3 * MiB + 1536)
    for off in (0, 63 * 512 - 100, 2 * MiB + 7, len(data) - 512):
        data[off : off + 3000] = rnd.randbytes(len(data[off : off + 3000]))
    src = tmp_path / "old.hds"
    _old_parallels(src, bytes(data))
    ref = tmp_path / "ref.raw"
    ref.write_bytes(bytes(data))
    p = qemu_img("compare", "-f", "parallels", "-F", "raw", str(src), str(ref), check=False)
    assert p.returncode == 0, p.stdout + p.stderr  # the file is what qemu reads too
    info = images.probe(str(src))
    assert (info.format, info.variant, info.virtual_size, info.uuid) == (
        "parallels", "dynamic", len(data), None)
    with images.open_image(str(src)) as img:
        assert img.read_only
        assert img.pread(0, img.virtual_size) == bytes(data)
        assert img.pread(63 * 512 - 1, 2) == bytes(data[63 * 512 - 1 : 63 * 512 + 1])
        runs = list(img.extents())
        assert sum(r.length for r in runs) == len(data) and not runs[1].allocated
        with pytest.raises(DiskError, match="read-only"):
            img.pwrite(0, bytes(512))
    out = tmp_path / "out.qcow2"
    images.convert(str(src), str(out), "qcow2")
    assert qemu_img("compare", "-F", "qcow2", str(ref), str(out), check=False).returncode == 0


@pytest.fixture(scope="module")
def qemu_parallels(tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A Parallels image made by `qemu-img convert -O parallels`, and its raw source."""
    if not HAVE_QEMU:
        pytest.skip("qemu-img is not installed")
    tmp = tmp_path_factory.mktemp("parallels")
    raw = tmp / "src.raw"
    with open(raw, "wb") as f:
        f.truncate(13 * MiB + 4096)
    qemu_io(str(raw), "write -P 0x5a 0 4k", "write -P 0xa5 1020k 8k", "write -P 0x3c 7M 1500k",
            f"write -P 0x11 {13 * MiB} 4k", fmt="raw")
    hds = tmp / "disk.hds"
    qemu_img("convert", "-f", "raw", "-O", "parallels", str(raw), str(hds))
    return hds, raw


@needs_qemu
@pytest.mark.parametrize(("fmt", "variant"), [("qcow2", "dynamic"), ("raw", "dynamic"),
                                              ("vhdx", "dynamic")])
def test_qemu_parallels_converted_equal(qemu_parallels: tuple[Path, Path], fmt: str, variant: str,
                                        tmp_path: Path) -> None:
    hds, raw = qemu_parallels
    assert hds.read_bytes()[:16] == parallels.MAGIC_EXT
    info = images.probe(str(hds))
    assert info.format == "parallels" and info.virtual_size == raw.stat().st_size
    out = tmp_path / f"out.{fmt}"
    got = images.convert(str(hds), str(out), fmt, variant=variant)
    assert got.format == fmt
    q = images.FORMATS[fmt].qemu_name
    p = qemu_img("compare", "-f", "parallels", "-F", q, str(hds), str(out), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    if fmt != "raw":
        assert qemu_img("check", "-f", q, str(out), check=False).returncode == 0


@needs_qemu
def test_cli_converts_and_imports_parallels_and_refuses_qed(
        qemu_parallels: tuple[Path, Path], foreign: dict[str, Path], tmp_path: Path) -> None:
    hds, raw = qemu_parallels
    cli = Cli(tmp_path)
    out = tmp_path / "p.qcow2"
    cli.ok("disk", "convert", str(hds), str(out), "--format", "qcow2")
    assert qemu_img("compare", "-F", "qcow2", str(raw), str(out), check=False).returncode == 0
    m = cli.json("disk", "import", str(hds), "--name", "para")
    assert m["format"] == "parallels" and m["virtual_size"] == raw.stat().st_size
    qed = foreign["qed"]
    dst = tmp_path / "q.qcow2"
    err = cli.refused("disk", "convert", str(qed), str(dst), "--format", "qcow2")
    assert "is a QED image; netstore does not read QED" in err and not dst.exists()
    assert "QED" in cli.refused("disk", "import", str(qed))


def _patched(src: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(src.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


@needs_qemu
def test_damaged_parallels_named(qemu_parallels: tuple[Path, Path], tmp_path: Path) -> None:
    hds, _raw = qemu_parallels
    cases = [
        (16, "<I", 3, UnsupportedImageError, "version 3"),
        (44, "<I", parallels.IN_USE_OPEN, UnsupportedImageError, "not closed cleanly"),
        (44, "<I", 0x12345678, ImageFormatError, "in_use"),
        (28, "<I", 0, ImageFormatError, "cluster of 0 sectors"),
        (32, "<I", 1, ImageFormatError, "smaller than the disk"),
        (48, "<I", 3, ImageFormatError, "whole number of clusters"),
        (64, "<I", 0xFFFFFF, ImageFormatError, "past the end of the file"),
        (64, "<I", 0, None, None),  # cluster 0 dropped: reads as zeros, no error
    ]
    for i, (off, fmt, value, exc, words) in enumerate(cases):
        bad = _patched(hds, tmp_path / f"bad{i}.hds", off, fmt, value)
        if exc is None:
            with images.open_image(str(bad)) as img:
                assert img.pread(0, 4096) == bytes(4096)
            continue
        with pytest.raises(exc, match=words) as e:
            images.probe(str(bad))
        assert str(bad) in str(e.value)
    short = tmp_path / "short.hds"
    short.write_bytes(hds.read_bytes()[:40])
    with pytest.raises(ImageFormatError, match="short.hds"):
        images.probe(str(short))


@needs_qemu
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 4095), value=st.integers(0, 255))
def test_corrupt_parallels_header_only_disk_errors(qemu_parallels: tuple[Path, Path],
                                                   tmp_path: Path, pos: int, value: int) -> None:
    hds, _raw = qemu_parallels
    data = bytearray(hds.read_bytes()[: 2 * MiB])
    data[pos] = value
    bad = tmp_path / "h.hds"
    bad.write_bytes(bytes(data))
    try:
        with images.open_image(str(bad)) as img:
            for r in img.extents():
                if r.allocated:
                    img.pread(r.offset, min(r.length, 65536))
    except DiskError:
        pass
