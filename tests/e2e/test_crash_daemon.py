"""Crash safety of qcow2 layers with a real daemon killed under load (issue 3).

A qcow2 layer is served by `netstore serve`; one initiator (the hand-written
rawiscsi.Conn, one command at a time) writes 4-64 KiB of distinct data at
random LBAs, some with FUA, and sends SYNCHRONIZE CACHE(10) every few writes.
The daemon gets SIGKILL at a chosen moment: at a random time during the
writes, right after a SYNCHRONIZE CACHE or a FUA write was acknowledged, or
when the layer file grows past a size where refcount blocks (and, with
512-byte clusters, the refcount table) are being added.

After each kill:
- `qemu-img check --output=json` of every qcow2 file of the chain: no
  corruptions, no check errors (leaked clusters are allowed);
- the disk as qemu reads it (`qemu-img convert -O raw`) holds, in every
  sector, the last write that was durable (acknowledged before a completed
  SYNCHRONIZE CACHE, or a FUA write) or a write issued after it;
- a restarted daemon on the same files serves exactly what qemu read;
- the base file's checksum never changed.
Each setup is killed twice, the second time after the restarted daemon took
more writes on the crashed file.

Every sector a write puts down starts with (write id, LBA): what is read back
names the write it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netstore.disk import layers
from netstore.disk.qcow2 import Qcow2Image, create_qcow2
from netstore.registry import Registry
from tests.e2e.rawiscsi import Closed, Conn

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) missing"),
]

BASE_IQN = "iqn.2026-11.org.netstore"
IQN = f"{BASE_IQN}:crash"
INITIATOR = "iqn.2026-11.org.test:crash"
KiB = 1024
MiB = 1 << 20
SIZE = 32 * MiB
BS = 512
SECTORS = SIZE // BS
FUA = 0x08
# Bounds of one write phase: a kill must come within this time, else the run fails.
WRITE_PHASE_MAX_S = 8.0
MAX_WRITES = 20000


def sector(w: int, lba: int) -> bytes:
    """The 512 bytes write `w` puts at `lba`: (w, lba) then a digest of both, repeated."""
    head = struct.pack(">QQ", w, lba)
    return head + (hashlib.sha256(head).digest() * 16)[: BS - 16]


def qimg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-img", *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_chain(top: Path) -> list[dict]:
    """qemu-img check of every qcow2 file of the chain: no corruptions, no errors."""
    reports = []
    for p in layers.chain(str(top)):
        if Path(p).read_bytes()[:4] != b"QFI\xfb":
            continue  # a raw base: nothing to check
        r = qimg("check", "--output=json", p)
        assert r.stdout, f"qemu-img check {p} failed: rc {r.returncode} {r.stderr}"
        rep = json.loads(r.stdout)
        assert rep.get("corruptions", 0) == 0, (p, rep, r.stderr)
        assert rep.get("check-errors", 0) == 0, (p, rep, r.stderr)
        assert r.returncode in (0, 3), (p, r.returncode, rep, r.stderr)  # 3: leaks only
        reports.append({"file": Path(p).name, **rep})
    return reports


def qemu_read(top: Path, out: Path) -> bytes:
    if out.exists():
        out.unlink()
    r = qimg("convert", "-O", "raw", str(top), str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def login(port: int) -> Conn:
    c = Conn.connect(port)
    c.login(IQN, initiator=INITIATOR)
    for _ in range(5):  # the power-on unit attention, then GOOD
        status, _ = c.command(bytes(6))
        if status == 0:
            return c
    raise AssertionError("TEST UNIT READY never returned GOOD")


def iscsi_read_all(port: int) -> bytes:
    c = login(port)
    try:
        out = bytearray()
        step = 256 * KiB
        for off in range(0, SIZE, step):
            cdb = struct.pack(">BBIBHB", 0x28, 0, off // BS, 0, step // BS, 0)
            status, data = c.command(cdb, read=step)
            assert status == 0 and len(data) == step, (off, status, len(data))
            out += data
        c.logout()
        return bytes(out)
    finally:
        c.close()


@dataclass
class Model:
    """What the initiator did, per sector: written ids and the durable one."""

    baseline: bytes  # the disk before this phase (what a durable id 0 means)
    issued: dict[int, list[int]] = field(default_factory=dict)  # lba -> ids, in order
    durable: dict[int, int] = field(default_factory=dict)  # lba -> id (0: baseline)
    acked: dict[int, int] = field(default_factory=dict)  # lba -> last acknowledged id
    unsynced: set[int] = field(default_factory=set)  # lbas acked since the last sync
    writes: int = 0
    syncs: int = 0
    fuas: int = 0

    def issue(self, w: int, lba: int, n: int) -> None:
        for s in range(lba, lba + n):
            self.issued.setdefault(s, []).append(w)

    def ack(self, w: int, lba: int, n: int, fua: bool) -> None:
        self.writes += 1
        for s in range(lba, lba + n):
            self.acked[s] = w
            if fua:
                self.durable[s] = w
            else:
                self.unsynced.add(s)
        self.fuas += fua

    def synced(self) -> None:
        self.syncs += 1
        for s in self.unsynced:
            self.durable[s] = self.acked[s]
        self.unsynced.clear()

    def verify(self, got: bytes) -> int:
        """Assert every sector holds its durable write or a later one; return how
        many sectors lost an acknowledged (not yet synced) write."""
        assert len(got) == len(self.baseline)
        bad = []
        lost_acked = 0
        fixed = bytearray(got)
        for s, ids in self.issued.items():
            have = got[s * BS : (s + 1) * BS]
            base = self.baseline[s * BS : (s + 1) * BS]
            d = self.durable.get(s, 0)
            allowed = {d} | {w for w in ids if w > d}
            w_got = 0 if have == base else struct.unpack_from(">Q", have)[0]
            if w_got not in allowed or (w_got and have != sector(w_got, s)):
                bad.append((s, w_got, d, sorted(allowed)[-3:]))
            elif w_got < self.acked.get(s, 0):
                lost_acked += 1  # ids grow: an older write than the last acknowledged one
            fixed[s * BS : (s + 1) * BS] = base
        assert not bad, (
            f"{len(bad)} sectors lost a durable write (lba, id read, durable id, allowed): "
            f"{bad[:8]}"
        )
        assert fixed == self.baseline, "sectors never written changed"
        return lost_acked


def write_until_killed(
    daemon, model: Model, rng: random.Random, mode: str, watch: Path, next_id: list[int]
) -> str:
    """Write through iSCSI until the daemon dies; kill it as `mode` says.

    mode: "time" (SIGKILL from a timer 0.2-1.2 s in), "sync" (right after the
    k-th SYNCHRONIZE CACHE completes), "fua" (right after the k-th FUA write),
    "grow" (when the layer file passes a size: refcount blocks being added).
    Returns how the daemon was killed.
    """
    proc = daemon.proc
    pid = proc.pid
    killed = threading.Event()

    def kill() -> None:
        if not killed.is_set():
            killed.set()
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    stop_watch = threading.Event()
    timer = None
    if mode == "time":
        timer = threading.Timer(rng.uniform(0.2, 1.2), kill)
        timer.start()
    elif mode == "grow":
        start_size = watch.stat().st_size
        limit = start_size + rng.choice([3, 5, 9]) * MiB

        def watcher() -> None:
            deadline = time.monotonic() + WRITE_PHASE_MAX_S
            while not stop_watch.is_set() and time.monotonic() < deadline:
                if watch.stat().st_size >= limit:
                    kill()
                    return
                time.sleep(0.0005)

        timer = threading.Thread(target=watcher, daemon=True)
        timer.start()
    kth = rng.randint(3, 12)
    every = rng.randint(4, 16)

    c = login(daemon.port)
    deadline = time.monotonic() + WRITE_PHASE_MAX_S
    try:
        for i in range(MAX_WRITES):
            if time.monotonic() > deadline:
                raise AssertionError(f"no kill ({mode}) within {WRITE_PHASE_MAX_S} s")
            n = rng.choice([8, 8, 16, 32, 64, 128])  # 4..64 KiB
            lba = rng.randrange(0, SECTORS - n + 1)
            if rng.random() < 0.5:
                lba -= lba % 8  # half 4 KiB aligned, half not
            fua = rng.random() < 0.1
            w = next_id[0]
            next_id[0] += 1
            data = b"".join(sector(w, s) for s in range(lba, lba + n))
            model.issue(w, lba, n)
            cdb = struct.pack(">BBIBHB", 0x2A, FUA if fua else 0, lba, 0, n, 0)
            status, _ = c.command(cdb, write=data, timeout=5)
            assert status == 0, f"WRITE(10) failed with status {status:#x}"
            model.ack(w, lba, n, fua)
            if fua and mode == "fua" and model.fuas >= kth:
                kill()
            if i % every == every - 1:
                status, _ = c.command(bytes([0x35]) + bytes(9), timeout=10)
                assert status == 0, f"SYNCHRONIZE CACHE failed with status {status:#x}"
                model.synced()
                if mode == "sync" and model.syncs >= kth:
                    kill()
    except (Closed, OSError, TimeoutError):
        if not killed.is_set() and proc.poll() is None:
            raise
    finally:
        c.close()
        stop_watch.set()
        if isinstance(timer, threading.Timer):
            timer.cancel()
    proc.wait(10)
    assert killed.is_set(), f"the daemon died by itself (status {proc.returncode})"
    assert proc.returncode == -signal.SIGKILL, (pid, proc.returncode)
    return mode


# Each setup is killed twice, with the modes given.
SETUPS = {
    "raw-base-4k": ("raw", 4096, ["time", "sync"]),
    "raw-base-512": ("raw", 512, ["grow", "fua"]),
    "qcow2-base-4k": ("qcow2", 4096, ["fua", "grow"]),
    "multiattach": ("multiattach", None, ["sync", "time"]),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_kill_under_load_keeps_layers_valid_and_synced_writes(setup, netstore_daemon, tmp_path):
    kind, cluster, modes = SETUPS[setup]
    # NETSTORE_CRASH_SEED=N replays a run (the kill moments still depend on timing).
    seed = int(os.environ.get("NETSTORE_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    state = tmp_path / "netstore-state"
    (state / "media").mkdir(parents=True, exist_ok=True)
    d = tmp_path / "img"
    d.mkdir()
    base_rng = random.Random(seed + 1)
    if kind == "raw":
        base = d / "base.raw"
        base.write_bytes(base_rng.randbytes(SIZE))
        top = d / "layer.qcow2"
        layers.create_child(str(base), str(top), cluster_size=cluster)
        cfg = f'[[iscsi.targets]]\niqn = "{IQN}"\nluns = ["{top}"]\n'
    elif kind == "qcow2":
        base = d / "base.qcow2"
        create_qcow2(str(base), SIZE)
        with Qcow2Image(str(base)) as q:  # three quarters of it allocated
            for off in range(0, SIZE * 3 // 4, 4 * MiB):
                q.pwrite(off, base_rng.randbytes(4 * MiB))
        top = d / "layer.qcow2"
        layers.create_child(str(base), str(top), cluster_size=cluster)
        cfg = f'[[iscsi.targets]]\niqn = "{IQN}"\nluns = ["{top}"]\n'
    else:
        with Registry.open(state) as reg:
            m = reg.create("multi", SIZE, format="qcow2", type="multiattach")
            base = Path(m.location)
            top = reg.layer_path("multi", INITIATOR)
        with Qcow2Image(str(base)) as q:  # data below the machine's layer
            for off in range(MiB, SIZE, 8 * MiB):
                q.pwrite(off, base_rng.randbytes(2 * MiB))
        cfg = f'[iscsi]\nbase_iqn = "{BASE_IQN}"\n[[iscsi.targets]]\niqn = "{IQN}"\nluns = ["multi"]\n'
    base_sum = sha(base)
    scratch = tmp_path / "read.raw"
    if top.exists():
        baseline = qemu_read(top, scratch)
    else:
        baseline = qemu_read(base, scratch)

    next_id = [1]
    log = []
    daemon = netstore_daemon(cfg, name="run0")
    for rnd, mode in enumerate(modes):
        model = Model(baseline)
        write_until_killed(daemon, model, rng, mode, top, next_id)
        reports = check_chain(top)
        assert sha(base) == base_sum, "the base file changed"
        got = qemu_read(top, scratch)
        lost = model.verify(got)
        log.append(
            f"{setup} seed {seed} round {rnd} kill={mode}: {model.writes} writes "
            f"({model.fuas} FUA), {model.syncs} syncs, layer {top.stat().st_size} bytes, "
            f"acked-unsynced sectors lost {lost}, check {reports}"
        )
        if lost:
            warnings.warn(f"{setup}: {lost} sectors lost acknowledged writes", stacklevel=1)
        # Restart on the same files: iSCSI serves what qemu read.
        daemon = netstore_daemon(cfg, name=f"run{rnd + 1}")
        assert iscsi_read_all(daemon.port) == got, "iSCSI after restart differs from qemu-img"
        baseline = got
    assert daemon.stop() == 0
    reports = check_chain(top)
    assert sha(base) == base_sum
    log.append(f"{setup} after a clean stop: check {reports}")
    print("\n".join(log))
