"""A chain of three qcow2 layers, each written through iSCSI by a real daemon (issue 3).

base.qcow2 (netstore's create_qcow2) is served and written with pattern A;
after a stop, layers.freeze puts mid.qcow2 on top, which is served and
written with B over part of A; then top.qcow2 gets C the same way.  qemu
must then find every layer clean (`qemu-img check`), see the chain
(`qemu-img info --backing-chain`), and read from top.qcow2 exactly what the
initiator wrote (a model of A+B+C kept here); so must an iSCSI read, both
with the hand-written initiator and with qemu's own iSCSI driver.  Finally
merge_into_parent(top) folds C into mid, and all of it holds again.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from netstore.disk import layers
from netstore.disk.qcow2 import create_qcow2
from tests.e2e.rawiscsi import Conn

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) missing"),
]

IQN = "iqn.2026-11.org.netstore:layers"
INITIATOR = "iqn.2026-11.org.test:layers"
MiB = 1 << 20
KiB = 1024
SIZE = 16 * MiB
BS = 512


def qimg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-img", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def check_clean(path: Path) -> dict:
    """`qemu-img check --output=json` of one file: no corruptions, no check errors, no leaks."""
    p = qimg("check", "--output=json", str(path))
    assert p.stdout, f"qemu-img check {path}: {p.stderr}"
    rep = json.loads(p.stdout)
    assert rep.get("corruptions", 0) == 0, rep
    assert rep.get("check-errors", 0) == 0, rep
    # written by one clean daemon run each: nothing may leak either
    assert rep.get("leaks", 0) == 0, rep
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return rep


def qemu_raw(path: Path, out: Path) -> bytes:
    if out.exists():
        out.unlink()
    p = qimg("convert", "-O", "raw", str(path), str(out))
    assert p.returncode == 0, p.stderr
    return out.read_bytes()


def config(path: Path) -> str:
    return f'[[iscsi.targets]]\niqn = "{IQN}"\nluns = ["{path}"]\n'


def login(port: int) -> Conn:
    c = Conn.connect(port)
    c.login(IQN, initiator=INITIATOR)
    for _ in range(5):  # the power-on unit attention, then GOOD
        status, _ = c.command(bytes(6))
        if status == 0:
            return c
    raise AssertionError("TEST UNIT READY never returned GOOD")


def iscsi_write(c: Conn, offset: int, data: bytes) -> None:
    assert offset % BS == 0 and len(data) % BS == 0
    cdb = struct.pack(">BBIBHB", 0x2A, 0, offset // BS, 0, len(data) // BS, 0)
    status, _ = c.command(cdb, write=data)
    assert status == 0, f"WRITE(10) at {offset} of {len(data)} bytes: status {status:#x}"


def iscsi_read_all(c: Conn, size: int) -> bytes:
    out = bytearray()
    step = 256 * KiB
    for off in range(0, size, step):
        n = min(step, size - off)
        cdb = struct.pack(">BBIBHB", 0x28, 0, off // BS, 0, n // BS, 0)
        status, data = c.command(cdb, read=n)
        assert status == 0 and len(data) == n, (off, status, len(data))
        out += data
    return bytes(out)


def sync_cache(c: Conn) -> None:
    status, _ = c.command(bytes([0x35]) + bytes(9))
    assert status == 0


def write_pattern(
    daemon_factory, path: Path, name: str, model: bytearray, writes: list[tuple[int, bytes]]
) -> None:
    """Serve `path`, write `writes` through iSCSI (model updated), read back, stop."""
    d = daemon_factory(config(path), name=name)
    c = login(d.port)
    try:
        for off, data in writes:
            iscsi_write(c, off, data)
            model[off : off + len(data)] = data
        sync_cache(c)
        assert iscsi_read_all(c, SIZE) == model, f"{name}: read back differs from what was written"
        c.logout()
    finally:
        c.close()
    assert d.stop() == 0, d.stderr()


def pattern(seed: int, spans: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    return [(off, rng.randbytes(n)) for off, n in spans]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_iscsi_read(port: int, out: Path) -> bytes:
    """The whole LUN as qemu's own iSCSI driver reads it."""
    if out.exists():
        out.unlink()
    url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
    p = qimg("convert", "-f", "raw", "-O", "raw", url, str(out), timeout=120)
    assert p.returncode == 0, p.stderr
    return out.read_bytes()


def test_three_layer_chain_written_over_iscsi(netstore_daemon, tmp_path):
    d = tmp_path / "chain"
    d.mkdir()
    base, mid, top = d / "base.qcow2", d / "mid.qcow2", d / "top.qcow2"
    create_qcow2(str(base), SIZE)
    model = bytearray(SIZE)

    # A: most of the first 12 MiB, in 256 KiB pieces, a hole at 5..6 MiB.
    a = [(off, 256 * KiB) for off in range(0, 12 * MiB, 256 * KiB) if not 5 * MiB <= off < 6 * MiB]
    write_pattern(netstore_daemon, base, "serve-base", model, pattern(1, a))
    check_clean(base)
    base_sum = sha(base)

    # B over part of A, not cluster aligned (copy-on-write of partial clusters), and
    # into the hole and past A.
    layers.freeze(str(base), str(mid))
    b = [
        (1 * MiB + 4 * KiB, 8 * KiB),
        (2 * MiB - 512, 70 * KiB),
        (4 * MiB + 60 * KiB, 200 * KiB),
        (5 * MiB + 32 * KiB, 64 * KiB),
        (13 * MiB, 256 * KiB),
        (SIZE - 4 * KiB, 4 * KiB),
    ]
    write_pattern(netstore_daemon, mid, "serve-mid", model, pattern(2, b))
    assert sha(base) == base_sum

    # C over parts of A and B.
    layers.freeze(str(mid), str(top))
    c = [
        (1 * MiB, 16 * KiB),
        (2 * MiB + 4 * KiB, 4 * KiB),
        (4 * MiB + 100 * KiB, 300 * KiB),
        (7 * MiB + 512, 1024),
        (13 * MiB + 128 * KiB, 192 * KiB),
        (0, 512),
    ]
    write_pattern(netstore_daemon, top, "serve-top", model, pattern(3, c))
    mid_sum = sha(mid)
    assert sha(base) == base_sum

    for p in (base, mid, top):
        check_clean(p)
    info = qimg("info", "--backing-chain", "--output=json", str(top))
    assert info.returncode == 0, info.stderr
    chain = json.loads(info.stdout)
    assert [Path(x["filename"]).name for x in chain] == ["top.qcow2", "mid.qcow2", "base.qcow2"]
    assert [x["format"] for x in chain] == ["qcow2"] * 3
    assert chain[0]["backing-filename-format"] == "qcow2"
    assert chain[1]["backing-filename-format"] == "qcow2"
    assert Path(chain[0]["full-backing-filename"]).resolve() == mid.resolve()
    assert Path(chain[1]["full-backing-filename"]).resolve() == base.resolve()
    assert "backing-filename" not in chain[2]
    assert all(x["virtual-size"] == SIZE for x in chain)
    assert [Path(p).name for p in layers.chain(str(top))] == [
        "top.qcow2",
        "mid.qcow2",
        "base.qcow2",
    ]

    assert qemu_raw(top, tmp_path / "top.raw") == model, "qemu reads top.qcow2 differently"

    # Reading through iSCSI: the hand-written initiator and qemu's iSCSI driver.
    dm = netstore_daemon(config(top), name="serve-top-read")
    conn = login(dm.port)
    try:
        assert iscsi_read_all(conn, SIZE) == model
        conn.logout()
    finally:
        conn.close()
    assert qemu_iscsi_read(dm.port, tmp_path / "iscsi.raw") == model
    assert dm.stop() == 0
    for p in (base, mid, top):
        check_clean(p)
    assert sha(mid) == mid_sum and sha(base) == base_sum  # reading never writes below

    # Merge the top layer into mid: same data, two layers left, clean.
    layers.merge_into_parent(str(top))
    assert not top.exists()
    for p in (base, mid):
        check_clean(p)
    assert sha(base) == base_sum
    info = qimg("info", "--backing-chain", "--output=json", str(mid))
    assert [Path(x["filename"]).name for x in json.loads(info.stdout)] == [
        "mid.qcow2",
        "base.qcow2",
    ]
    assert qemu_raw(mid, tmp_path / "mid.raw") == model, "data changed by merge_into_parent"
    dm2 = netstore_daemon(config(mid), name="serve-merged")
    conn = login(dm2.port)
    try:
        assert iscsi_read_all(conn, SIZE) == model
        conn.logout()
    finally:
        conn.close()
    assert dm2.stop() == 0
    check_clean(mid)
