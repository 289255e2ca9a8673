"""QEMU's iSCSI block driver (qemu-img, qemu-io) against a live netstore daemon."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.peers import need, run, write_pattern

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.netstore:qemu"
SIZE = 64 << 20


@pytest.fixture(scope="module")
def served(module_netstore_daemon):
    tmp: Path = module_netstore_daemon.tmp
    image = tmp / "qemu.img"
    write_pattern(image, SIZE, seed=64)
    d = module_netstore_daemon(
        f"""
[daemon]
state_dir = "{{state_dir}}"
log_level = "info"
[iscsi]
portals = ["127.0.0.1:{{port}}"]
[[iscsi.targets]]
iqn = "{IQN}"
luns = ["{image}"]
""",
        name="qemu",
    )
    d.image = image
    return d


def first_difference(a: bytes, b: bytes) -> str:
    if len(a) != len(b):
        return f"sizes differ: {len(a)} != {len(b)}"
    for off in range(0, len(a), 1 << 20):
        if a[off : off + (1 << 20)] != b[off : off + (1 << 20)]:
            chunk_a, chunk_b = a[off : off + (1 << 20)], b[off : off + (1 << 20)]
            i = next(i for i in range(len(chunk_a)) if chunk_a[i] != chunk_b[i])
            return f"first difference at byte {off + i} (LBA {(off + i) // 512})"
    return "equal"


def test_qemu_img_info(served):
    need("qemu-img")
    out = run(["qemu-img", "info", served.url(IQN)], timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"virtual size: 64 MiB ({SIZE} bytes)" in out.stdout, out.stdout


def test_convert_reads_the_image_byte_for_byte(served, tmp_path):
    need("qemu-img")
    out_file = tmp_path / "out.raw"
    out = run(["qemu-img", "convert", "-O", "raw", served.url(IQN), str(out_file)], timeout=120)
    assert out.returncode == 0, out.stderr
    got, want = out_file.read_bytes(), served.image.read_bytes()
    assert got == want, first_difference(got, want)


def test_convert_writes_an_image_back(served, tmp_path):
    need("qemu-img")
    src = tmp_path / "src.raw"
    data = bytearray(random.Random(7).randbytes(SIZE))
    # Some all-zero stretches: qemu-img convert skips or zero-writes them
    # (WRITE SAME / UNMAP or plain zero writes), and they must land as zeros.
    for off in (0, 5 << 20, (40 << 20) + 4096):
        data[off : off + (1 << 20)] = bytes(1 << 20)
    src.write_bytes(data)
    out = run(
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), served.url(IQN)],
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    got = served.image.read_bytes()
    assert got == bytes(data), first_difference(got, bytes(data))
    # And read back through the target as well.
    back = tmp_path / "back.raw"
    out = run(["qemu-img", "convert", "-O", "raw", served.url(IQN), str(back)], timeout=120)
    assert out.returncode == 0, out.stderr
    assert back.read_bytes() == bytes(data)


def test_qemu_io_write_then_read_pattern(served):
    need("qemu-io")
    w = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", served.url(IQN)], timeout=60)
    assert w.returncode == 0, w.stdout + w.stderr
    assert "wrote 65536/65536 bytes at offset 1048576" in w.stdout, w.stdout
    r = run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 64k", served.url(IQN)], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "read 65536/65536 bytes at offset 1048576" in r.stdout, r.stdout
    assert "Pattern verification failed" not in r.stdout + r.stderr
    with open(served.image, "rb") as f:
        f.seek(1 << 20)
        assert f.read(64 << 10) == b"\x5a" * (64 << 10)


def test_qemu_io_unaligned_and_large_requests(served):
    """Writes that are not a multiple of MaxBurstLength or FirstBurstLength, flush, FUA."""
    need("qemu-io")
    cmds = [
        "write -P 0x11 3M 1M",  # one 1 MiB request: R2T sequences
        "write -P 0x22 8M 4k",
        "write -P 0x33 9M 8M",  # 8 MiB: several bursts
        "write -f -P 0x44 20M 128k",  # FUA
        "flush",
        "read -P 0x11 3M 1M",
        "read -P 0x22 8M 4k",
        "read -P 0x33 9M 8M",
        "read -P 0x44 20M 128k",
    ]
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    out = run([*args, served.url(IQN)], timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Pattern verification failed" not in text, text
    assert text.count("wrote ") == 4 and text.count("read ") == 4, text
    with open(served.image, "rb") as f:
        for off, size, byte in (
            (3 << 20, 1 << 20, 0x11),
            (9 << 20, 8 << 20, 0x33),
            (20 << 20, 128 << 10, 0x44),
        ):
            f.seek(off)
            assert f.read(size) == bytes([byte]) * size, hex(off)


def test_qemu_io_aio_many_in_flight(served):
    """aio_write/aio_read keep many commands in flight on one session."""
    need("qemu-io")
    args = ["qemu-io", "-f", "raw"]
    for i in range(32):
        args += ["-c", f"aio_write -P {0x80 + i} {30 + i}M 64k"]
    args += ["-c", "aio_flush"]
    for i in range(32):
        args += ["-c", f"aio_read -P {0x80 + i} {30 + i}M 64k"]
    args += ["-c", "aio_flush"]
    out = run([*args, served.url(IQN)], timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Pattern verification failed" not in text and "error" not in text.lower(), text
    with open(served.image, "rb") as f:
        for i in range(32):
            f.seek((30 + i) << 20)
            assert f.read(64 << 10) == bytes([0x80 + i]) * (64 << 10), i


def test_read_beyond_end_fails_cleanly(served):
    need("qemu-io")
    out = run(["qemu-io", "-f", "raw", "-c", f"read {SIZE} 4k", served.url(IQN)], timeout=60)
    # qemu opens the LUN (its size known from READ CAPACITY) and refuses the
    # request beyond it itself, with EIO; the daemon stays up.
    assert (out.returncode, out.stdout, out.stderr) == (
        1, "read failed: Input/output error\n", ""), (out.returncode, out.stdout, out.stderr)
    assert served.alive
