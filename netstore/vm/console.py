# netstore/vm/console.py - `netstore vm console NAME`: this terminal joined
# to a headless VM's serial console (the unix socket QEMU listens on, see
# netstore.vm.files), like `virsh console`. On a terminal it is put in raw
# mode and Ctrl-] leaves; with stdin not a terminal, what it gives is sent and
# what the guest prints is copied out until the guest is quiet for a while
# after stdin ended. One client at a time: QEMU takes the first.
"""Attach a terminal (or a pipe) to a running VM's serial console."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import tty
from pathlib import Path

from netstore.vm.files import VmFiles

__all__ = ["DETACH", "QUIET_AFTER_EOF_S", "attach"]

DETACH = 0x1D  # Ctrl-]
# With stdin a pipe: after its end, output is copied until this long without any.
QUIET_AFTER_EOF_S = 1.0


def attach(state_dir: str | Path, name: str) -> int:
    """Relay between stdin/stdout and the console of VM ``name``; exit status."""
    path = VmFiles(Path(state_dir), name).console
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        print(f"netstore: vm console {name}: no console at {path} ({e.strerror}); is {name} "
              "running headless? (netstore vm list)", file=sys.stderr)
        return 1
    interactive = os.isatty(sys.stdin.fileno())
    if interactive:
        print(f"Connected to {name}'s console (Ctrl-] leaves)", file=sys.stderr, flush=True)
    with sock, _raw(sys.stdin.fileno()) if interactive else contextlib.nullcontext():
        _relay(sock, sys.stdin.fileno(), sys.stdout.fileno(), interactive)
    if interactive:
        print(f"\r\nLeft {name}'s console", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _raw(fd: int):  # type: ignore[no-untyped-def]
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _relay(sock: socket.socket, inp: int, out: int, interactive: bool) -> None:
    watching = [sock.fileno(), inp]
    while True:
        timeout = None if inp in watching else QUIET_AFTER_EOF_S
        ready, _, _ = select.select(watching, [], [], timeout)
        if not ready:
            return  # stdin ended and the guest has been quiet since
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                return  # the VM went away
            os.write(out, data)
        if inp in ready:
            data = os.read(inp, 4096)
            if not data:
                watching.remove(inp)
                continue
            if interactive and DETACH in data:
                sock.sendall(data[: data.index(DETACH)])
                return
            sock.sendall(data)
