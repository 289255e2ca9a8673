# tests/e2e/test_vm_lifecycle.py - a headless VM's life as the daemon runs it,
# with the real QEMU (TCG) and the test guest:
# - an immutable disk: a write survives `vm reset` (a guest reboot; the layer
#   is not reset) and is gone after `vm stop` + `vm start`;
# - pause/resume (`vm list` shows paused), `vm console` from a pipe, `vm
#   screenshot` writes a PNG, `vm stop --timeout 0 --force` powers off at once;
# - kill -9 of its QEMU: the VM shows aborted with why, its target's session
#   ends, and a new `vm start` works;
# - kill -9 of the daemon: its QEMU dies with it (no VM runs without a
#   supervisor), and the next daemon shows the VM aborted.
"""The life of a VM the daemon runs: reset, pause, console, kills."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import pytest

from tests.e2e.guest import HeadlessGuest, build_guest, have_qemu
from tests.e2e.test_vm_guests import TCG, cli_for, make_vm
from tests.harness import netstore_command

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

ZEROS = hashlib.sha256(bytes(1 << 20)).hexdigest()


def qemu_pid(cli, vm: str) -> int:  # type: ignore[no-untyped-def]
    return int(cli.json("vm", "info", vm)["runtime"]["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_immutable_disk_keeps_a_write_across_reset_not_across_power_cycle(
        netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    daemon = netstore_daemon(TCG)
    cli = cli_for(tmp_path, daemon)
    make_vm(cli, "imm", "192.0.2.1/24", build_guest(), disk_type="immutable")
    g = HeadlessGuest(daemon.state_dir, "imm")
    try:
        cli.ok("vm", "start", "imm")
        line = g.wait_for("netstore-guest: imm: disk sda")
        assert ZEROS in line, line
        g.wait_for("netstore-guest: imm: ready")
        mark = os.urandom(8).hex()
        out = g.run(f"echo {mark} | dd of=/dev/sda bs=512 conv=fsync 2>/dev/null")
        assert out[-1] == "rc=0", out
        written = g.run("dd if=/dev/sda bs=1M count=1 2>/dev/null | sha256sum")[0].split()[0]
        assert written != ZEROS

        seen = len(g.console_lines())
        cli.ok("vm", "reset", "imm")  # a guest reboot: the immutable layer stays
        line = g.wait_for("netstore-guest: imm: disk sda", start=seen)
        assert written in line, line
        g.wait_for("netstore-guest: imm: ready", start=seen)

        assert cli.json("vm", "stop", "imm")["state"] == "poweroff"
        g.restarted()
        cli.ok("vm", "start", "imm")  # a power-on: the layer is reset
        line = g.wait_for("netstore-guest: imm: disk sda")
        assert ZEROS in line, line
        cli.ok("vm", "stop", "imm", "--timeout", "0", "--force")
        assert cli.json("vm", "list")[0]["state"] == "poweroff"
    finally:
        g.close()


def test_pause_console_screenshot_kills(netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    daemon = netstore_daemon(TCG)
    cli = cli_for(tmp_path, daemon)
    make_vm(cli, "life", "192.0.2.1/24", build_guest())
    g = HeadlessGuest(daemon.state_dir, "life")
    try:
        cli.ok("vm", "start", "life")
        g.wait_for("netstore-guest: life: ready")
        assert "running already" in cli.refused("vm", "start", "life")

        cli.ok("vm", "pause", "life")
        assert cli.json("vm", "list")[0]["state"] == "paused"
        assert cli.json("vm", "info", "life")["runtime"]["status"] == "paused"
        cli.ok("vm", "resume", "life")
        assert cli.json("vm", "list")[0]["state"] == "running"

        # vm console from a pipe: what is typed reaches the guest's shell
        p = subprocess.run(netstore_command("vm", "console", "life"), cwd=cli.dir, env=cli.env,
                           input=b"echo console-$((6*7))\n", capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert b"console-42" in p.stdout, p.stdout

        png = tmp_path / "screen.png"
        cli.ok("vm", "screenshot", "life", str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # kill -9 of its QEMU: aborted, the session ends, a new start works
        def sessions() -> list:  # type: ignore[type-arg]
            return [s for s in cli.json("status")["iscsi"]["sessions"] if "vm.life" in str(s)]

        assert sessions()
        pid = qemu_pid(cli, "life")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: cli.json("vm", "list")[0]["state"] == "aborted", 10,
                   "the VM did not show aborted")
        info = cli.json("vm", "info", "life")
        assert "SIGKILL" in info["aborted"] and info["runtime"] is None, info
        wait_until(lambda: not sessions(), 10, "the VM's iSCSI session did not end")
        g.restarted()
        cli.ok("vm", "start", "life")
        g.wait_for("netstore-guest: life: ready")

        # kill -9 of the daemon: its QEMU goes with it; the next daemon says aborted
        pid = qemu_pid(cli, "life")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        wait_until(lambda: not alive(pid), 5, "QEMU outlived the daemon")
        daemon.start()
        row = cli.json("vm", "list")[0]
        assert row["state"] == "aborted", row
        assert "netstore serve that ran it ended" in cli.json("vm", "info", "life")["aborted"]
        g.restarted()
        cli.ok("vm", "start", "life")
        g.wait_for("netstore-guest: life: ready")
    finally:
        g.close()
