# tests/test_daemon.py - the daemon as a user runs it: `netstore serve` in a
# subprocess, its ready line, control socket, SIGHUP reloads and clean stops;
# and the control socket protocol on its own.
"""Tests for netstore.daemon and netstore.control."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.control import (
    ControlError,
    DaemonAlreadyRunning,
    DaemonNotRunning,
    bind_control_socket,
    request,
    serve_control,
)
from netstore.daemon import ready_line
from tests.harness import netstore_command, netstore_env

ONE = """
[[iscsi.targets]]
iqn = "iqn.2026-11.org.netstore:one"
luns = ["one.img"]
"""
TWO = (
    ONE
    + """
[[iscsi.targets]]
iqn = "iqn.2026-11.org.netstore:two"
luns = ["two.img"]
alias = "second"
"""
)


IMAGES = {"one.img": 8 << 20, "two.img": 4 << 20}


def target_names(status: dict) -> dict[str, bool]:
    return {t["iqn"]: t.get("accepting", True) for t in status["iscsi"]["targets"]}


def test_ready_line_socket_and_status(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    # no [[switches]]: the default switch sw0, without ports
    assert d.ready_line == f"netstore ready iscsi=127.0.0.1:{d.port} switch=sw0"
    assert d.port > 0
    sock = d.state_dir / "netstore.sock"
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert (d.state_dir / "media").is_dir()
    status = d.status()
    assert status["pid"] == d.proc.pid
    assert status["config"] == str(d.config_path)
    assert status["state_dir"] == str(d.state_dir)
    assert target_names(status) == {"iqn.2026-11.org.netstore:one": True}
    assert status["iscsi"]["portals"] == [f"127.0.0.1:{d.port}"]
    # The portal accepts TCP connections.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5):
        pass
    assert d.stop() == 0
    assert not sock.exists(), "a clean stop removes the control socket"


def test_ready_line_names_every_switch() -> None:
    switches = {"sw0": [], "lab": [("vm1", "udp", "127.0.0.1:40001"),
                                   ("vde", "vde", "/run/lab.vde")]}
    assert ready_line([("127.0.0.1", 3260), ("::1", 3261)], switches) == (
        "netstore ready iscsi=127.0.0.1:3260 iscsi=[::1]:3261 switch=sw0 "
        "switch=lab:vm1=127.0.0.1:40001 switch=lab:vde=/run/lab.vde")
    assert ready_line([("127.0.0.1", 3260)], {}) == "netstore ready iscsi=127.0.0.1:3260"


def test_status_table_output(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    out = subprocess.run(
        netstore_command("status", "--config", str(d.config_path)),
        capture_output=True,
        text=True,
        timeout=15,
        env=netstore_env({"COLUMNS": "200"}),
    )
    assert out.returncode == 0, out.stderr
    assert "iqn.2026-11.org.netstore:one" in out.stdout
    assert "sessions" in out.stdout and "connections" in out.stdout


def test_sighup_adds_target_and_survives_a_broken_file(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    d.reload(TWO)
    d.wait_for_log("configuration reloaded")
    assert target_names(d.status()) == {
        "iqn.2026-11.org.netstore:one": True,
        "iqn.2026-11.org.netstore:two": True,
    }
    # A broken file: logged, the old configuration stays in force.
    d.reload(TWO + "\n[iscsi]\nbogus = 1\n")
    log = d.wait_for_log("configuration refused")
    assert "expected" in log.split("configuration refused", 1)[1].splitlines()[0]
    assert d.running
    # (`netstore status --config` would refuse the broken file; ask the socket.)
    assert len(target_names(request(d.state_dir, "status"))) == 2
    # Removing a target: it stays listed but refuses new logins.
    d.reload(ONE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if target_names(d.status()).get("iqn.2026-11.org.netstore:two") is not True:
            break
        time.sleep(0.05)
    assert target_names(d.status()).get("iqn.2026-11.org.netstore:two") is False
    assert d.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_within_5s(netstore_daemon, sig: int) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    # An initiator that connected and then went quiet must not hold the stop up.
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    try:
        time.sleep(0.1)
        t0 = time.monotonic()
        assert d.stop(sig, timeout=5.0) == 0
        assert time.monotonic() - t0 < 5.0
    finally:
        idle.close()
    assert "stopped" in d.stderr()


def test_default_config_serves_with_no_file(tmp_path: Path) -> None:
    # The defaults listen on 127.0.0.1:3260; only check when that port is free.
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 3260))
        except OSError:
            pytest.skip("port 3260 is in use on this machine")
    proc = subprocess.Popen(
        netstore_command("serve"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in netstore_env().items() if k != "NETSTORE_CONFIG"},
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line == "netstore ready iscsi=127.0.0.1:3260 switch=sw0\n"
        assert (tmp_path / "netstore-state" / "netstore.sock").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_daemon_on_same_state_dir_is_refused(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    out = subprocess.run(
        netstore_command("serve", "--config", str(d.config_path)),
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=20,
        env=netstore_env(),
    )
    assert out.returncode == 1
    assert "another netstore daemon is running" in out.stderr
    assert out.stdout == ""
    assert d.running and d.status()["pid"] == d.proc.pid


def test_portal_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "c.toml").write_text(f'[iscsi]\nportals = ["127.0.0.1:{port}"]\n')
        out = subprocess.run(
            netstore_command("serve", "--config", "c.toml"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
            env=netstore_env(),
        )
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("netstore:")]
    assert len(errors) == 1 and str(port) in errors[0], out.stderr
    assert "ready" not in out.stdout
    assert not (tmp_path / "netstore-state" / "netstore.sock").exists()


def test_stale_socket_is_replaced(netstore_daemon, tmp_path: Path) -> None:
    state = tmp_path / "netstore-state"
    state.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state / "netstore.sock"))
    stale.close()  # the file stays, nobody listens: a killed daemon's leftover
    d = netstore_daemon(ONE, images=IMAGES)
    assert d.status()["pid"] == d.proc.pid


def test_killed_daemon_leaves_a_socket_the_next_one_replaces(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    d.kill()
    assert (d.state_dir / "netstore.sock").exists()
    d2 = netstore_daemon(ONE, images=IMAGES, name="again")
    assert d2.status()["pid"] == d2.proc.pid


def test_control_socket_survives_bad_requests(netstore_daemon) -> None:
    d = netstore_daemon(ONE, images=IMAGES)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(d.state_dir / "netstore.sock"))
        f = s.makefile("rwb")

        def ask(line: bytes) -> dict:
            f.write(line + b"\n")
            f.flush()
            return json.loads(f.readline())

        assert ask(b"{not json")["ok"] is False
        assert "unknown op" in ask(b'{"op": "nope"}')["error"]
        assert ask(b"[1, 2]")["ok"] is False
        assert ask(b'{"op": "status", "bogus": 1}')["ok"] is False
        answer = ask(b'{"op": "status"}')
        assert answer["ok"] is True and answer["result"]["pid"] == d.proc.pid


# --- the control socket in-process ------------------------------------------


async def test_control_server_and_client(tmp_path: Path) -> None:
    path = tmp_path / "netstore.sock"
    listener = bind_control_socket(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def fail() -> None:
        raise ValueError("refused, as asked")

    handlers = {"echo": lambda **kw: kw, "fail": fail, "boom": lambda: 1 / 0}
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, listener, handlers)
        assert await trio.to_thread.run_sync(lambda: request(tmp_path, "echo", a=1)) == {"a": 1}
        with pytest.raises(ControlError, match="refused, as asked"):
            await trio.to_thread.run_sync(lambda: request(tmp_path, "fail"))
        with pytest.raises(ControlError, match="internal error in boom"):
            await trio.to_thread.run_sync(lambda: request(tmp_path, "boom"))
        with pytest.raises(DaemonAlreadyRunning):
            bind_control_socket(path)
        nursery.cancel_scope.cancel()


def test_client_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no netstore daemon is running"):
        request(tmp_path, "status")


def test_client_with_too_long_a_path(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="longer than 107 bytes"):
        request(tmp_path / ("x" * 120), "status")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")), max_size=8))
def test_control_garbage_lines_get_answers_and_the_connection_stays(lines: list[bytes]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="ns-ctl-") as tmp:
            path = Path(tmp) / "netstore.sock"
            listener = bind_control_socket(path)
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_control, listener, {"status": lambda: "fine"})
                stream = await trio.open_unix_socket(str(path))
                async with stream:
                    expected = 0
                    for line in lines:
                        await stream.send_all(line + b"\n")
                        expected += bool(line.strip())
                    await stream.send_all(b'{"op": "status"}\n')
                    buf = b""
                    with trio.fail_after(5):
                        while buf.count(b"\n") < expected + 1:
                            buf += await stream.receive_some(65536)
                    answers = [json.loads(x) for x in buf.splitlines()]
                    assert len(answers) == expected + 1
                    assert all(isinstance(a["ok"], bool) for a in answers)
                    assert answers[-1] == {"ok": True, "result": "fine"}
                nursery.cancel_scope.cancel()

    trio.run(main)
