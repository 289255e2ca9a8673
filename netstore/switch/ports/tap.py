# netstore/switch/ports/tap.py - a port on a Linux TAP device: the kernel's
# side of a virtual NIC, and how the host (or a network namespace) joins the
# switch. One read() is one frame; IFF_NO_PI means no packet-info header.
#
# Offloads (IFF_VNET_HDR + TUNSETOFFLOAD) are not enabled: with them the kernel
# hands over 64 KiB segments with partial checksums, which every other port
# would have to split and checksum. Without them every frame is a real frame.
"""TAP ports: ``device`` opened if it exists, created otherwise, and brought up."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
from typing import Any

import trio

from netstore.switch.ports.base import MAX_FRAME, RECV_BATCH, Port, PortHost

__all__ = ["TapPort", "tap_available"]

TUN_PATH = "/dev/net/tun"
# linux/if_tun.h and linux/sockios.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IFNAMSIZ = 16


def tap_available() -> str | None:
    """None when TAP devices can be made here, else the reason they cannot."""
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} does not exist"
    if os.geteuid() != 0:
        return "creating TAP devices needs root (CAP_NET_ADMIN)"
    return None


class TapPort(Port):
    """A TAP port on ``device`` (at most 15 bytes)."""

    kind = "tap"

    def __init__(self, name: str, settings: Any, host: PortHost, *, device: str,
                 log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.device = device
        self.fd: int | None = None

    @property
    def address(self) -> str | None:
        return self.device

    def open(self) -> None:
        """Open (or create) the device and bring it up; raises OSError."""
        if self.fd is not None:
            return
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", self.device.encode(), IFF_TAP | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            os.set_blocking(fd, False)
            _bring_up(self.device)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        self.set_link(True)
        task_status.started(self.device)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            await self._receive_loop()

    async def _receive_loop(self) -> None:
        fd = self.fd
        assert fd is not None
        read = os.read
        deliver = self.host.deliver
        name = self.name
        while True:
            frames: list[bytes] = []
            try:
                while len(frames) < RECV_BATCH:
                    frames.append(read(fd, MAX_FRAME))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:  # EIO/EBADFD: the device went away
                self.log.error("port %s: reading %s failed: %s", name, self.device, e)
                if frames:
                    deliver(name, frames)
                return
            if frames:
                deliver(name, frames)
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.wait_readable(fd)

    def _send_one(self, frame: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, frame)

    def _writable_fd(self) -> Any:
        return self.fd

    def _closed(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.set_link(False)


def _bring_up(device: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", device.encode(), 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", device.encode(), flags | IFF_UP))
