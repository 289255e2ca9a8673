"""The six disk types served over iSCSI, checked with qemu-io as the initiator.

Until the VM registry exists the machine is the initiator (issue 3): each
initiator name gets its own layer of an immutable or multiattach medium, and
its power-on is a login while it has no other session to the target.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netstore.registry import Registry
from tests.e2e.rawiscsi import Conn

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) missing"),
]

BASE = "iqn.2026-11.org.netstore"
A = "iqn.2026-11.org.test:vm-a"
B = "iqn.2026-11.org.test:vm-b"
MiB = 1 << 20


def qemu_io(port: int, target: str, initiator: str, *commands: str) -> subprocess.CompletedProcess:
    opts = (f"driver=iscsi,transport=tcp,portal=127.0.0.1:{port},target={BASE}:{target},"
            f"lun=0,initiator-name={initiator}")
    argv = ["qemu-io", "--image-opts", opts]
    for c in commands:
        argv += ["-c", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def ok(p: subprocess.CompletedProcess) -> str:
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "failed" not in out.lower(), out
    return out


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def served(netstore_daemon, tmp_path):
    state = tmp_path / "netstore-state"
    with Registry.open(state) as reg:
        media = {
            "imm": reg.create("imm", 32 * MiB, format="qcow2", type="immutable"),
            "multi": reg.create("multi", 32 * MiB, format="raw", type="multiattach"),
            "norm": reg.create("norm", 32 * MiB, format="qcow2"),
            "wt": reg.create("wt", 32 * MiB, format="raw", type="writethrough"),
            "iso": reg.create("iso", 4 * MiB, format="raw", kind="dvd"),
            "ro": reg.create("ro-floppy", 2 * MiB, format="raw", kind="floppy",
                             type="readonly"),
        }
    targets = "".join(
        f'[[iscsi.targets]]\niqn = "{BASE}:{t}"\nluns = ["{m.name}"]\n'
        for t, m in media.items())
    daemon = netstore_daemon(f'[iscsi]\nbase_iqn = "{BASE}"\n' + targets)
    return daemon, media


def test_multiattach_each_machine_sees_only_its_own_writes(served):
    daemon, media = served
    before = sha(media["multi"].location)
    ok(qemu_io(daemon.port, "multi", A, "write -P 0xaa 1M 64k"))
    ok(qemu_io(daemon.port, "multi", B, "write -P 0xbb 1M 64k"))
    ok(qemu_io(daemon.port, "multi", A, "read -P 0xaa 1M 64k"))
    ok(qemu_io(daemon.port, "multi", B, "read -P 0xbb 1M 64k"))
    # a multiattach layer is never reset: still there after fresh logins
    ok(qemu_io(daemon.port, "multi", A, "read -P 0xaa 1M 64k"))
    assert sha(media["multi"].location) == before


def test_immutable_survives_guest_reboot_not_power_on(served):
    daemon, media = served
    before = sha(media["imm"].location)
    holder = Conn.connect(daemon.port)  # a second session keeps the machine powered on
    try:
        holder.login(f"{BASE}:imm", initiator=A)
        ok(qemu_io(daemon.port, "imm", A, "write -P 0x11 2M 64k"))
        # guest reboot: log out and in again while the other session stays
        ok(qemu_io(daemon.port, "imm", A, "read -P 0x11 2M 64k"))
        # another machine never sees A's writes
        ok(qemu_io(daemon.port, "imm", B, "read -P 0x00 2M 64k"))
    finally:
        holder.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "ended" not in daemon.stderr_path.read_text():
        time.sleep(0.05)
    # a fresh power-on: the changes are gone
    ok(qemu_io(daemon.port, "imm", A, "read -P 0x00 2M 64k"))
    assert sha(media["imm"].location) == before


@pytest.mark.parametrize("target, block", [("iso", 2048), ("ro", 512)])
def test_readonly_media_refuse_writes(served, target, block):
    daemon, media = served
    p = qemu_io(daemon.port, target, A, "write -P 0x22 0 4k")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    if target == "ro":  # qemu refuses to open a disk whose MODE SENSE shows WP
        assert "can't open: LUN is write protected" in p.stderr, out
    else:  # a CD/DVD opens read-only anyway; its WRITE gets DATA PROTECT / WRITE PROTECTED
        assert "write failed: Permission denied" in p.stdout, out
        assert "SENSE KEY:DATA PROTECTION(7) ASCQ:WRITE_PROTECTED(0x2700)" in p.stderr, out
    c = Conn.connect(daemon.port)
    try:
        c.login(f"{BASE}:{target}", initiator=A)
        c.command(bytes(6))  # the power-on unit attention
        c.command(bytes(6))
        if target == "ro":
            status, mode = c.command(bytes([0x1A, 0, 0x3F, 0, 0xFF, 0]), read=255)
            assert status == 0 and mode[2] & 0x80  # WP in the device-specific parameter
        write10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        status, _ = c.command(write10, write=b"\x22" * block)
        assert status == 0x02  # CHECK CONDITION: DATA PROTECT / WRITE PROTECTED
    finally:
        c.close()
    assert set(Path(media[target].location).read_bytes()[:4096]) <= {0}


def test_normal_disk_runs_in_one_machine_at_a_time(served):
    daemon, media = served
    holder = Conn.connect(daemon.port)
    try:
        holder.login(f"{BASE}:norm", initiator=A)
        p = qemu_io(daemon.port, "norm", B, "read 0 4k")
        assert p.returncode != 0 and "Service unavailable" in p.stdout + p.stderr
        log = daemon.stderr_path.read_text()
        assert f"disk norm is in use by {A}" in log
        ok(qemu_io(daemon.port, "norm", A, "write -P 0x33 0 4k"))  # the same machine may
    finally:
        holder.close()
    time.sleep(0.3)
    ok(qemu_io(daemon.port, "norm", B, "read -P 0x33 0 4k"))  # now B's turn, same data


def test_writethrough_writes_reach_the_base(served):
    daemon, media = served
    ok(qemu_io(daemon.port, "wt", A, "write -P 0x44 3M 4k"))
    with open(media["wt"].location, "rb") as f:
        f.seek(3 * MiB)
        assert f.read(4096) == b"\x44" * 4096
