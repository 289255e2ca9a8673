# tests/disk/test_formats_malformed.py - damaged and hostile foreign images:
# each named defect gives ImageFormatError/UnsupportedImageError naming the
# file and the problem; random bytes and random corruptions of valid headers
# never raise anything but DiskError subclasses.
"""Malformed VDI/VMDK/VHD/VHDX/Parallels input."""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk import images
from netstore.disk.api import DiskError, ImageFormatError, UnsupportedImageError
from netstore.disk.formats.vhdx import crc32c_with_zeroed
from tests.peers import HAVE_QEMU, qemu_img, qemu_io

MiB = 1 << 20


def _netstore_image(tmp: Path, fmt: str, variant: str) -> Path:
    src = tmp / f"src-{fmt}-{variant}.raw"
    with open(src, "wb") as f:
        f.truncate(3 * MiB + 512)
        f.seek(MiB + 4096)
        f.write(b"\xab" * 70000)
    out = tmp / f"{fmt}-{variant}.img"
    images.convert(str(src), str(out), fmt, variant=variant)
    return out


@pytest.fixture(scope="module")
def valid_images(tmp_path_factory) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("valid")
    found = {
        "vdi": _netstore_image(tmp, "vdi", "dynamic"),
        "vdi-fixed": _netstore_image(tmp, "vdi", "fixed"),
        "vhd": _netstore_image(tmp, "vhd", "dynamic"),
        "vhd-fixed": _netstore_image(tmp, "vhd", "fixed"),
        "vmdk-stream": _netstore_image(tmp, "vmdk", "streamOptimized"),
        "vmdk-sparse-netstore": _netstore_image(tmp, "vmdk", "monolithicSparse"),
        "vhdx-netstore": _netstore_image(tmp, "vhdx", "dynamic"),
    }
    if HAVE_QEMU:
        for name, fmt, opts in (("vmdk-sparse", "vmdk", "subformat=monolithicSparse"),
                                ("vhdx", "vhdx", "block_size=1M,log_size=1M"),
                                ("parallels", "parallels", "cluster_size=64k")):
            p = tmp / f"{name}.img"
            qemu_img("create", "-f", fmt, "-o", opts, str(p), str(3 * MiB))
            qemu_io(str(p), "write -P 0xcd 1M 64k", fmt=fmt)
            found[name] = p
    return {k: v.read_bytes() for k, v in found.items()}


def _exercise(path: Path) -> None:
    """Everything a user does with an image: probe, open, map, read."""
    try:
        images.probe(str(path))
        with images.open_image(str(path), read_only=True) as img:
            for n, _e in enumerate(img.extents()):
                if n > 10000:
                    break
            size = img.virtual_size
            if size:
                img.pread(0, min(size, MiB))
                img.pread(max(0, size - 4096), min(size, 4096))
    except DiskError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([b"", b"KDMV", b"conectix", b"vhdxfile", b"# Disk DescriptorFile\n", b"QFI\xfb"]),
       body=st.binary(max_size=4096))
def test_random_bytes_only_raise_disk_errors(tmp_path: Path, head: bytes, body: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(head + body)
    _exercise(path)
    # a VDI signature in the right place
    vdi = bytearray(body.ljust(0x200, b"\0"))
    vdi[0x40:0x44] = struct.pack("<I", 0xBEDA107F)
    path.write_bytes(bytes(vdi))
    _exercise(path)
    # a VHD footer at the end
    path.write_bytes(body + b"conectix" + body[:504].ljust(504, b"\0"))
    _exercise(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_headers_only_raise_disk_errors(tmp_path: Path, valid_images: dict[str, bytes], data) -> None:  # type: ignore[no-untyped-def]
    name = data.draw(st.sampled_from(sorted(valid_images)))
    raw = bytearray(valid_images[name])
    # the structures live in the first 320 KiB (VHDX headers/regions), the
    # first sectors (VDI, VMDK, VHD copy) and the last 1.5 KiB (VHD footer,
    # VMDK footer)
    zones = [(0, min(len(raw), 2048)), (max(0, len(raw) - 1536), len(raw))]
    if name.startswith("vhdx"):
        zones.append((0, min(len(raw), 320 * 1024)))
        zones.append((min(len(raw), 1 * MiB), min(len(raw), 4 * MiB)))  # metadata, BAT
    for _ in range(data.draw(st.integers(1, 8))):
        lo, hi = data.draw(st.sampled_from(zones))
        if hi <= lo:
            continue
        at = data.draw(st.integers(lo, hi - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        raw[at : at + len(chunk)] = chunk
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "bad.img"
    path.write_bytes(bytes(raw))
    _exercise(path)


# -- named defects


def _vdi(tmp: Path) -> tuple[Path, bytearray]:
    src = tmp / "s.raw"
    src.write_bytes(b"\x07" * (2 * MiB))
    p = tmp / "d.vdi"
    images.convert(str(src), str(p), "vdi")
    return p, bytearray(p.read_bytes())


def test_vdi_truncated_header(tmp_path: Path) -> None:
    p, raw = _vdi(tmp_path)
    p.write_bytes(bytes(raw[:300]))
    with pytest.raises(ImageFormatError, match=r"d\.vdi: VDI header .* past the end"):
        images.probe(str(p))


def test_vdi_block_map_past_eof(tmp_path: Path) -> None:
    p, raw = _vdi(tmp_path)
    off_bmap = struct.unpack_from("<I", raw, 0x154)[0]
    struct.pack_into("<I", raw, off_bmap + 4, 1)  # block 1 -> data block 1: moved ...
    p.write_bytes(bytes(raw[: len(raw) - MiB]))  # ... and the file cut short
    with pytest.raises(ImageFormatError, match=r"d\.vdi: block map entry 1 points past the end"):
        images.probe(str(p))


def test_vdi_lying_disk_size(tmp_path: Path) -> None:
    p, raw = _vdi(tmp_path)
    struct.pack_into("<Q", raw, 0x170, 100 * MiB)  # 2 blocks cannot hold 100 MiB
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match=r"d\.vdi: VDI header says 2 blocks"):
        images.probe(str(p))


def test_vhd_bad_checksum(tmp_path: Path) -> None:
    p = tmp_path / "f.vhd"
    images.create_image(str(p), "vhd", MiB, variant="fixed")
    raw = bytearray(p.read_bytes())
    raw[-512 + 40] ^= 0xFF  # original size, not covered by anything but the checksum
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match=r"f\.vhd: VHD footer checksum .* is wrong"):
        images.open_image(str(p))


def test_vhd_bat_past_eof(tmp_path: Path) -> None:
    p = tmp_path / "d.vhd"
    src = tmp_path / "s.raw"
    src.write_bytes(b"\x09" * MiB)
    images.convert(str(src), str(p), "vhd")
    raw = bytearray(p.read_bytes())
    bat = struct.unpack_from(">Q", raw, 512 + 16)[0]
    struct.pack_into(">I", raw, bat, 0x7FFFFFF0)
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match=r"d\.vhd: BAT entry 0 points past the end"):
        images.probe(str(p))


def test_vmdk_unknown_create_type(tmp_path: Path) -> None:
    p = tmp_path / "x.vmdk"
    p.write_text('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfsRawDeviceMap"\n'
                 'RW 2048 VMFSRDM "x-rdm.vmdk"\n')
    with pytest.raises(UnsupportedImageError, match=r"x\.vmdk: VMDK create type 'vmfsRawDeviceMap'"):
        images.probe(str(p))


def test_vmdk_flat_extent_too_short(tmp_path: Path) -> None:
    p = tmp_path / "y.vmdk"
    (tmp_path / "y-flat.vmdk").write_bytes(bytes(4096))
    p.write_text('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
                 'RW 2048 FLAT "y-flat.vmdk" 0\n')
    with pytest.raises(ImageFormatError, match=r"y\.vmdk: flat extent .* holds 4096 bytes"):
        images.probe(str(p))


def test_vmdk_stream_footer_missing(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes(b"\x05" * MiB)
    p = tmp_path / "s.vmdk"
    images.convert(str(src), str(p), "vmdk")
    raw = p.read_bytes()
    p.write_bytes(raw[:-1536] + bytes(1536))  # the footer and its marker wiped
    with pytest.raises(ImageFormatError, match=r"s\.vmdk: .*footer"):
        images.probe(str(p))


@pytest.mark.skipif(not HAVE_QEMU, reason="qemu-img/qemu-io not installed")
def test_vhdx_with_log_entries_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "l.vhdx"
    qemu_img("create", "-f", "vhdx", "-o", "log_size=1M", str(p), str(4 * MiB))
    raw = bytearray(p.read_bytes())
    log_guid = uuidlib.uuid4().bytes_le
    for hoff in (64 * 1024, 128 * 1024):
        struct.pack_into("<16s", raw, hoff + 48, log_guid)
        struct.pack_into("<I", raw, hoff + 4, 0)
        struct.pack_into("<I", raw, hoff + 4, crc32c_with_zeroed(bytes(raw[hoff : hoff + 4096]), 4))
    log_off = struct.unpack_from("<Q", raw, 64 * 1024 + 72)[0]
    # one log entry header (signature, checksum, length, tail, sequence, descriptors, reserved, guid)
    struct.pack_into("<4sIIIQII16s", raw, log_off, b"loge", 0, 4096, 0, 1, 0, 0, log_guid)
    p.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedImageError, match=r"l\.vhdx: the VHDX log holds entries"):
        images.probe(str(p))
    # a log GUID with no entry carrying it: the log is empty, the image opens
    struct.pack_into("<4s", raw, log_off, b"xxxx")
    p.write_bytes(bytes(raw))
    assert images.probe(str(p)).format == "vhdx"


@pytest.mark.skipif(not HAVE_QEMU, reason="qemu-img/qemu-io not installed")
def test_vhdx_bad_header_checksums(tmp_path: Path) -> None:
    p = tmp_path / "h.vhdx"
    qemu_img("create", "-f", "vhdx", str(p), str(4 * MiB))
    raw = bytearray(p.read_bytes())
    raw[64 * 1024 + 100] ^= 1
    raw[128 * 1024 + 100] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match=r"h\.vhdx: no valid VHDX header .*checksum"):
        images.probe(str(p))


def test_missing_file_is_a_disk_error(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="cannot open"):
        images.probe(str(tmp_path / "none.vdi"))
    assert not os.path.exists(tmp_path / "none.vdi")
