# netstore/switch/ports/unixgram.py - a port that is a unix datagram socket:
# one raw Ethernet frame per datagram, as QEMU's
# `-netdev dgram,local.type=unix,local.path=..,remote.type=unix,remote.path=..`.
"""Unix datagram ports: ``local`` path bound, ``remote`` path given or learnt."""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any

import trio

from netstore.switch.ports.base import DatagramPort, PortHost
from netstore.switch.ports.udp import _buffers

__all__ = ["UnixgramPort"]


class UnixgramPort(DatagramPort):
    """A unix datagram port.

    Args:
        local: the socket path to bind (a stale socket file there is replaced).
        remote: the VM side's socket path; None learns it from the first datagram
            (the peer must have bound its socket, or there is nothing to answer).
    """

    kind = "unixgram"

    def __init__(self, name: str, settings: Any, host: PortHost, *, local: str,
                 remote: str | None = None, log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.local = local
        self.remote = remote

    def open(self) -> None:
        """Bind the socket (raises OSError)."""
        if self.sock is not None:
            return
        _remove_stale_socket(self.local)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            _buffers(sock)
            sock.bind(self.local)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.peer_addr = self.remote
        self.learn_peer = self.remote is None

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        if self.peer_addr is not None:
            self.set_link(True)
        task_status.started(self.address)
        await self._serve_socket()

    def _learn(self, addr: Any) -> None:
        if addr:  # an unbound sender has no address to answer to
            super()._learn(addr)

    def _closed(self) -> None:
        bound = self.sock is not None
        super()._closed()
        if bound:
            try:
                _remove_stale_socket(self.local)
            except OSError:
                pass


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left at ``path``; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    os.unlink(path)
