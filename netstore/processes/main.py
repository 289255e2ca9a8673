# A child process of `netstore serve`: it dies with its supervisor (the kernel
# kills it when the supervisor goes, PR_SET_PDEATHSIG, and it leaves when the
# channel closes), ignores the terminal's signals (the supervisor decides when
# children stop) and serves its service's requests over the channel.
"""Entry point of a child process: ``python -m netstore.processes KIND FD PPID LABEL LEVEL``."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

import trio

from .channel import Channel, Peer
from .heap import keep_heap
from .logs import configure_logging

PR_SET_PDEATHSIG = 1
KINDS = ("iscsi", "switches")
# The switch process runs at this nice value when it may (root): a frame
# should not wait for a core behind iSCSI workers and initiators.
SWITCH_NICE = -10
AUTOGROUP = "/proc/self/autogroup"


def put_first() -> None:
    """Give this process (the switches) the CPU before the others when it wakes.

    Linux's autogroups share the CPU between sessions first, so a nice value
    counts only inside one session: the process takes a session of its own
    (it still dies with the supervisor) and gives that session's group the
    nice value, where the kernel allows it (root); otherwise it stays as it was.
    """
    try:
        os.setsid()
    except OSError:
        pass
    try:
        with open(AUTOGROUP, "w") as f:
            f.write(str(SWITCH_NICE))
    except OSError:
        pass  # no autogroups, or not allowed
    try:
        os.setpriority(os.PRIO_PROCESS, 0, SWITCH_NICE)
    except OSError:
        pass


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when `parent` ends; leave now if it
    already has (it may end between fork and this call)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the closed channel still ends the child
    if os.getppid() != parent:
        os._exit(0)


def _host(kind: str, label: str):
    if kind == "iscsi":
        from .worker import IscsiWorker

        return IscsiWorker(label)
    from .switches import SwitchHost

    return SwitchHost(label)


async def serve_child(kind: str, fd: int, label: str) -> None:
    """Serve the supervisor's requests until it closes the channel."""
    channel = Channel(socket.socket(fileno=fd))
    host = _host(kind, label)
    handlers = {**host.handlers(), "log_level": lambda level: configure_logging(level, label)}
    peer = Peer(channel, handlers, log=host.log)
    async with trio.open_nursery() as nursery:
        host.nursery = nursery
        await peer.serve(nursery)
        # The supervisor is gone or told us to go: what is left ends now.
        await host.aclose()
        nursery.cancel_scope.cancel()
    channel.close()


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] not in KINDS:
        print("usage: python -m netstore.processes {iscsi|switches} FD PPID LABEL LEVEL "
              "(started by `netstore serve`, not by hand)", file=sys.stderr)
        return 2
    kind, fd, parent, label, level = argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4]
    die_with_parent(parent)
    keep_heap()
    if kind == "switches":
        put_first()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(level, label)
    trio.run(serve_child, kind, fd, label)
    return 0
