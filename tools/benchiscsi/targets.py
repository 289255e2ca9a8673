# tools/benchiscsi/targets.py - the targets of tools/bench-iscsi: Server (a
# process started in its own group, ready when it prints a marker, stopped
# with SIGTERM then SIGKILL, the pids it leaves behind remembered by start
# time), Meter (a target's processes and their roles, with a
# benchkit.CpuWindow), netstore and tgt (through anchor-tgt) started and all
# of them stopped; free ports and the image file.
"""Start, measure and stop the targets of tools/bench-iscsi: netstore and tgt."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchkit as bk

from benchiscsi.model import MIB, log

REPO = Path(__file__).resolve().parents[2]
TGT_IQN = "iqn.2026-11.org.anchor:tgt"
NETSTORE_IQN = f"{bk.BASE_IQN}:bench"


class Meter:
    """The processes of one target, and their CPU over a run (benchkit.CpuWindow)."""

    def __init__(self, target: str, pids: Callable[[], list[int]],
                 role: Callable[[int], str] = lambda _pid: "tgtd") -> None:
        self.target = target
        self._pids = pids
        self._role = role
        self.roles: dict[int, str] = {}  # every process seen, with its role when first seen
        self.window = bk.CpuWindow(self.pids)

    def pids(self) -> list[int]:
        pids = self._pids()
        for p in pids:
            if p not in self.roles:
                self.roles[p] = self._role(p)
        return pids

    def role(self, pid: int) -> str:
        return self.roles.get(pid) or self._role(pid)


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    term_group: bool = True  # SIGTERM the whole process group (else the process alone)
    kill_after: list[int] = field(default_factory=list)  # pids SIGKILLed after the stop
    _born: dict[int, str] = field(default_factory=dict)  # their start times: no reused pid is hit

    def remember(self, pids: list[int]) -> None:
        """Processes to SIGKILL after the stop, should they outlive it."""
        for p in pids:
            if (born := _start_time(p)) is not None:
                self._born[p] = born
                if p not in self.kill_after:
                    self.kill_after.append(p)

    def left(self) -> list[int]:
        """The remembered processes still alive (and still the same processes)."""
        return [p for p in self.kill_after
                if bk.alive(p) and _start_time(p) == self._born.get(p)]

    def start(self, argv: list[str], marker: str, timeout: float,
              env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: stopped as a whole
            env=env,
        )

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if len(self.lines) > 2000:
                    del self.lines[:1000]
                if line.startswith(marker):
                    self.ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return
            if self.proc.poll() is not None:
                break
        rc = self.proc.poll()
        self.stop()
        tail = "\n    ".join(self.lines[-15:])
        raise RuntimeError(
            f"{self.name} did not print {marker!r} within {timeout:.0f} s"
            f" (exit status {rc}); last output:\n    {tail}"
        )

    def stop(self) -> None:
        """SIGTERM the process group (or, term_group False, the process: a script
        that stops its own children on SIGTERM, as anchor-tgt does), wait up to
        `grace`, then SIGKILL whatever is left of the group and of `kill_after`.

        tgtd ignores SIGTERM while it has targets; anchor-tgt's trap deletes
        them first. If it does not end in time, the SIGKILL to the group (tgtd
        is in it) and to the tgtd pids (kill_after) does."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                (os.killpg if self.term_group else os.kill)(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(self.grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.left():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5.0
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (ticks after boot): with the pid, names one process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()[19]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_image(path: Path, size: int) -> None:
    """A sparse file of `size` bytes whose every MiB holds non-zero data."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, MIB):
            f.write(block[: min(len(block), size - off)])
        f.flush()
        os.fsync(f.fileno())


# -- starting and stopping the targets ------------------------------------------------------


def start_tgt(args: argparse.Namespace, image: Path, servers: dict[str, Server]) -> Meter:
    anchor = args.anchor.resolve()
    s = Server("tgt", f"iscsi://127.0.0.1:{args.tgt_port}/{TGT_IQN}/1", grace=15.0,
               term_group=False)
    servers["tgt"] = s  # before it starts: an interrupt now still stops it
    log(f"starting tgt on 127.0.0.1:{args.tgt_port} ({anchor}) ...")
    s.start([str(anchor), str(image), str(args.tgt_port)], "anchor-tgt ready", 20.0)
    assert s.proc is not None
    ours = set(bk.descendants(s.proc.pid))
    tgtd = bk.pgrep_exact("tgtd")
    s.remember([p for p in tgtd if p in ours])
    if not s.kill_after:
        s.stop()
        raise RuntimeError(f"anchor-tgt is ready but no tgtd of it is found (pgrep -x tgtd: {tgtd})")
    if len(s.kill_after) != len(tgtd):
        s.stop()
        raise RuntimeError(f"other tgtd processes run beside this one: {sorted(set(tgtd) - ours)}")
    pids = list(s.kill_after)
    log(f"    tgtd pid(s) {', '.join(map(str, pids))}")
    return Meter("tgt", lambda: [p for p in pids if bk.alive(p)])


def start_netstore(args: argparse.Namespace, image: Path, tmp: Path,
                   servers: dict[str, Server]) -> Meter:
    port = free_port(args.port)
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    cfg = tmp / "netstore.toml"
    cfg.write_text(bk.config_text(state, [image], probe_switch=False, workers=args.workers,
                                  portal=f"127.0.0.1:{port}", names=["bench"]))
    env = None
    if args.netstore is None:  # this checkout's netstore, whatever is installed
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    command = args.netstore.split() if args.netstore else [sys.executable, "-m", "netstore"]
    s = Server("netstore", f"iscsi://127.0.0.1:{port}/{NETSTORE_IQN}/0")
    servers["netstore"] = s  # before it starts: an interrupt now still stops it
    log(f"starting netstore on 127.0.0.1:{port or '(any port)'}"
        f" (workers {'default' if args.workers is None else args.workers}) ...")
    s.start([*command, "serve", "--config", str(cfg)], "netstore ready", args.start_timeout,
            env=env)
    assert s.proc is not None
    ready = next((ln for ln in s.lines if ln.startswith("netstore ready")), "")
    portals = bk.Ready.parse(ready).portals
    if portals:  # the port it really listens on (--port 0: one the kernel chose)
        s.url = f"iscsi://{portals[0]}/{NETSTORE_IQN}/0"
    serve = s.proc.pid
    meter = Meter("netstore", lambda: [serve, *bk.descendants(serve)] if bk.alive(serve) else [],
                  lambda pid: bk.netstore_role(pid, serve))
    meter.pids()
    return meter


def stop_all(servers: dict[str, Server], meters: dict[str, Meter], tgt: bool) -> list[str]:
    """Stop every target; kill whatever of theirs is still alive. Returns complaints."""
    problems = []
    for name, s in servers.items():
        if name == "netstore" and name in meters:  # its children, should the supervisor not end them
            s.remember(meters[name].pids())
        s.stop()
        if left := s.left():
            problems.append(f"{name}: processes {left} are still alive after SIGKILL")
    if tgt and (stray := bk.pgrep_exact("tgtd")):
        problems.append(f"tgtd still runs after the stop: pids {stray}")
    return problems

