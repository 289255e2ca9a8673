# tests/harness.py - the one daemon harness of the test suite: a real
# `python -m netstore serve` subprocess importing this checkout (PYTHONPATH
# set to the repository root), its config written from a test's text with
# placeholders, started and waited for until its "netstore ready" line,
# asked over its control socket, stopped (SIGTERM, then SIGKILL); plus free
# ports and the netstore command line run the same way (Cli: on a state
# directory of its own). The fixtures built on it live in tests/conftest.py.
"""A ``netstore serve`` daemon for tests, and the netstore CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
READY = "netstore ready"
# Start-up is sub-second; a loaded machine (2 cores, many workers) gets a generous bound.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# How much of a daemon's log a failing test's report shows (its end).
REPORT_LOG_CHARS = 20000


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port nobody is bound to right now (another process may take it later)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def netstore_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a netstore subprocess: it imports this checkout, first."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath(), **(extra or {})}


def pythonpath() -> str:
    """$PYTHONPATH with the repository root first (added when it is not)."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts if parts[:1] == [str(REPO)] else [str(REPO), *parts])


def netstore_command(*args: str) -> list[str]:
    """argv running the netstore CLI with this interpreter (use with netstore_env())."""
    return [sys.executable, "-m", "netstore", *args]


def run_netstore(
    *args: str, cwd: Path | str | None = None, timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``netstore ARGS`` of this checkout, output captured as text."""
    return subprocess.run(
        netstore_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=env if env is not None else netstore_env(),
    )


def with_portal(text: str, portal: str) -> str:
    """Give a config text a portal when it has none."""
    if "portals" in text:
        return text
    line = f'portals = ["{portal}"]'
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip() == "[iscsi]":
            lines.insert(i + 1, line)
            return "\n".join(lines) + "\n"
    return f"[iscsi]\n{line}\n" + text


class Daemon:
    """One ``netstore serve`` subprocess of a test.

    Attributes:
        name: names its files in ``workdir`` (``<name>.toml``, ``.stdout``, ``.stderr``).
        workdir: its current directory, where its config file lies.
        state_dir: its state directory (media under ``state_dir / "media"``).
        config_path: the configuration file it runs with.
        port: the iSCSI port of its first portal (from the ready line once started;
            before, the free port ``{port}`` stands for).
        portals: every ``host:port`` of the ready line.
        ready_line: the whole first line it printed.
        proc: the subprocess.Popen, once started.
    """

    def __init__(self, workdir: Path, state_dir: Path, name: str) -> None:
        self.workdir = workdir
        self.state_dir = state_dir
        self.name = name
        self.config_path = workdir / f"{name}.toml"
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.port = free_port()
        self.portals: list[str] = []
        self.ready_line = ""
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration ---------------------------------------------------------
    def render(self, text: str) -> str:
        """A test's config text as the file says it.

        ``{port}`` becomes a free port, ``{state_dir}`` and ``{media}`` this
        daemon's state and media directories, ``{tmp}`` its workdir; a text
        without ``portals`` gets 127.0.0.1 port 0 (the kernel picks).
        """
        text = (
            text.replace("{port}", str(self.port))
            .replace("{state_dir}", str(self.state_dir))
            .replace("{media}", str(self.state_dir / "media"))
            .replace("{tmp}", str(self.workdir))
        )
        return with_portal(text, "127.0.0.1:0")

    def write_config(self, text: str) -> None:
        self.config_path.write_text(self.render(text))

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start it and wait for its ready line; fail the test with its log if none comes."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                netstore_command("serve", "--config", str(self.config_path)),
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=netstore_env(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first, newline, _ = self.stdout_path.read_text(errors="replace").partition("\n")
            if newline and first.startswith(READY):
                self.ready_line = first
                self.portals = [w[len("iscsi="):] for w in first.split() if w.startswith("iscsi=")]
                if self.portals:
                    self.port = int(self.portals[0].rpartition(":")[2])
                return
            if self.proc.poll() is not None:
                pytest.fail(
                    f"netstore serve exited with status {self.proc.returncode} before it was "
                    f"ready; stderr:\n{self.stderr()}",
                    pytrace=False,
                )
            time.sleep(0.02)
        self.kill()
        pytest.fail(
            f"netstore serve not ready within {timeout} s; stderr:\n{self.stderr()}", pytrace=False
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` and return the exit status; past ``timeout`` kill it and fail the test."""
        assert self.proc is not None, f"daemon {self.name} was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(
                    f"netstore serve did not stop within {timeout} s of {signal.Signals(sig).name}; "
                    f"stderr:\n{self.stderr()}",
                    pytrace=False,
                )
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL it if it still runs, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def shutdown(self) -> None:
        """Teardown: SIGTERM, then SIGKILL past the stop bound; never fails."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    alive = running

    def reload(self, config_text: str | None = None) -> None:
        """Optionally rewrite the config file (placeholders as at start), then SIGHUP."""
        assert self.proc is not None
        if config_text is not None:
            self.write_config(config_text)
        self.proc.send_signal(signal.SIGHUP)

    # -- its log ---------------------------------------------------------------
    def stderr(self) -> str:
        """Everything it logged so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The current length of the log, to look only at what follows."""
        return len(self.stderr())

    def log_since(self, mark: int) -> str:
        return self.stderr()[mark:]

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears anywhere in the log; returns the whole log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.stderr()
            if text in log:
                return log
            time.sleep(0.02)
        pytest.fail(f"{text!r} not logged within {timeout} s; stderr:\n{self.stderr()}",
                    pytrace=False)

    def wait_log(self, mark: int, pattern: str, timeout: float = 5.0) -> str:
        """Wait until a line logged after ``mark`` matches the regex ``pattern`` (any case)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.I)
        while True:
            text = self.log_since(mark)
            if any(rx.search(line) for line in text.splitlines()):
                return text
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no log line matching {pattern!r} within {timeout} s; logged since:\n{text}",
                    pytrace=False,
                )
            time.sleep(0.05)

    # -- talking to it ---------------------------------------------------------
    def request(self, op: str, **args: Any) -> Any:
        """One control-socket request (netstore.control.request); returns its result."""
        from netstore.control import request

        return request(self.state_dir, op, **args)

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """``netstore ARGS --config <its config>`` from its workdir."""
        return run_netstore(*args, "--config", str(self.config_path), cwd=self.workdir,
                            timeout=timeout)

    def status(self) -> dict[str, Any]:
        """``netstore status --json`` against it (fails the test if that fails)."""
        out = self.cli("status", "--json", timeout=15)
        assert out.returncode == 0, f"netstore status failed ({out.returncode}): {out.stderr}"
        return json.loads(out.stdout)

    def url(
        self, iqn: str | None = None, lun: int | None = 0, *, user: str = "", secret: str = "",
        args: str = "",
    ) -> str:
        """An ``iscsi://`` URL for libiscsi and qemu (CHAP as ``user%secret@``, ``?args``)."""
        cred = f"{user}%{secret}@" if user else ""
        tail = "" if iqn is None else f"/{iqn}" + ("" if lun is None else f"/{lun}")
        return f"iscsi://{cred}127.0.0.1:{self.port}{tail}" + (f"?{args}" if args else "")


class Cli:
    """The netstore CLI as a user runs it, on a state directory of its own.

    ``Cli(tmp_path)`` writes ``<tmp>/netstore.toml`` naming ``<tmp>/state`` and
    runs every command with ``NETSTORE_CONFIG`` set to it, from ``<tmp>``.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.config = tmp_path / "netstore.toml"
        self.config.write_text(f'[daemon]\nstate_dir = "{self.state}"\n')
        self.env = netstore_env({"NETSTORE_CONFIG": str(self.config)})

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_netstore(*args, cwd=self.dir, timeout=120, env=self.env)

    def ok(self, *args: str) -> str:
        p = self.run(*args)
        assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stdout}{p.stderr}"
        return p.stdout

    def json(self, *args: str):  # type: ignore[no-untyped-def]
        return json.loads(self.ok(*args, "--json"))

    def refused(self, *args: str) -> str:
        p = self.run(*args)
        assert p.returncode == 1, f"{args}: exit {p.returncode}\n{p.stdout}{p.stderr}"
        assert p.stderr.startswith("netstore: ") and p.stderr.count("\n") == 1, p.stderr
        assert p.stdout == ""
        return p.stderr


# Every daemon started and not yet torn down by its fixture: a failing test's
# report shows their logs (tests/conftest.py's pytest_runtest_makereport).
ACTIVE: list[Daemon] = []


class Daemons:
    """Starts daemons in one directory (a fixture's); ``shutdown_all()`` ends them.

    Calling it, ``daemons(config_text="", images={"disk.img": 64 << 20},
    name=None)`` writes the images (sparse files under the daemon's
    ``state_dir / "media"``), then the config (placeholders: Daemon.render),
    starts the daemon and waits for its ready line. ``tmp`` is the directory:
    tests put images there and name them ``{tmp}/...``.

    ``shared_state``: every daemon gets ``<tmp>/netstore-state``, where a
    config without ``[daemon] state_dir`` keeps its state anyway (one test's
    daemons, run one after another on the same state); otherwise each gets
    ``<tmp>/<name>-state`` (a module's daemons run side by side, their
    configs say ``state_dir = "{state_dir}"``).
    """

    def __init__(self, tmp: Path, *, shared_state: bool) -> None:
        self.tmp = tmp
        self.shared_state = shared_state
        self.started: list[Daemon] = []

    def __call__(
        self, config_text: str = "", *, images: dict[str, int] | None = None,
        name: str | None = None, timeout: float = START_TIMEOUT_S,
    ) -> Daemon:
        name = name or f"daemon{len(self.started)}"
        state_dir = self.tmp / ("netstore-state" if self.shared_state else f"{name}-state")
        media = state_dir / "media"
        media.mkdir(parents=True, exist_ok=True)
        for image, size in (images or {}).items():
            with open(media / image, "ab") as f:
                f.truncate(size)
        daemon = Daemon(self.tmp, state_dir, name)
        daemon.write_config(config_text)
        self.started.append(daemon)
        ACTIVE.append(daemon)
        daemon.start(timeout)
        return daemon

    def shutdown_all(self) -> None:
        for daemon in self.started:
            daemon.shutdown()
            ACTIVE.remove(daemon)


DaemonFactory = Callable[..., Daemon]


def report_sections(daemons: list[Daemon]) -> list[tuple[str, str]]:
    """The log of each daemon as a section of a failing test's report (its end)."""
    sections = []
    for d in daemons:
        log = d.stderr()
        cut = len(log) > REPORT_LOG_CHARS
        title = f"netstore daemon {d.name} stderr" + (" (its end)" if cut else "")
        sections.append((title, log[-REPORT_LOG_CHARS:]))
    return sections
