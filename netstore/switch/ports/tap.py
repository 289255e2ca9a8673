# netstore/switch/ports/tap.py - a port on a Linux TAP device: the kernel's
# side of a virtual NIC, and how the host (or a network namespace) joins the
# switch. One read() is one frame; IFF_NO_PI means no packet-info header.
#
# Offloads: the device is opened with IFF_VNET_HDR (a 10-byte virtio-net
# header before every frame, TUNSETVNETHDRSZ), so the kernel accepts 64 KiB TCP
# segments and partial checksums written to it. What the kernel hands *to* the
# switch is set by TUNSETOFFLOAD (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): the
# service turns that on while two or more ports of the switch are such TAPs
# and nothing captures (set_offload), so large segments cross the switch whole
# between TAPs, and what leaves through any other port is segmented in
# software (netstore/switch/offload.py); otherwise the kernel segments and
# checksums before the read. Either way real TCP segments bound for such a TAP
# may be written merged into one GSO frame (offload.TcpMerge). Without
# IFF_VNET_HDR support the port is plain.
"""TAP ports: ``device`` opened if it exists, created otherwise, and brought up."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
from typing import Any

import trio

from netstore.switch.offload import VNET_HDR_LEN, ZERO_HDR, segment
from netstore.switch.ports.base import MAX_FRAME, RECV_BATCH, Port, PortHost

__all__ = ["TapPort", "tap_available"]

TUN_PATH = "/dev/net/tun"
# linux/if_tun.h and linux/sockios.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETCARRIER = 0x400454E2  # _IOW('T', 226, int), Linux 5.0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
IFF_UP = 0x1


def tap_available() -> str | None:
    """None when TAP devices can be made here, else the reason they cannot."""
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} does not exist"
    if os.geteuid() != 0:
        return "creating TAP devices needs root (CAP_NET_ADMIN)"
    return None


class TapPort(Port):
    """A TAP port on ``device`` (at most 15 bytes).

    Attributes:
        vnet: the device carries virtio-net headers (IFF_VNET_HDR); frames with
            offloads can be written to it whole (``send_vnet``).
        offloaded: the kernel may hand over offloaded frames (TUNSETOFFLOAD on).
    """

    kind = "tap"

    def __init__(self, name: str, settings: Any, host: PortHost, *, device: str,
                 log: logging.Logger | None = None, vnet_hdr: bool = True) -> None:
        super().__init__(name, settings, host, log)
        self.device = device
        self.fd: int | None = None
        self.want_vnet = vnet_hdr
        self.vnet = False
        self.offloaded = False
        self._deliver: Any = host.deliver

    @property
    def address(self) -> str | None:
        return self.device

    def open(self) -> None:
        """Open (or create) the device and bring it up; raises OSError."""
        if self.fd is not None:
            return
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        try:
            vnet = False
            if self.want_vnet:
                try:
                    ifr = struct.pack("16sH22x", self.device.encode(),
                                      IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
                    fcntl.ioctl(fd, TUNSETIFF, ifr)
                    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
                    vnet = True
                except OSError as e:
                    self.log.info("port %s: %s without virtio-net headers (%s)",
                                  self.name, self.device, e)
                    os.close(fd)
                    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
            if not vnet:
                ifr = struct.pack("16sH22x", self.device.encode(), IFF_TAP | IFF_NO_PI)
                fcntl.ioctl(fd, TUNSETIFF, ifr)
            os.set_blocking(fd, False)
            _bring_up(self.device)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.vnet = vnet
        self.offloaded = False

    def set_offload(self, on: bool) -> bool:
        """Let the kernel hand over TSO segments and partial checksums (or not).

        Returns whether offloads are on now; a refusal leaves them off.
        """
        if self.fd is None or not self.vnet or on == self.offloaded:
            return self.offloaded
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, OFFLOADS if on else 0)
        except OSError as e:
            self.log.info("port %s: TUNSETOFFLOAD on %s: %s", self.name, self.device, e)
            return self.offloaded
        self.offloaded = on
        self.log.info("port %s: offloads %s", self.name, "on" if on else "off")
        return on

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        self.set_link(True)
        task_status.started(self.device)
        self._deliver = self.host.deliver
        if self.vnet:  # frames keep their virtio-net header
            self._deliver = getattr(self.host, "deliver_vnet", None) or self._deliver_plain
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            await self._receive()

    def _readable_fd(self) -> Any:
        return self.fd

    def _drain(self) -> int:
        fd = self.fd
        assert fd is not None
        read = os.read
        frames: list[bytes] = []
        try:
            while len(frames) < RECV_BATCH:
                frames.append(read(fd, MAX_FRAME))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:  # EIO/EBADFD: the device went away
            self.log.error("port %s: reading %s failed: %s", self.name, self.device, e)
            if frames:
                self._deliver(self.name, frames)
            return -1
        if frames:
            self._deliver(self.name, frames)
        return len(frames)

    def _deliver_plain(self, name: str, bufs: list[bytes]) -> None:
        """For a host without ``deliver_vnet``: real frames only."""
        frames: list[bytes] = []
        for buf in bufs:
            if buf[0] == 0 and buf[1] == 0:
                frames.append(buf[VNET_HDR_LEN:])
                continue
            try:
                frames.extend(segment(buf, buf[VNET_HDR_LEN:]))
            except (ValueError, IndexError):
                self.drops["offload"] += 1
        self.host.deliver(name, frames)

    def send_vnet(self, *parts: bytes) -> None:
        """Send a frame whose parts start with its virtio-net header (vnet ports only)."""
        self.transmit(parts)  # type: ignore[arg-type]

    def set_admin(self, up: bool) -> None:
        """Down: the device reports no carrier (``ip link`` shows NO-CARRIER)."""
        super().set_admin(up)
        if self.fd is not None:
            try:
                fcntl.ioctl(self.fd, TUNSETCARRIER, struct.pack("i", int(up)))
            except OSError as e:
                self.log.info("port %s: TUNSETCARRIER on %s: %s", self.name, self.device, e)

    def _send_one(self, frame: Any) -> None:
        assert self.fd is not None
        if type(frame) is tuple:
            os.writev(self.fd, frame)
        elif self.vnet:
            os.writev(self.fd, (ZERO_HDR, frame))
        else:
            os.write(self.fd, frame)

    def _writable_fd(self) -> Any:
        return self.fd

    def _closed(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.offloaded = False
        self.set_link(False)


def _bring_up(device: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", device.encode(), 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", device.encode(), flags | IFF_UP))
