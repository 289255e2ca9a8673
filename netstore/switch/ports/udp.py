# netstore/switch/ports/udp.py - a port that is a UDP socket: one raw Ethernet
# frame per datagram, as QEMU's `-netdev dgram,local.type=inet,...` and
# `-netdev socket,udp=REMOTE,localaddr=LOCAL` send them.
"""UDP ports: ``local`` bound, ``remote`` given or learnt from the first datagram."""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio

from netstore.addresses import parse_portal
from netstore.switch.ports.base import DatagramPort, PortHost

__all__ = ["UdpPort"]

# Bigger kernel buffers absorb bursts while the switch is busy with another port.
SOCKET_BUFFER = 4 << 20


class UdpPort(DatagramPort):
    """A UDP port.

    Args:
        local: ``"host:port"`` to bind (port 0: the kernel picks).
        remote: ``"host:port"`` of the VM side; None learns it from the first datagram.
    """

    kind = "udp"

    def __init__(self, name: str, settings: Any, host: PortHost, *, local: str,
                 remote: str | None = None, log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.local = parse_portal(local)
        self.remote = parse_portal(remote) if remote else None

    def open(self) -> None:
        """Bind the socket (raises OSError); ``run`` calls it when not done before."""
        if self.sock is not None:
            return
        host, port = self.local
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _buffers(sock)
            sock.bind((host, port))
            sock.setblocking(False)
            if self.remote is not None:
                info = socket.getaddrinfo(*self.remote, family, socket.SOCK_DGRAM)
                self.peer_addr = info[0][4]
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.learn_peer = self.remote is None

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        if self.peer_addr is not None:
            self.set_link(True)
        task_status.started(self.address)
        await self._serve_socket()


def _buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
