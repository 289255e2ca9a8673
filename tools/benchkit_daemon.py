# tools/benchkit_daemon.py - the daemon of the benchmark tools (part of
# benchkit, which re-exports all of it): target and initiator names, the
# config of a daemon with a probe switch (two udp ports) and targets on image
# files, and a `netstore serve` subprocess (ready line parsed, pids of it and
# its descendants, stopped as a process group).
"""A `netstore serve` of a tree for the benchmarks: its config, its ready line, its processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit_children import end, spawn
from benchkit_cpu import descendants

REPO = Path(__file__).resolve().parents[1]
BASE_IQN = "iqn.2026-11.org.netstore"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def target_iqn(i: int, names: list[str] | None = None) -> str:
    """Target i: <base>:bench<i>, or <base>:<names[i]> when names are given."""
    return f"{BASE_IQN}:{names[i] if names else f'bench{i}'}"


def initiator_iqn(i: int) -> str:
    return f"{BASE_IQN}:bench-initiator{i}"


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
