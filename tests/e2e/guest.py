# tests/e2e/guest.py - the test guest (tools/make-test-guest) booted on QEMU
# for end-to-end tests: built once per session into build/test-guest. Guest
# runs it itself with TCG (this machine's /dev/kvm does not run guests), its
# serial console on stdin/stdout (lines collected by a thread, commands
# written to it) and a QMP socket for the power button; HeadlessGuest talks
# to a VM the daemon runs (`vm start`): its console log and console socket.
"""Boot the netstore test guest under qemu-system-x86_64 and talk to it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness import REPO

GUEST_DIR = REPO / "build" / "test-guest"
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT_S = 120.0


def build_guest() -> Path:
    """vmlinuz and initrd.img of the test guest (built when missing or stale)."""
    p = subprocess.run([sys.executable, str(REPO / "tools" / "make-test-guest"), "--out",
                        str(GUEST_DIR)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return GUEST_DIR


def have_qemu() -> bool:
    return shutil.which(QEMU) is not None


class _Console:
    """Waiting for console lines and running shell commands on a guest's console."""

    name: str

    def console_lines(self) -> list[str]:
        raise NotImplementedError

    def ended(self) -> bool:
        raise NotImplementedError

    def say(self, command: str) -> None:
        raise NotImplementedError

    def wait_for(self, text: str, timeout: float = BOOT_TIMEOUT_S, start: int = 0) -> str:
        """The first console line from line ``start`` on holding ``text`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.console_lines()
            for line in lines[start:]:
                if text in line:
                    return line
            ended = self.ended()
            if time.monotonic() > deadline or ended:
                raise AssertionError(f"{self.name}: no {text!r} on the console within "
                                     f"{timeout:.0f} s (QEMU {'ended' if ended else 'runs'}); "
                                     "it said:\n" + "\n".join(lines[-40:]))
            self._pause()

    def _pause(self) -> None:
        time.sleep(0.1)

    def run(self, command: str, timeout: float = 60.0) -> list[str]:
        """Run ``command`` in the guest's shell; the console lines it printed,
        its exit status last (the marker is built by the shell, so the echo
        of the typed line never matches it)."""
        tag = os.urandom(6).hex()
        start = len(self.console_lines())
        self.say(f"{command}; printf 'netstore-guest: %s-%s rc=%s\\n' done {tag} $?")
        end_line = self.wait_for(f"netstore-guest: done-{tag} rc=", timeout, start)
        lines = self.console_lines()[start:]
        out = lines[:lines.index(end_line)]
        typed = [i for i, ln in enumerate(out) if tag in ln]  # the echo of the command
        if typed:
            out = out[typed[-1] + 1:]
        return [*out, end_line.rsplit(" ", 1)[1]]


class HeadlessGuest(_Console):
    """The test guest in a VM the daemon runs: its console log is read,
    commands go to its console socket (netstore.vm.files)."""

    def __init__(self, state_dir: Path, name: str) -> None:
        from netstore.vm.files import VmFiles

        self.name = name
        self.files = VmFiles(Path(state_dir), name)
        self._sock: socket.socket | None = None

    def console_lines(self) -> list[str]:
        try:
            text = self.files.console_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return []
        return [ln.rstrip("\r") for ln in text.split("\n")]

    def ended(self) -> bool:
        return False

    def say(self, command: str) -> None:
        for _ in range(2):  # a VM started again has a new console socket
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(self.files.console))
                # What the guest prints is read from the log; the socket's copy
                # must still be taken, or QEMU's writes to it (a byte each)
                # fill it and the guest's console stalls.
                threading.Thread(target=_discard, args=(self._sock,), daemon=True).start()
            try:
                self._sock.sendall(command.encode() + b"\n")
                return
            except OSError:
                self.close()
        raise AssertionError(f"{self.name}: its console socket takes nothing")

    def restarted(self) -> None:
        """The VM was started again: a new console (and a new log)."""
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _discard(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


class Guest(_Console):
    """One running guest: ``lines`` is its console so far."""

    def __init__(self, workdir: Path, name: str, argv: list[str]) -> None:
        """Run ``argv`` (a qemu-system command line without console or QMP
        options: TCG, the console on stdio and a QMP socket are added)."""
        self.name = name
        self.qmp_path = workdir / f"{name}.qmp"
        argv = [*argv, "-accel", "tcg", "-display", "none", "-monitor", "none",
                "-serial", "stdio", "-no-reboot",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=workdir)
        self.lines: list[str] = []
        self._ended = False  # its console closed (QEMU is gone)
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def booted(cls, workdir: Path, name: str, *, drives: list[str], append: str = "",
               memory_mb: int = 256, extra: list[str] | None = None) -> Guest:
        """The test guest with ``drives`` (iscsi:// URLs) on a virtio-scsi bus."""
        kernel = build_guest()
        argv = [QEMU, "-m", str(memory_mb), "-smp", "1",
                "-kernel", str(kernel / "vmlinuz"), "-initrd", str(kernel / "initrd.img"),
                "-append", f"console=ttyS0 panic=-1 quiet netstore.name={name} {append}",
                "-device", "virtio-scsi-pci,id=scsi0"]
        for i, url in enumerate(drives):
            argv += ["-drive", f"file={url},if=none,id=d{i},format=raw,cache=none",
                     "-device", f"scsi-hd,drive=d{i},bus=scsi0.0,scsi-id={i},lun=0"]
        return cls(workdir, name, [*argv, *(extra or [])])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def console_lines(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def ended(self) -> bool:
        return self._ended

    def _pause(self) -> None:
        with self._cond:
            self._cond.wait(0.5)

    def say(self, command: str) -> None:
        """Type a command on the guest's console."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def qmp(self, command: str, **arguments: object) -> dict:
        """One QMP command; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())  # the greeting
            for msg in ({"execute": "qmp_capabilities"},
                        {"execute": command, **({"arguments": arguments} if arguments else {})}):
                f.write(json.dumps(msg).encode() + b"\n")
                f.flush()
                while True:
                    answer = json.loads(f.readline())
                    if "return" in answer or "error" in answer:
                        break
            return answer

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:
            os.unlink(self.qmp_path)
        except FileNotFoundError:
            pass
