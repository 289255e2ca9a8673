# tests/conftest.py - shared fixtures: a real `netstore serve` subprocess on a
# free port in a temp directory, for end-to-end tests (libiscsi, qemu, garbage
# over sockets). The daemon's stderr goes to a file and is shown with any
# failing test; teardown always stops it, killing it if it will not stop.
"""Shared pytest fixtures for netstore."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

READY = "netstore ready"
# Start-up is sub-second; a loaded CI machine gets a generous bound.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def netstore_command(*args: str) -> list[str]:
    """argv running the netstore CLI of this checkout with this interpreter."""
    return [sys.executable, "-m", "netstore", *args]


class NetstoreDaemon:
    """A running ``netstore serve`` subprocess.

    Attributes:
        port: the iSCSI port of its first portal (as the ready line reports it).
        portals: every ``host:port`` of the ready line.
        state_dir: its state directory (media under ``state_dir / "media"``).
        config_path: the configuration file it was started with.
        proc: the subprocess.Popen.
        workdir: its current directory (the test's temp directory).
    """

    def __init__(self, workdir: Path, config_path: Path, state_dir: Path, name: str) -> None:
        self.workdir = workdir
        self.config_path = config_path
        self.state_dir = state_dir
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.portals: list[str] = []
        self.port = 0
        self.ready_line = ""
        self.proc: subprocess.Popen[bytes] | None = None
        # Turns a test's config text into the file's text (placeholders, portal).
        self.render: Callable[[str], str] = lambda text: text

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the daemon and wait for its ready line; fail the test with its stderr if not."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                netstore_command("serve", "--config", str(self.config_path)),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.stdout_path.read_text(errors="replace").partition("\n")
            if line[1] and line[0].startswith(READY):
                self.ready_line = line[0]
                self.portals = [
                    w[len("iscsi=") :] for w in line[0].split() if w.startswith("iscsi=")
                ]
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
        """Send ``sig`` and wait for the exit status; kill it (and fail) past ``timeout``."""
        assert self.proc is not None
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

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- looking at it -------------------------------------------------------
    def stderr(self) -> str:
        """Everything the daemon logged so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in the daemon's stderr; returns the whole log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.stderr()
            if text in log:
                return log
            time.sleep(0.02)
        pytest.fail(
            f"{text!r} not logged within {timeout} s; stderr:\n{self.stderr()}", pytrace=False
        )

    def status(self) -> dict[str, Any]:
        """``netstore status --json`` against this daemon."""
        out = subprocess.run(
            netstore_command("status", "--json", "--config", str(self.config_path)),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert out.returncode == 0, f"netstore status failed ({out.returncode}): {out.stderr}"
        return json.loads(out.stdout)

    def reload(self, config_text: str | None = None) -> None:
        """Optionally rewrite the config file (placeholders as at start), then SIGHUP."""
        assert self.proc is not None
        if config_text is not None:
            self.config_path.write_text(self.render(config_text))
        self.proc.send_signal(signal.SIGHUP)

    def url(self, iqn: str, lun: int | None = 0, *, user: str = "", secret: str = "") -> str:
        """An ``iscsi://`` URL for libiscsi and qemu (CHAP as ``user%secret@``)."""
        cred = f"{user}%{secret}@" if user else ""
        tail = f"/{iqn}/{lun}" if lun is not None else f"/{iqn}"
        return f"iscsi://{cred}127.0.0.1:{self.port}{tail}"


def _with_portal(text: str, portal: str) -> str:
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


DaemonFactory = Callable[..., NetstoreDaemon]


@pytest.fixture
def netstore_daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DaemonFactory]:
    """A factory starting ``netstore serve`` daemons, stopped at teardown.

    ``netstore_daemon(config_text="", images={"disk.img": 64 << 20})`` writes
    the images (sparse files under ``<tmp>/netstore-state/media``), then the
    config, then starts the daemon and waits for its ready line. In the text,
    ``{port}`` is replaced by a free port, ``{state_dir}``, ``{media}`` and
    ``{tmp}`` by those directories; without any ``portals`` the daemon listens
    on 127.0.0.1 port 0 (the kernel picks; ``.port`` tells which). Without a
    ``[daemon] state_dir`` the state lives in ``<tmp>/netstore-state``.
    """
    started: list[NetstoreDaemon] = []
    request.node._netstore_daemons = started  # shown by pytest_runtest_makereport

    def start(
        config_text: str = "",
        *,
        images: dict[str, int] | None = None,
        name: str | None = None,
        timeout: float = START_TIMEOUT_S,
    ) -> NetstoreDaemon:
        name = name or f"daemon{len(started)}"
        workdir = tmp_path
        state_dir = workdir / "netstore-state"
        media = state_dir / "media"
        media.mkdir(parents=True, exist_ok=True)
        for image, size in (images or {}).items():
            with open(media / image, "ab") as f:
                f.truncate(size)
        port = str(free_port())

        def render(text: str) -> str:
            text = (
                text.replace("{port}", port)
                .replace("{state_dir}", str(state_dir))
                .replace("{media}", str(media))
                .replace("{tmp}", str(workdir))
            )
            return _with_portal(text, "127.0.0.1:0")

        config_path = workdir / f"{name}.toml"
        config_path.write_text(render(config_text))
        daemon = NetstoreDaemon(workdir, config_path, state_dir, name)
        daemon.render = render
        started.append(daemon)
        daemon.start(timeout)
        return daemon

    yield start
    for daemon in started:
        if daemon.running:
            try:
                daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                daemon.proc.wait(STOP_TIMEOUT_S)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
            daemon.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach every daemon's stderr to a failing test's report."""
    report = yield
    if report.failed:
        for daemon in getattr(item, "_netstore_daemons", []):
            report.sections.append(
                (f"netstore daemon {daemon.stdout_path.stem} stderr", daemon.stderr())
            )
    return report
