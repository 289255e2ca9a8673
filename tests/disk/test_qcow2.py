"""qcow2 images against the real qemu-img/qemu-io: what netstore writes qemu
reads and checks clean, what qemu writes netstore reads, and damaged or
unsupported files are refused with a message naming file and problem."""

from __future__ import annotations

import hashlib
import os
import random
import struct

import pytest

from netstore.disk.api import DiskError, DiskImage, ImageFormatError, UnsupportedImageError
from netstore.disk.qcow2 import Qcow2Image, create_qcow2, probe_qcow2
from netstore.disk.raw import RawImage, create_raw
from tests.peers import (
    needs_qemu,
    qemu_check,
    qemu_img,
    qemu_info_chain,
    qemu_io,
    qemu_read_raw,
)

pytestmark = needs_qemu
MiB = 1 << 20


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def random_writes(img, model: bytearray, count: int, seed: int, max_len: int = 200_000) -> None:
    rng = random.Random(seed)
    size = len(model)
    for _ in range(count):
        off = rng.randrange(size)
        n = min(rng.randrange(1, max_len), size - off)
        data = rng.randbytes(n)
        img.pwrite(off, data)
        model[off : off + n] = data


# ---- created by netstore, checked by qemu ---------------------------------


def test_create_header_seen_by_qemu(tmp_path):
    p = str(tmp_path / "a.qcow2")
    create_qcow2(p, 10 * MiB + 512)
    info = qemu_check(p)
    assert info["check-errors"] == 0
    (top,) = qemu_info_chain(p)
    assert top["format"] == "qcow2"
    assert top["virtual-size"] == 10 * MiB + 512
    assert top["cluster-size"] == 65536
    data = top["format-specific"]["data"]
    assert data["compat"] == "1.1" and data["refcount-bits"] == 16
    assert data["lazy-refcounts"] is False
    with open(p, "rb") as f:
        head = f.read(112)
    assert head[:4] == b"QFI\xfb"
    assert struct.unpack(">I", head[4:8])[0] == 3
    assert struct.unpack(">QQQII", head[72:104]) == (0, 0, 0, 4, 112)
    with Qcow2Image(p) as img:
        assert isinstance(img, DiskImage)
        assert img.pread(0, 4096) == bytes(4096)
        assert img.num_blocks == (10 * MiB + 512) // 512


def test_refuses_existing_file(tmp_path):
    p = tmp_path / "a.qcow2"
    p.write_bytes(b"precious")
    with pytest.raises(DiskError, match="a.qcow2"):
        create_qcow2(str(p), MiB)
    assert p.read_bytes() == b"precious"


@pytest.mark.parametrize("cluster_size", [512, 4096, 65536, 2 * MiB])
def test_writes_read_back_by_qemu(tmp_path, cluster_size):
    p = str(tmp_path / "a.qcow2")
    size = 7 * MiB + 1536
    create_qcow2(p, size, cluster_size=cluster_size)
    model = bytearray(size)
    with Qcow2Image(p) as img:
        random_writes(img, model, 60, seed=cluster_size)
        img.pwrite(size - 700, b"e" * 700)  # the partial last cluster
        model[size - 700 :] = b"e" * 700
        assert img.pread(0, size) == model
        img.flush()
    qemu_check(p)
    assert qemu_read_raw(p, str(tmp_path)) == model
    with Qcow2Image(p, read_only=True) as img:
        assert img.pread(0, size) == model


def test_backing_chain_written_by_netstore(tmp_path):
    base = str(tmp_path / "base.raw")
    create_raw(base, 4 * MiB)
    model = bytearray(4 * MiB)
    with RawImage(base) as r:
        random_writes(r, model, 10, seed=1)
    base_sum = sha(base)
    create_qcow2(str(tmp_path / "mid.qcow2"), None, backing="base.raw", cluster_size=4096)
    create_qcow2(str(tmp_path / "top.qcow2"), None, backing="mid.qcow2", cluster_size=512)
    with Qcow2Image(str(tmp_path / "mid.qcow2")) as mid:
        random_writes(mid, model, 30, seed=2, max_len=20_000)
    with Qcow2Image(str(tmp_path / "top.qcow2")) as top:
        random_writes(top, model, 30, seed=3, max_len=20_000)
        assert top.pread(0, 4 * MiB) == model
    assert sha(base) == base_sum
    for name in ("mid.qcow2", "top.qcow2"):
        qemu_check(str(tmp_path / name))
    chain = qemu_info_chain(str(tmp_path / "top.qcow2"))
    assert [c["filename"].rsplit("/", 1)[-1] for c in chain] == [
        "top.qcow2",
        "mid.qcow2",
        "base.raw",
    ]
    assert chain[0]["backing-filename"] == "mid.qcow2"
    assert chain[0]["backing-filename-format"] == "qcow2"
    assert chain[1]["backing-filename-format"] == "raw"
    assert qemu_read_raw(str(tmp_path / "top.qcow2"), str(tmp_path)) == model


def test_backing_smaller_than_image_reads_zeros_past_it(tmp_path):
    base = str(tmp_path / "b.raw")
    create_raw(base, MiB)
    with RawImage(base) as r:
        r.pwrite(0, b"\x55" * MiB)
    top = str(tmp_path / "t.qcow2")
    create_qcow2(top, 3 * MiB, backing=base)
    with Qcow2Image(top) as img:
        assert img.pread(MiB - 4, 8) == b"\x55" * 4 + bytes(4)
        img.pwrite(MiB - 2, b"ab")  # COW of a cluster half past the backing's end
        assert img.pread(MiB - 4, 8) == b"\x55\x55ab" + bytes(4)
        exts = list(img.extents())
        assert exts[0].allocated and exts[0].offset == 0
        assert sum(e.length for e in exts) == 3 * MiB
    qemu_check(top)


def test_fixed_preallocates_with_progress(tmp_path):
    p = str(tmp_path / "f.qcow2")
    seen = []
    create_qcow2(
        p, 5 * MiB, cluster_size=4096, fixed=True, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1][0] == seen[-1][1] >= 5 * MiB
    assert os.stat(p).st_blocks * 512 >= 5 * MiB
    qemu_check(p)
    assert probe_qcow2(p).variant == "fixed"
    end_before = os.path.getsize(p)
    model = bytearray(5 * MiB)
    with Qcow2Image(p) as img:
        random_writes(img, model, 20, seed=5)
    assert os.path.getsize(p) == end_before  # every write went in place
    qemu_check(p)
    assert qemu_read_raw(p, str(tmp_path)) == model


def test_refcount_table_grows(tmp_path):
    # 512-byte clusters: one refcount block covers 256 clusters, the first
    # table 64 blocks = 8 MiB of file; write more than that.
    p = str(tmp_path / "g.qcow2")
    size = 12 * MiB
    create_qcow2(p, size, cluster_size=512)
    before = probe_header(p)
    model = bytearray(size)
    with Qcow2Image(p) as img:
        chunk = 256 * 1024
        rng = random.Random(9)
        for off in range(0, size, chunk):
            d = rng.randbytes(chunk)
            img.pwrite(off, d)
            model[off : off + chunk] = d
        assert img.pread(0, size) == model
    after = probe_header(p)
    assert after[0] != before[0] and after[1] > before[1]  # moved and larger
    info = qemu_check(p)
    assert info.get("leaks", 0) == 0
    assert qemu_read_raw(p, str(tmp_path)) == model


def probe_header(p) -> tuple[int, int]:
    with open(p, "rb") as f:
        head = f.read(72)
    return struct.unpack(">QI", head[48:60])


def test_resize_grows_l1(tmp_path):
    p = str(tmp_path / "r.qcow2")
    create_qcow2(p, MiB, cluster_size=512)
    with Qcow2Image(p) as img:
        img.pwrite(1000, b"keep me")
        img.resize(40 * MiB)  # 1280 L1 entries: the L1 table moves
        assert img.virtual_size == 40 * MiB
        img.pwrite(39 * MiB, b"far")
        with pytest.raises(DiskError, match="shrink"):
            img.resize(MiB)
    qemu_check(p)
    (info,) = qemu_info_chain(p)
    assert info["virtual-size"] == 40 * MiB
    with Qcow2Image(p, read_only=True) as img:
        assert img.pread(1000, 7) == b"keep me"
        assert img.pread(39 * MiB, 3) == b"far"
    qemu_io(p, "read -P 0x66 39M 1", fmt="qcow2", read_only=True)


def test_discard_with_and_without_backing(tmp_path):
    base = str(tmp_path / "b.raw")
    create_raw(base, MiB)
    with RawImage(base) as r:
        r.pwrite(0, b"\x77" * MiB)
    top = str(tmp_path / "t.qcow2")
    create_qcow2(top, None, backing="b.raw", cluster_size=4096)
    with Qcow2Image(top) as img:
        img.pwrite(0, b"\x01" * 65536)
        img.discard(4096, 8192)  # written clusters: zero flag
        img.discard(100_000, 12288)  # parent's clusters: zero flag hides them
        assert img.pread(4096, 8192) == bytes(8192)
        assert img.pread(0, 4096) == b"\x01" * 4096
        assert img.pread(102_400, 8192) == bytes(8192)
        assert img.pread(100_000, 2400) == b"\x77" * 2400  # partial cluster kept
    qemu_check(top)
    qemu_io(top, "read -P 0 4k 8k", "read -P 0x77 98304 4096", fmt="qcow2", read_only=True)

    solo = str(tmp_path / "s.qcow2")
    create_qcow2(solo, MiB, cluster_size=4096)
    with Qcow2Image(solo) as img:
        img.pwrite(0, b"\x02" * 65536)
        end1 = os.path.getsize(solo)
        img.discard(0, 32768)
        img.flush()
        img.pwrite(512 * 1024, b"\x03" * 4096)  # reuses a freed cluster
        assert os.path.getsize(solo) == end1
        assert img.pread(0, 32768) == bytes(32768)
    info = qemu_check(solo)
    assert info.get("leaks", 0) == 0
    qemu_io(solo, "read -P 0x3 512k 4k", "read -P 0 0 32k", fmt="qcow2", read_only=True)


# ---- created by qemu, read by netstore ------------------------------------


def test_reads_what_qemu_wrote_on_raw_backing(tmp_path):
    base = str(tmp_path / "base.raw")
    qemu_img("create", "-f", "raw", base, "4M")
    qemu_io(base, "write -P 0x11 0 4M", fmt="raw")
    top = str(tmp_path / "top.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
    qemu_io(
        top,
        "write -P 0x22 100k 300k",
        "write -z 1M 128k",  # zero flag over the parent
        "write -P 0x33 3M 5",
        "discard 2M 64k",
        fmt="qcow2",
    )
    expect = qemu_read_raw(top, str(tmp_path))
    with Qcow2Image(top, read_only=True) as img:
        assert img.header.backing_format == "raw"
        assert img.pread(0, 4 * MiB) == expect
        assert img.pread(1 * MiB, 4096) == bytes(4096)
        for off in range(0, 4 * MiB, 65536 - 512):  # reads across cluster boundaries
            n = min(70_000, 4 * MiB - off)
            assert img.pread(off, n) == expect[off : off + n]


def test_writes_to_qemu_zero_clusters(tmp_path):
    p = str(tmp_path / "z.qcow2")
    qemu_img("create", "-f", "qcow2", p, "1M")
    # zero with a preallocated host cluster, zero without one
    qemu_io(p, "write -P 1 0 1M", "write -z 0 64k", "write -z -u 64k 64k", fmt="qcow2")
    model = bytearray(b"\x01" * MiB)
    model[:131072] = bytes(131072)
    with Qcow2Image(p) as img:
        assert img.pread(0, MiB) == model
        img.pwrite(60_000, b"x" * 10_000)
        model[60_000:70_000] = b"x" * 10_000
        assert img.pread(0, MiB) == model
    qemu_check(p)
    assert qemu_read_raw(p, str(tmp_path)) == model


def test_reads_and_rewrites_compressed(tmp_path):
    src = str(tmp_path / "src.raw")
    rng = random.Random(4)
    model = bytearray()
    for i in range(64):  # compressible and incompressible clusters
        model += bytes([i]) * 32768 + rng.randbytes(32768) if i % 3 else bytes([i]) * 65536
    with open(src, "wb") as f:
        f.write(model)
    c = str(tmp_path / "c.qcow2")
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", src, c)
    with Qcow2Image(c) as img:
        assert img.pread(0, len(model)) == model
        assert img.pread(65536 * 5 + 1000, 70_000) == model[65536 * 5 + 1000 : 65536 * 5 + 71_000]
        img.pwrite(65536 * 7 + 3, b"COW")  # partial write into a compressed cluster
        model[65536 * 7 + 3 : 65536 * 7 + 6] = b"COW"
        img.pwrite(0, b"\xee" * 65536 * 2)
        model[: 65536 * 2] = b"\xee" * 65536 * 2
        assert img.pread(0, len(model)) == model
    assert qemu_check(c).get("leaks", 0) == 0  # compressed clusters' refcounts dropped right
    assert qemu_read_raw(c, str(tmp_path)) == model


def test_reads_v2_and_qcow2_backing_made_by_qemu(tmp_path):
    b = str(tmp_path / "b.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", b, "2M")
    qemu_io(b, "write -P 0x44 0 1M", fmt="qcow2")
    t = str(tmp_path / "t.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", b, "-F", "qcow2", t)
    qemu_io(t, "write -P 0x55 512k 4k", fmt="qcow2")
    with Qcow2Image(t) as img:
        assert img.pread(0, 2 * MiB) == qemu_read_raw(t, str(tmp_path))
        img.pwrite(1 * MiB, b"z" * 10)
    qemu_check(t)
    qemu_io(t, "read -P 0x7a 1M 10", "read -P 0x44 0 4k", fmt="qcow2", read_only=True)


# ---- unsupported and damaged ----------------------------------------------


@pytest.mark.parametrize(
    "opts, feature",
    [
        (["-o", "extended_l2=on"], "extended L2"),
        (["-o", "data_file=data.raw"], "external data file"),
        (
            [
                "--object",
                "secret,id=s0,data=pw",
                "-o",
                "encrypt.format=luks,encrypt.key-secret=s0",
            ],
            "LUKS",
        ),
    ],
)
def test_unsupported_features_named(tmp_path, opts, feature):
    p = str(tmp_path / "u.qcow2")
    # qemu-img resolves a relative data_file against its working directory
    opts = [o.replace("data_file=", f"data_file={tmp_path}/") for o in opts]
    made = qemu_img("create", "-f", "qcow2", *opts, p, "1M", check=False)
    if made.returncode and "accurate CPU usage" in made.stderr:
        # qemu-img times its LUKS PBKDF by thread CPU time, which a fast
        # machine with tick accounting can read as 0 ms: set the header's
        # crypt_method (2, LUKS) of a plain image as qemu-img would have
        qemu_img("create", "-f", "qcow2", p, "1M")
        with open(p, "r+b") as f:
            f.seek(32)
            f.write(struct.pack(">I", 2))
    elif made.returncode:
        pytest.fail(f"qemu-img create exited {made.returncode}: {made.stderr}")
    for ro in (True, False):
        with pytest.raises(UnsupportedImageError, match=feature) as ei:
            Qcow2Image(p, read_only=ro)
        assert "u.qcow2" in str(ei.value)


def set_incompatible(p: str, bits: int) -> None:
    with open(p, "r+b") as f:
        f.seek(72)
        f.write(struct.pack(">Q", bits))


def test_unknown_incompatible_bit_refused(tmp_path):
    p = str(tmp_path / "u.qcow2")
    create_qcow2(p, MiB)
    set_incompatible(p, 1 << 40)
    with pytest.raises(UnsupportedImageError, match="bit 40"):
        Qcow2Image(p, read_only=True)


def test_dirty_image_read_only_only(tmp_path):
    p = str(tmp_path / "d.qcow2")
    create_qcow2(p, MiB)
    set_incompatible(p, 1)
    with Qcow2Image(p, read_only=True) as img:
        assert img.pread(0, 512) == bytes(512)
    before = sha(p)
    with pytest.raises(DiskError, match="qemu-img check -r all"):
        Qcow2Image(p)
    assert sha(p) == before


def test_backing_loop_refused(tmp_path):
    a, b = str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")
    create_qcow2(a, MiB)
    create_qcow2(b, None, backing="a.qcow2")
    qemu_img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a)
    with pytest.raises(ImageFormatError, match="loop"):
        Qcow2Image(b, read_only=True)


def test_missing_backing_named(tmp_path):
    p = str(tmp_path / "t.qcow2")
    create_raw(str(tmp_path / "gone.raw"), MiB)
    create_qcow2(p, None, backing="gone.raw")
    os.unlink(tmp_path / "gone.raw")
    with pytest.raises(DiskError, match="gone.raw"):
        Qcow2Image(p, read_only=True)


def damaged(tmp_path, patch) -> str:
    p = str(tmp_path / "bad.qcow2")
    create_qcow2(p, 4 * MiB, cluster_size=4096)
    with Qcow2Image(p) as img:
        img.pwrite(0, b"data" * 1024)
    with open(p, "r+b") as f:
        patch(f)
    return p


def _truncate(n):
    return lambda f: f.truncate(n)


def _at(off, data):
    def patch(f):
        f.seek(off)
        f.write(data)

    return patch


def _l2_entry_past_eof(f):
    head = f.read(72)
    l1_off = struct.unpack(">Q", head[40:48])[0]
    f.seek(l1_off)
    l2_off = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
    f.seek(l2_off)
    f.write(struct.pack(">Q", (1 << 63) | (1 << 40)))


@pytest.mark.parametrize(
    "patch, problem",
    [
        (_truncate(50), "too short"),
        (_truncate(90), "too short"),
        (_at(0, b"QFI\xfa"), "magic"),
        (_at(20, struct.pack(">I", 40)), "cluster_bits"),
        (_at(40, struct.pack(">Q", 1 << 40)), "L1 table"),
        (_at(36, struct.pack(">I", 0)), "L1 table has 0 entries"),
        (_at(48, struct.pack(">Q", 1 << 40)), "refcount table"),
        (_at(48, struct.pack(">Q", 4097)), "refcount table"),
        (_at(56, struct.pack(">I", 1 << 30)), "refcount table"),
        (_at(100, struct.pack(">I", 13)), "header_length"),
        (_at(112, struct.pack(">II", 0x1234, 1 << 20)), "extension"),
        (_at(8, struct.pack(">QI", 4000, 5000)), "backing file name"),
        (_at(8, struct.pack(">QI", 4000, 1000)), "backing file name"),
    ],
)
def test_damaged_header_refused(tmp_path, patch, problem):
    p = damaged(tmp_path, patch)
    before = sha(p)
    for ro in (True, False):
        with pytest.raises(ImageFormatError, match=problem) as ei:
            Qcow2Image(p, read_only=ro)
        assert "bad.qcow2" in str(ei.value)
    assert sha(p) == before


def test_l1_and_l2_entries_past_eof(tmp_path):
    def l1_past(f):
        head = f.read(72)
        l1_off = struct.unpack(">Q", head[40:48])[0]
        f.seek(l1_off)
        f.write(struct.pack(">Q", (1 << 63) | (1 << 40)))

    p = damaged(tmp_path, l1_past)
    with pytest.raises(ImageFormatError, match="L1 entry 0"):
        Qcow2Image(p, read_only=True)
    os.unlink(p)
    p = damaged(tmp_path, _l2_entry_past_eof)
    before = sha(p)
    with Qcow2Image(p) as img:
        with pytest.raises(ImageFormatError, match="bad.qcow2.*past the end"):
            img.pread(0, 4096)
        with pytest.raises(ImageFormatError):
            img.pread(0, 9000)
    assert sha(p) == before


def test_not_qcow2_at_all(tmp_path):
    p = tmp_path / "x.qcow2"
    p.write_bytes(b"\0" * 1000)
    with pytest.raises(ImageFormatError, match="x.qcow2.*magic"):
        Qcow2Image(str(p))
    with pytest.raises(ImageFormatError):
        probe_qcow2(str(p))
