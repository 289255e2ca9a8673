# tools/benchnetem/harness.py - what the sections of tools/bench-netem run
# on: a daemon of this tree with one switch (benchkit.Netstore) and its CLI
# and control socket, flows (a sender and a receiver process across the
# switch, what they sent and got), the Bench (options, temporary directory,
# daemons started), binomial and drop checks, and a Poller of a link's
# counters.
"""The daemon, the flows across it and the Bench that the sections of tools/bench-netem share."""

from __future__ import annotations

import argparse
import array
import itertools
import json
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchkit as bk

from benchnetem.common import RX_MAC, TX_MAC, Section, binom_interval, frame_seq, frame_stamps

SCRIPT = Path(__file__).resolve().parents[1] / "bench-netem"  # runs the sender and receiver
ROOT = SCRIPT.parents[1]

# -- the daemon and its CLI ----------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return json.dumps(v)


def switch_toml(name: str, ports: list[dict[str, Any]], seed: int | None) -> str:
    lines = ["[[switches]]", f'name = "{name}"']
    if seed is not None:
        lines.append(f"seed = {seed}")
    for p in ports:
        lines += ["", "[[switches.ports]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in p.items()]
    return "\n".join(lines) + "\n"


def udp(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "udp", "local": "127.0.0.1:0", **kw}


class Daemon:
    """A `netstore serve` of this tree with one switch (benchkit.Netstore), and its CLI."""

    def __init__(self, tmp: Path, name: str, switch: str, ports: list[dict[str, Any]],
                 seed: int | None) -> None:
        self.name, self.switch = name, switch
        self.state = tmp / f"{name}-state"
        text = "\n".join([
            "[daemon]", f"state_dir = {json.dumps(str(self.state))}", 'log_level = "warning"',
            "", "[iscsi]", 'portals = ["127.0.0.1:0"]', "workers = 1", "",
            switch_toml(switch, ports, seed)])
        self.ns = bk.Netstore(tmp, text, name=name)
        self.ready = self.ns.start()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}

    def addr(self, port: str) -> tuple[str, int]:
        return self.ready.switch_ports[f"{self.switch}:{port}"]

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "netstore", "--config", str(self.ns.config_path), *args]

    def cli(self, *args: str, as_json: bool = False) -> Any:
        """Run the CLI; its JSON answer (as_json) or stdout; raises on a non-zero exit."""
        r = subprocess.run(self.argv(*(("--json",) if as_json else ()), *args), env=self.env,
                           cwd=self.ns.workdir, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"netstore {' '.join(args)}: exit {r.returncode}: "
                               f"{r.stderr.strip()}")
        return json.loads(r.stdout) if as_json else r.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return bk.spawn(self.argv(*args), env=self.env, cwd=self.ns.workdir,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)

    def control(self, op: str, **kw: Any) -> Any:
        """The control socket the CLI uses (for polling without a process per poll)."""
        from netstore.control import request

        return request(self.state, op, **kw)

    def link_row(self, port: str) -> dict[str, Any]:
        return next(r for r in self.control("link_show", switch=self.switch) if r["port"] == port)

    def counters(self, port: str, direction: str) -> dict[str, int]:
        row = self.link_row(port)
        return dict((row.get(direction) or {}).get("counters") or {})

    def stop(self) -> None:
        self.ns.stop()


# -- flows: a sender process and a receiver process across the switch ------------------------


@dataclass
class Flow:
    """What one flow gave: what was sent, and every frame received (arrival
    monotonic ns, kernel receive stamp ns (CLOCK_REALTIME), bytes)."""

    sent: int
    send: dict[str, Any]
    frames: list[tuple[int, int, bytes]]
    stamps: array.array | None  # mono, real per sequence number (log=True)
    size: int

    def firsts(self) -> dict[int, tuple[int, int, bytes]]:
        out: dict[int, tuple[int, int, bytes]] = {}
        for fr in self.frames:
            seq = frame_seq(fr[2])
            if seq is not None and seq not in out:
                out[seq] = fr
        return out

    def latencies(self) -> tuple[list[float], list[float]]:
        """One-way delays in ms of the first copy of each frame: user-space
        (monotonic at send .. after recv) and kernel (time_ns at send .. the
        kernel's receive stamp)."""
        user, kern = [], []
        for t, k, data in self.firsts().values():
            mono, real = frame_stamps(data)
            user.append((t - mono) / 1e6)
            if k:
                kern.append((k - real) / 1e6)
        return user, kern


class FlowRun:
    """A receiver on ``rx`` (announcing ``rx_mac``), then a sender on ``tx``."""

    def __init__(self, tmp: Path, tx: tuple[str, int], rx: tuple[str, int], *, count: int,
                 rate: int, burst: int = 1, size: int = 64, tx_mac: bytes = TX_MAC,
                 rx_mac: bytes = RX_MAC, keep: int = 0, log_stamps: bool = False,
                 max_seconds: float | None = None, drain: float = 0.5,
                 stop_within: float = 30.0) -> None:
        self.tmp, self.tx, self.rx = tmp, tx, rx
        self.count, self.rate, self.burst, self.size = count, rate, burst, size
        self.tx_mac, self.rx_mac, self.keep = tx_mac, rx_mac, keep
        self.max_seconds = max_seconds or (count / rate * 2 + 10)
        self.drain, self.stop_within = drain, stop_within
        n = next(_flow_ids)
        self.out = tmp / f"flow{n}.pickle"
        self.log = tmp / f"flow{n}.stamps" if log_stamps else None
        self.sender: subprocess.Popen[str] | None = None
        self.receiver: subprocess.Popen[str] | None = None

    def _tool(self, *args: object) -> subprocess.Popen[str]:
        return bk.spawn([sys.executable, str(SCRIPT), *map(str, args)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> FlowRun:
        self.receiver = self._tool(
            "_recv", "--to", f"{self.rx[0]}:{self.rx[1]}", "--mac", self.rx_mac.hex(),
            "--keep", self.keep, "--drain", self.drain, "--stop-within", self.stop_within,
            "--max-seconds", self.max_seconds + 60, "--out", self.out)
        assert self.receiver.stdout is not None
        r, _, _ = select.select([self.receiver.stdout], [], [], 10)
        if not r or self.receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("the receiver did not start")
        time.sleep(0.2)  # its announcement is learnt (MAC table, the port's peer)
        self.sender = self._tool(
            "_send", "--to", f"{self.tx[0]}:{self.tx[1]}", "--src", self.tx_mac.hex(),
            "--dst", self.rx_mac.hex(), "--count", self.count, "--rate", self.rate,
            "--burst", self.burst, "--size", self.size, "--max-seconds", self.max_seconds,
            *(("--log", self.log) if self.log else ()))
        return self

    def wait_sent(self, stop: bool = False) -> dict[str, Any]:
        assert self.sender is not None and self.sender.stdin is not None
        try:
            # stdin stays open until the sender is done: anything on it (EOF too) stops it
            if stop:
                self.sender.stdin.write("stop\n")
                self.sender.stdin.flush()
            self.sender.wait(self.max_seconds + 30)
        except subprocess.TimeoutExpired:
            bk.end(self.sender)
            raise RuntimeError("the sender did not finish") from None
        out, _ = self.sender.communicate(timeout=10)
        bk.end(self.sender)
        return json.loads(out.strip().splitlines()[-1])

    def finish(self, stop: bool = False) -> Flow:
        send = self.wait_sent(stop)
        assert self.receiver is not None
        try:
            self.receiver.communicate("stop\n", timeout=self.stop_within + 30)
        except subprocess.TimeoutExpired:
            bk.end(self.receiver)
            raise RuntimeError("the receiver did not finish") from None
        bk.end(self.receiver)
        with open(self.out, "rb") as f:
            frames = pickle.load(f)
        self.out.unlink()
        stamps = None
        if self.log is not None:
            stamps = array.array("q")
            stamps.frombytes(self.log.read_bytes())
            self.log.unlink()
        return Flow(send["sent"], send, frames, stamps, self.size)


_flow_ids = itertools.count(1)


def flow(tmp: Path, tx: tuple[str, int], rx: tuple[str, int], **kw: Any) -> Flow:
    run = FlowRun(tmp, tx, rx, **kw).start()
    return run.finish()


def lost_seqs(f: Flow) -> list[int]:
    got = f.firsts()
    return [s for s in range(f.sent) if s not in got]


# -- the bench ----------------------------------------------------------------------------------


class Bench:
    """What the sections share: the options, a temporary directory, the daemons started."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.quick = args.quick
        self.daemons: list[Daemon] = []

    def daemon(self, name: str, switch: str, ports: list[dict[str, Any]],
               seed: int | None = None) -> Daemon:
        d = Daemon(self.tmp, name, switch, ports, seed if seed is not None else self.args.seed)
        self.daemons.append(d)
        return d

    def stop_daemons(self) -> None:
        for d in self.daemons:
            d.stop()
        self.daemons.clear()

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def binomial_check(sec: Section, name: str, k: int, n: int, p: float) -> None:
    lo, hi = binom_interval(n, p)
    sec.check(name, f"{k}/{n} = {k / n:.3%}" if n else "no frames",
              f"{p:.0%}: {lo}..{hi} ({lo / max(n, 1):.2%}..{hi / max(n, 1):.2%}), 99 %",
              n > 0 and lo <= k <= hi, {"count": k, "n": n, "fraction": k / n if n else None,
                                        "interval": [lo, hi]})


def other_drops(sec: Section, f: Flow, emulated: int, what: str) -> None:
    """Frames lost besides those the link dropped (socket buffers, queues): should be none."""
    lost = len(lost_seqs(f))
    sec.check(f"{what}: frames lost outside the link", f"{lost - emulated} (lost {lost}, "
              f"link counted {emulated})", "0", lost == emulated,
              {"lost": lost, "link_counted": emulated})



# -- a link's counters, polled (sections isolation and rate) -------------------------------------


class Poller:
    """Polls `link_show` on the control socket every ``every`` s in a thread."""

    def __init__(self, d: Daemon, port: str, direction: str, every: float = 0.25) -> None:
        self.d, self.port, self.direction, self.every = d, port, direction, every
        self.samples: list[dict[str, int]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.d.counters(self.port, self.direction))
            except Exception:  # a poll that failed is only a missing sample
                self.errors += 1
            self._stop.wait(self.every)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def max_held(self) -> int:
        return max((s.get("held", 0) for s in self.samples), default=0)

