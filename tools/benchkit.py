# tools/benchkit.py - what tools/bench-isolation, tools/bench-workers,
# tools/bench-iscsi and tests/e2e/test_isolation.py share, in one place: the
# config of a daemon with a probe switch (two udp ports) and targets on image
# files; a `netstore serve` subprocess (ready line parsed, pids of it and its
# descendants, stopped as a process group); CPU seconds of processes from
# /proc, and CpuWindow (a changing set of processes over a run's window, each
# netstore process's role from its command line); the latency probe (a sender
# and a receiver process, run from this file: `python3 tools/benchkit.py
# probe-send|probe-recv ...`); the loads (qemu-io writes with a flush after
# each chunk, a cold read back, iscsi-perf).
# Every child is started in its own session and killed by kill_children().
"""Shared pieces of the isolation and worker benchmarks (tools/bench-isolation, bench-workers)."""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE_IQN = "iqn.2026-11.org.netstore"
MIB = 1 << 20
GIB = 1 << 30
CHUNK = 32 * MIB  # write size, and a SYNCHRONIZE CACHE after each
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Probe frames: Ethernet, from SENDER_MAC to RECEIVER_MAC, EtherType 0x88b5
# (IEEE local experimental), payload MAGIC, sequence number, the sender's
# time.monotonic_ns() and time.time_ns() at send, padded to 60 bytes.
SENDER_MAC = bytes.fromhex("020000b00001")
RECEIVER_MAC = bytes.fromhex("020000b00002")
ETHERTYPE = b"\x88\xb5"
MAGIC = b"nsprobe1"
PAYLOAD = struct.Struct("!8sQQQ")
FRAME_BYTES = 60
FLOW_TIMEOUT_S = 10.0  # the first probe frame crosses the switch within this
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same

# iscsi-perf's last line: "iops average 21554 (84 MB/s)" (periodic ones alike, \r-separated).
PERF_AVG = re.compile(r"iops average (\d+) \((\d+) MB/s\)")

_children: list[subprocess.Popen[Any]] = []


def target_iqn(i: int, names: list[str] | None = None) -> str:
    """Target i: <base>:bench<i>, or <base>:<names[i]> when names are given."""
    return f"{BASE_IQN}:{names[i] if names else f'bench{i}'}"


def initiator_iqn(i: int) -> str:
    return f"{BASE_IQN}:bench-initiator{i}"


# -- children ------------------------------------------------------------------


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Popen in a session of its own (a Ctrl-C reaches only us), remembered for kill_children."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.append(p)
    return p


def end(p: subprocess.Popen[Any], grace: float = 0.0) -> None:
    """SIGTERM its process group (waiting up to `grace`), then SIGKILL it; reap."""
    if p.poll() is None and grace > 0:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5.0)
    except subprocess.TimeoutExpired:
        pass
    if p in _children:
        _children.remove(p)


def kill_children() -> None:
    """End every child still running (tools call it in `finally`; also at exit)."""
    for p in list(_children):
        end(p)


atexit.register(kill_children)


def sigterm_as_interrupt() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so a tool's `finally` kills its children."""

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored


def write_json(dest: str | None, obj: Any) -> bool:
    """--json FILE of the tools: write obj there; True when it went to stdout ("-")."""
    if dest is None:
        return False
    text = json.dumps(obj, indent=1)
    if dest == "-":
        print(text)
        return True
    Path(dest).write_text(text + "\n")
    return False


# -- images and config -----------------------------------------------------------


def make_image(path: Path, size: int, *, fill: bool) -> None:
    """A raw image of `size` bytes: sparse, or (fill) every MiB written with non-zero data."""
    with open(path, "wb") as f:
        f.truncate(size)
        if fill:
            block = os.urandom(MIB)
            for off in range(0, size, MIB):
                f.write(block[: min(MIB, size - off)])
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: Path) -> None:
    """fsync the file and drop its pages from the page cache (only this file's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> None:
    """Read the whole file once, so it is in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


def cached_bytes(path: Path) -> int | None:
    """How much of the file is in the page cache (util-linux fincore), None if unknown."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def config_text(state_dir: Path, images: list[Path], *, probe_switch: bool = True,
                workers: int | None = None, portal: str = "127.0.0.1:0",
                names: list[str] | None = None) -> str:
    """A daemon config: a target per image (LUN 0; target_iqn names them), and (probe_switch) a switch
    `probe` with udp ports `a` and `b` on free loopback ports, without a remote (each
    answers whoever sent it the first datagram). `workers` sets `[iscsi] workers`
    only when given (the key is new with issue 10)."""
    lines = ["[daemon]", f"state_dir = {json.dumps(str(state_dir))}", 'log_level = "warning"',
             "", "[iscsi]", f"portals = [{json.dumps(portal)}]", f'base_iqn = "{BASE_IQN}"']
    if workers is not None:
        lines.append(f"workers = {workers}")
    for i, image in enumerate(images):
        lines += ["", "[[iscsi.targets]]", f'iqn = "{target_iqn(i, names)}"',
                  f"luns = [{json.dumps(str(image))}]"]
    if probe_switch:
        lines += ["", "[[switches]]", 'name = "probe"']
        for port in ("a", "b"):
            lines += ["", "[[switches.ports]]", f'name = "{port}"', 'kind = "udp"',
                      'local = "127.0.0.1:0"']
    return "\n".join(lines) + "\n"


# -- the daemon --------------------------------------------------------------------


@dataclass
class Ready:
    """What a `netstore ready` line says."""

    line: str
    portals: list[str]
    switch_ports: dict[str, tuple[str, int]]  # "switch:port" -> (host, port)

    @classmethod
    def parse(cls, line: str) -> Ready:
        portals = [w[len("iscsi="):] for w in line.split() if w.startswith("iscsi=")]
        ports = {}
        for m in re.finditer(r"switch=([^:\s]+):([^=\s]+)=(\S+):(\d+)", line):
            ports[f"{m[1]}:{m[2]}"] = (m[3], int(m[4]))
        return cls(line, portals, ports)

    def url(self, i: int = 0, names: list[str] | None = None) -> str:
        return f"iscsi://{self.portals[0]}/{target_iqn(i, names)}/0"


class DaemonRefused(RuntimeError):
    """netstore serve exited before it was ready; .status and .stderr say why."""

    def __init__(self, status: int | None, stderr: str) -> None:
        super().__init__(f"netstore serve exited with status {status} before it was ready: "
                         f"{stderr.strip()[-600:]}")
        self.status = status
        self.stderr = stderr


class Netstore:
    """`python3 -m netstore serve --config FILE` of a tree (default: this checkout)."""

    def __init__(self, workdir: Path, config: str, *, tree: Path = REPO, name: str = "netstore"):
        self.workdir = workdir
        self.tree = tree
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(config)
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: Ready | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> Ready:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.tree)}
        if self.tree != REPO:
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave another checkout as it is
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = spawn([sys.executable, "-m", "netstore", "serve", "--config",
                               str(self.config_path)], cwd=self.workdir, env=env,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first, newline, _ = self.stdout_path.read_text(errors="replace").partition("\n")
            if newline and first.startswith("netstore ready"):
                self.ready = Ready.parse(first)
                return self.ready
            if self.proc.poll() is not None:
                raise DaemonRefused(self.proc.returncode, self.log())
            time.sleep(0.02)
        self.stop()
        raise DaemonRefused(None, f"not ready within {timeout:.0f} s; " + self.log())

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def status(self) -> dict[str, Any] | None:
        """`netstore status --json` of the running daemon (None when it fails)."""
        env = {**os.environ, "PYTHONPATH": str(self.tree), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            out = subprocess.run([sys.executable, "-m", "netstore", "status", "--json",
                                  "--config", str(self.config_path)], cwd=self.workdir, env=env,
                                 capture_output=True, text=True, timeout=20)
            return json.loads(out.stdout) if out.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The serve process and all its descendants now."""
        return [] if self.proc is None else [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        end(self.proc, STOP_TIMEOUT_S)
        return self.proc.returncode


# -- CPU time from /proc ---------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def descendants(pid: int) -> list[int]:
    """Every live process whose parent chain leads to pid."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            parent[int(d)] = int(st[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found.extend(sorted(kids))
        frontier = kids
    return found


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (its threads included), None once it is gone."""
    st = _stat(pid)
    return None if st is None else (int(st[11]) + int(st[12])) / CLK_TCK


def label(pid: int, width: int = 70) -> str:
    """The process's command line, shortened to `width`."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if args and args[0] == sys.executable:
        args[0] = "python3"
    text = " ".join(Path(a).name if a.startswith("/") else a for a in args)  # paths: names
    return text if len(text) <= width else text[: width - 1] + "…"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def netstore_role(pid: int, serve_pid: int | None = None) -> str:
    """What a process of a `netstore serve` tree is: "serve" (the supervisor, which
    also accepts the iSCSI connections), "worker" (`python -m netstore.processes
    iscsi ... workerN`), "switch" (`... netstore.processes switches ...`) or "other"."""
    if pid == serve_pid:
        return "serve"
    args = cmdline(pid) or []
    if "netstore.processes" in args:
        kind = args[args.index("netstore.processes") + 1:][:1]
        if kind == ["iscsi"]:
            return "worker"
        if kind == ["switches"]:
            return "switch"
    if serve_pid is None and "serve" in args and any("netstore" in a for a in args):
        return "serve"
    return "other"


def pgrep_exact(name: str) -> list[int]:
    """Live processes whose name (comm) is exactly `name`, as `pgrep -x name` finds them."""
    try:
        out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, timeout=10)
        pids = [int(w) for w in out.stdout.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pids = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and Path(f"/proc/{d}/comm").read_text().strip() == name[:15]:
                    pids.append(int(d))
            except OSError:
                pass
    return sorted(p for p in pids if alive(p))


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores (/proc/stat: user,
    nice, system, irq, softirq, steal; not idle or iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


PF_KTHREAD = 0x00200000  # /proc/PID/stat flags: a kernel thread


def all_cpu_seconds() -> dict[int, tuple[float, bool]]:
    """Every process now: pid -> (utime + stime in seconds, whether it is a kernel thread)."""
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            found[int(d)] = ((int(st[11]) + int(st[12])) / CLK_TCK, bool(int(st[6]) & PF_KTHREAD))
    return found


class MachineWindow:
    """What the rest of the machine did between start() and stop(exclude): the busy CPU
    of all cores (/proc/stat) and the user-space processes outside `exclude` (by
    pid, with their command lines), to tell a quiet run from a disturbed one.
    Processes that start and end inside the window show in `busy_s` only."""

    def start(self) -> None:
        self.before = all_cpu_seconds()
        self.busy0 = busy_seconds()
        self.t0 = time.monotonic()

    def stop(self, exclude: set[int]) -> dict[str, Any]:
        """{"seconds", "busy_s", "excluded_s", "others_s", "others": [(pid, label, cpu_s)]}"""
        seconds = time.monotonic() - self.t0
        busy = busy_seconds() - self.busy0
        now = all_cpu_seconds()
        excluded = 0.0
        others = []
        for pid, (cpu, kthread) in now.items():
            delta = cpu - self.before.get(pid, (0.0, kthread))[0]
            if pid in exclude:
                excluded += delta
            elif not kthread and delta > 0:
                others.append((pid, label(pid, 60), delta))
        others.sort(key=lambda o: -o[2])
        return {"seconds": seconds, "busy_s": busy, "excluded_s": excluded,
                "others_s": sum(o[2] for o in others), "others": others}


class CpuWindow:
    """CPU seconds (utime + stime from /proc/PID/stat, threads included) that a set of
    processes used between start() and stop().

    `pids` is asked for the set at start() and again at stop(): a process that
    appeared in between is counted from zero (all its time is in the window); one
    that ended in between is listed in `gone` and its time since start() is lost
    (/proc has nothing left of it). Resolution is one clock tick (1/CLK_TCK s)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.before: dict[int, float] = {}
        self.t0 = 0.0

    def start(self) -> None:
        pids = self._pids()
        self.before = {p: c for p in pids if (c := cpu_seconds(p)) is not None}
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """{"seconds": window, "cpu_s": total, "per_pid": {pid: cpu_s}, "gone": [pid...]}"""
        seconds = time.monotonic() - self.t0
        per_pid: dict[int, float] = {}
        gone = []
        for p, c0 in self.before.items():
            c1 = cpu_seconds(p)  # a zombie still tells its times
            if c1 is not None:
                per_pid[p] = c1 - c0
            if c1 is None or not alive(p):
                gone.append(p)
        for p in self._pids():
            if p not in self.before and (c := cpu_seconds(p)) is not None:
                per_pid[p] = c
        return {"seconds": seconds, "cpu_s": sum(per_pid.values()), "per_pid": per_pid,
                "gone": gone}


# -- the latency probe --------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted values, nearest rank; None for none."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(lat_ms: list[float]) -> dict[str, Any]:
    s = sorted(lat_ms)
    return {"p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
            "p999_ms": percentile(s, 0.999), "max_ms": s[-1] if s else None,
            "over_2ms": sum(1 for x in s if x > 2.0), "over_20ms": sum(1 for x in s if x > 20.0)}


class Probe:
    """Frames at `rate` per second from switch port A's peer to port B's peer.

    start() launches the receiver (it announces RECEIVER_MAC on port B, so the
    switch learns it and answers that socket) and then the sender (port A),
    and returns once the first frame crossed (frames sent before it are the
    warm-up, not counted as lost); stop() ends the sender, lets the receiver drain for `drain` seconds and
    returns the figures: sent, received, lost, duplicates, latency p50/p99/
    p999/max in ms from user-space stamps (time.monotonic_ns() at send and on
    return from recv) and `kernel_*` from the kernel's receive stamp
    (SO_TIMESTAMPNS against time.time_ns() at send: no receiver wake-up in
    it). `max_seconds` bounds both processes even if stop() never comes.
    """

    def __init__(self, port_a: tuple[str, int], port_b: tuple[str, int], *, rate: int = 1000,
                 max_seconds: float = 900.0, drain: float = 0.5) -> None:
        self.port_a, self.port_b = port_a, port_b
        self.rate, self.max_seconds, self.drain = rate, max_seconds, drain
        self.sender: subprocess.Popen[str] | None = None
        self.receiver: subprocess.Popen[str] | None = None
        self.started = 0.0

    def _run(self, *args: object) -> subprocess.Popen[str]:
        return spawn([sys.executable, str(Path(__file__).resolve()), *map(str, args)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> None:
        host, port = self.port_b
        self.receiver = self._run("probe-recv", host, port, self.max_seconds + 30)
        assert self.receiver.stdout is not None
        if self.receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("probe receiver did not start")
        time.sleep(0.1)  # the announcement is learnt
        host, port = self.port_a
        self.sender = self._run("probe-send", host, port, self.rate, self.max_seconds)
        assert self.sender.stdout is not None
        if self.sender.stdout.readline().strip() != "ready":
            raise RuntimeError("probe sender did not start")
        r, _, _ = select.select([self.receiver.stdout], [], [], FLOW_TIMEOUT_S)
        if not r or not self.receiver.stdout.readline().startswith("flowing"):
            raise RuntimeError(f"no probe frame crossed the switch within {FLOW_TIMEOUT_S} s")
        self.started = time.monotonic()

    def _finish(self, p: subprocess.Popen[str], wait: float) -> dict[str, Any]:
        try:
            out, _ = p.communicate("stop\n", timeout=wait)
        except subprocess.TimeoutExpired:
            end(p)
            raise RuntimeError("probe process did not stop") from None
        end(p)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> dict[str, Any]:
        assert self.sender is not None and self.receiver is not None
        seconds = time.monotonic() - self.started
        sent = self._finish(self.sender, 10.0)
        time.sleep(self.drain)
        got = self._finish(self.receiver, 10.0)
        counted = sent["sent"] - got["first_seq"]  # from the first frame that crossed
        return {"seconds": seconds, "rate": self.rate, "sent": counted,
                "sender_max_gap_ms": sent["max_gap_ms"], "sender_skipped": sent["skipped"],
                "warmup": got["first_seq"], "received": got["received"],
                "lost": counted - got["received"],
                "duplicates": got["duplicates"], "reordered": got["reordered"],
                **latency_summary(got["lat_ms"]),
                **{f"kernel_{k}": v for k, v in latency_summary(got["klat_ms"]).items()},
                "worst": got["worst"]}


def _stdin_says_stop(timeout: float) -> bool:
    r, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
    return bool(r)


def probe_send(host: str, port: int, rate: int, max_seconds: float) -> None:
    """The sender process: frames to RECEIVER_MAC at `rate`/s until stdin speaks or the bound."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect((host, port))
    period = 1_000_000_000 // rate
    head = RECEIVER_MAC + SENDER_MAC + ETHERTYPE
    print("ready", flush=True)
    t0 = nxt = time.monotonic_ns()
    deadline = t0 + int(max_seconds * 1e9)
    seq = skipped = 0
    last = t0
    max_gap = 0
    while True:
        now = time.monotonic_ns()
        if nxt > now:
            if _stdin_says_stop((nxt - now) / 1e9):
                break
            continue
        if now > deadline:
            break
        frame = head + PAYLOAD.pack(MAGIC, seq, time.monotonic_ns(), time.time_ns())
        try:
            s.send(frame.ljust(FRAME_BYTES, b"\0"))
        except (ConnectionRefusedError, BlockingIOError):
            pass  # the frame is lost: the receiver counts it
        seq += 1
        max_gap = max(max_gap, now - last)
        last = now
        nxt += period
        if now - nxt > 50_000_000:  # 50 ms behind (we were not scheduled): restart the beat
            skipped += (now - nxt) // period
            nxt = now
    print(json.dumps({"sent": seq, "max_gap_ms": max_gap / 1e6, "skipped": skipped}), flush=True)


def probe_recv(host: str, port: int, max_seconds: float) -> None:
    """The receiver process: announces RECEIVER_MAC to the switch port, records every frame."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("127.0.0.1", 0))
    switch = (host, port)
    announce = (SENDER_MAC + RECEIVER_MAC + ETHERTYPE).ljust(FRAME_BYTES, b"\0")
    broadcast = b"\xff" * 6 + announce[6:]
    s.sendto(broadcast, switch)  # learnt on port b (again every 0.1 s until a frame comes)
    print("ready", flush=True)
    seen = bytearray()
    lat: list[float] = []
    klat: list[float] = []
    worst: list[tuple[float, int]] = []
    dup = reordered = top = 0
    first_seq: int | None = None
    deadline = time.monotonic() + max_seconds
    next_announce = time.monotonic() + 0.1
    stopping_at: float | None = None
    while time.monotonic() < deadline:
        if time.monotonic() > next_announce:  # until flowing; then past the MAC aging
            s.sendto(broadcast if first_seq is None else announce, switch)
            next_announce = time.monotonic() + (0.1 if first_seq is None else 5.0)
        r, _, _ = select.select([s] if stopping_at else [s, sys.stdin], [], [], 0.2)
        if sys.stdin in r:
            sys.stdin.readline()
            stopping_at = time.monotonic()
            continue
        if s not in r:
            if stopping_at:
                break  # drained
            continue
        data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(16))
        now = time.monotonic_ns()
        if len(data) < 14 + PAYLOAD.size or data[14:22] != MAGIC:
            continue
        _, seq, mono, real = PAYLOAD.unpack_from(data, 14)
        if first_seq is None:
            first_seq = seq
            print(f"flowing {seq}", flush=True)
        if seq >= len(seen):
            seen.extend(bytes(seq + 1 - len(seen) + 4096))
        if seen[seq]:
            dup += 1
            continue
        seen[seq] = 1
        if seq < top:
            reordered += 1
        top = max(top, seq)
        ms = (now - mono) / 1e6
        lat.append(ms)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack_from("qq", cdata)
                klat.append((sec * 1_000_000_000 + nsec - real) / 1e6)
        if ms > 2.0:
            worst.append((ms, seq))
            if len(worst) > 200:
                worst = sorted(worst, reverse=True)[:20]
    worst = sorted(worst, reverse=True)[:10]
    print(json.dumps({"received": len(lat), "first_seq": first_seq or 0, "duplicates": dup, "reordered": reordered,
                      "lat_ms": lat, "klat_ms": klat,
                      "worst": [{"ms": round(ms, 3), "seq": q} for ms, q in worst]}), flush=True)


# -- the loads --------------------------------------------------------------------------


@dataclass
class LoadResult:
    what: str
    bytes: int = 0
    ios: int = 0
    seconds: float = 0.0
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float | None:
        return self.bytes / self.seconds / 1e6 if self.seconds and self.bytes else None

    @property
    def iops(self) -> float | None:
        return self.ios / self.seconds if self.seconds and self.ios else None

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": self.bytes, "ios": self.ios,
                "seconds": self.seconds, "mb_s": self.mb_s, "iops": self.iops,
                "error": self.error, **self.detail}


def _wait(p: subprocess.Popen[str], timeout: float) -> tuple[str, bool]:
    """Its output, and whether it finished within `timeout` (else it is killed)."""
    try:
        out, _ = p.communicate(timeout=timeout)
        return out or "", True
    except subprocess.TimeoutExpired:
        end(p)
        out, _ = p.communicate()
        return out or "", False


def qemu_io(url: str, commands: list[str], what: str, nbytes: int, timeout: float) -> LoadResult:
    """One qemu-io process running `commands` in order against the iSCSI URL."""
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    t0 = time.monotonic()
    p = spawn([*argv, url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT, text=True)
    out, finished = _wait(p, timeout)
    res = LoadResult(what, nbytes, len(commands), time.monotonic() - t0)
    failed = [ln for ln in out.splitlines() if "failed" in ln.lower() or "error" in ln.lower()
              or "pattern verification" in ln.lower()]
    if not finished:
        res.error = f"qemu-io did not finish within {timeout:.0f} s (killed)"
    elif p.returncode != 0 or failed:
        res.error = f"qemu-io exit {p.returncode}: {' | '.join(failed or out.splitlines())[-300:]}"
    return res


def write_with_sync(url: str, size: int, timeout: float, chunk: int = CHUNK) -> LoadResult:
    """Write `size` bytes of 0xab in `chunk` commands, a flush (SYNCHRONIZE CACHE) after each."""
    cmds: list[str] = []
    for off in range(0, size, chunk):
        cmds += [f"write -P 0xab {off} {min(chunk, size - off)}", "flush"]
    res = qemu_io(url, cmds, f"write {size / GIB:g} GiB, {chunk // MIB} MiB + "
                  "SYNCHRONIZE CACHE each", size, timeout)
    res.ios = len(cmds) // 2
    return res


def read_back(url: str, size: int, timeout: float, chunk: int = CHUNK) -> LoadResult:
    """Read `size` bytes back in `chunk` commands, checking they are all 0xab."""
    cmds = [f"read -P 0xab {off} {min(chunk, size - off)}" for off in range(0, size, chunk)]
    return qemu_io(url, cmds, f"read {size / GIB:g} GiB back cold, {chunk // MIB} MiB",
                   size, timeout)


def iscsi_perf(urls: list[str], seconds: int, *, depth: int = 32, blocks: int = 8,
               random_: bool = True) -> LoadResult:
    """One iscsi-perf per URL at once (initiator names bench-initiator<i>); IOPS summed."""
    args = ["-m", str(depth), "-b", str(blocks), *(["-r"] if random_ else [])]
    procs = [spawn(["iscsi-perf", "-i", initiator_iqn(i), *args, "-t", str(seconds), u],
                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   text=True) for i, u in enumerate(urls)]
    t0 = time.monotonic()
    each: list[float | None] = []
    errors = []
    for p in procs:
        out, finished = _wait(p, max(1.0, seconds + 30 - (time.monotonic() - t0)))
        text = out.replace("\r", "\n")
        m = PERF_AVG.findall(text)
        if not finished or p.returncode != 0 or not m or "finished." not in text:
            each.append(None)
            tail = " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[-200:]
            errors.append(f"iscsi-perf exit {p.returncode}: {tail}")
        else:
            each.append(float(m[-1][0]))
    iops = sum(x for x in each if x)
    size = blocks * 512
    what = (f"{len(urls)} x iscsi-perf QD{depth} {size // 1024} KiB "
            f"{'random' if random_ else 'sequential'} reads")
    return LoadResult(what, int(iops * seconds * size), int(iops * seconds), float(seconds),
                      "; ".join(errors) or None, {"iops_each": each})


# -- the probe processes' entry point -----------------------------------------------------

if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "probe-send":
        probe_send(rest[0], int(rest[1]), int(rest[2]), float(rest[3]))
    elif cmd == "probe-recv":
        probe_recv(rest[0], int(rest[1]), float(rest[2]))
    else:
        sys.exit(f"benchkit: unknown command {cmd!r}")
