"""Fixtures for the end-to-end tests: real `netstore serve` daemons, real peers.

tests/conftest.py's ``netstore_daemon`` is function-scoped; these tests start
one daemon per module (the garbage tests feed the same live daemon many
connections, and the peers' runs are slow enough already), so they use the
module-scoped ``e2e_daemon`` factory below. It starts ``python -m netstore serve
--config FILE`` on a free 127.0.0.1 port, waits for the ``netstore ready`` line
(20 s), and on teardown sends SIGTERM, then SIGKILL. A failing test shows the
daemon's stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

READY = "netstore ready"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
REPO = Path(__file__).resolve().parents[2]
SHARED_TOOLS = REPO.parent / "shared" / "tools"


def need(*tools: str) -> None:
    """Skip the test when a peer binary is not installed."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (Debian packages libiscsi-bin, qemu-utils, "
                "qemu-block-extra)"
            )


def run(argv: list[str], timeout: float = 60.0, **kw) -> subprocess.CompletedProcess[str]:
    """Run a peer tool, bounded in time; a hang fails the test with what it printed."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
        )
    except subprocess.TimeoutExpired as e:
        out = (
            (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        )
        err = (
            (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        )
        pytest.fail(
            f"{' '.join(argv)} did not finish within {timeout} s\nstdout: {out}\nstderr: {err}",
            pytrace=False,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pattern(path: Path, size: int, seed: int) -> bytes:
    """Fill `path` with `size` deterministic pseudo-random bytes; return them."""
    import random

    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


class Daemon:
    def __init__(self, workdir: Path, config_text: str, name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.state_dir = workdir / f"{name}-state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(
            config_text.replace("{port}", str(self.port))
            .replace("{state_dir}", str(self.state_dir))
            .replace("{tmp}", str(workdir))
        )
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netstore", "serve", "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            first = self.stdout_path.read_text(errors="replace").partition("\n")
            if first[1] and first[0].startswith(READY):
                m = re.search(r"iscsi=[^\s:]+:(\d+)", first[0])
                if m:
                    self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                pytest.fail(
                    f"netstore serve exited with status {self.proc.returncode} before it was "
                    f"ready; stderr:\n{self.stderr()}",
                    pytrace=False,
                )
            time.sleep(0.05)
        self.kill()
        pytest.fail(
            f"netstore serve not ready within {START_TIMEOUT_S} s; stderr:\n{self.stderr()}",
            pytrace=False,
        )

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The current length of the log, to look only at what follows."""
        return len(self.stderr())

    def log_since(self, mark: int) -> str:
        return self.stderr()[mark:]

    def wait_log(self, mark: int, pattern: str, timeout: float = 5.0) -> str:
        """Wait until a line logged after `mark` matches the regex `pattern`."""
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

    def url(
        self,
        iqn: str | None = None,
        lun: int | None = 0,
        *,
        user: str = "",
        secret: str = "",
        args: str = "",
    ) -> str:
        cred = f"{user}%{secret}@" if user else ""
        tail = "" if iqn is None else (f"/{iqn}" + ("" if lun is None else f"/{lun}"))
        return f"iscsi://{cred}127.0.0.1:{self.port}{tail}" + (f"?{args}" if args else "")


DaemonFactory = Callable[..., Daemon]
_ALL: list[Daemon] = []


@pytest.fixture(scope="module")
def e2e_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    """Factory: ``e2e_daemon(config_text, name=...)`` -> a started Daemon.

    In the text, ``{port}`` becomes a free port, ``{state_dir}`` the daemon's
    state directory and ``{tmp}`` the module's temp directory (create images
    there before calling). All daemons of the module stop at its end.
    """
    workdir = tmp_path_factory.mktemp("e2e")
    started: list[Daemon] = []

    def start(config_text: str, *, name: str | None = None) -> Daemon:
        d = Daemon(workdir, config_text, name or f"daemon{len(started)}")
        started.append(d)
        _ALL.append(d)
        d.start()
        return d

    start.tmp = workdir  # type: ignore[attr-defined]
    yield start
    for d in started:
        d.stop()
        _ALL.remove(d)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Show the stderr of every live e2e daemon with a failing test."""
    report = yield
    if report.failed:
        for d in _ALL:
            report.sections.append((f"netstore {d.name} stderr (tail)", d.stderr()[-20000:]))
    return report
