# netstore/switch/ports/vde.py - the VDE plug protocol, so that vde_plug and
# VDE-speaking emulators (qemu -netdev vde, user-mode linux) connect.
#
# The wire, as vde2's vde_switch (src/vde_switch/datasock.c) and libvdeplug
# speak it: the switch listens on a unix stream socket <path>/ctl. A client
# binds its own unix datagram socket, connects to ctl and sends a request_v3
#   u32 magic 0xfeedface, u32 version 3, u32 type (low byte: 0 new port,
#   1 port 0; the rest a wished port number), struct sockaddr_un (110 bytes,
#   the client's data socket), a NUL-terminated description
# all in host byte order. The switch binds a datagram socket of its own in the
# directory, connects it to the client's, and answers with its sockaddr_un.
# Frames then flow one per datagram; the port lives while the ctl connection
# stays open. Each client is a dynamic port <name>.<n> with this port's VLANs.
"""VDE ports: a control directory ``path`` where every client becomes a port."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import stat
import struct
from typing import Any

import trio

from netstore.switch.ports.base import DatagramPort, Port, PortHost
from netstore.switch.ports.udp import _buffers
from netstore.switch.ports.unixgram import _remove_stale_socket

__all__ = ["VDE_MAGIC", "VDE_VERSION", "VdeClientPort", "VdePort", "pack_request"]

VDE_MAGIC = 0xFEEDFACE
VDE_VERSION = 3
REQ_NEW_CONTROL, REQ_NEW_PORT0 = 0, 1
_HEAD = struct.Struct("=III")  # magic, version, type
_SUN = struct.Struct("=H108s")  # struct sockaddr_un: sun_family, sun_path
REQUEST_MIN = _HEAD.size + _SUN.size  # 122: a request without description
# vde_switch reads a request with one read of at most this (REQBUFLEN).
REQUEST_MAX = 256
# A client must send its request this soon after connecting.
REQUEST_TIMEOUT_S = 5.0
SUN_PATH_MAX = 107


class VdeRefused(Exception):
    """A request that is not a VDE v3 request; the connection is closed."""


def pack_request(data_path: str | bytes, description: str = "netstore",
                 *, magic: int = VDE_MAGIC, version: int = VDE_VERSION,
                 type_: int = REQ_NEW_CONTROL) -> bytes:
    """A request_v3 as libvdeplug sends it (for tests and tools)."""
    path = os.fsencode(data_path)
    return (_HEAD.pack(magic, version, type_) + _SUN.pack(socket.AF_UNIX, path)
            + description.encode() + b"\0")


def parse_request(data: bytes) -> tuple[int, Any, str]:
    """(type, client's data socket address, description) of a request_v3.

    Raises:
        VdeRefused: wrong magic or version, short, or an address we cannot answer.
    """
    if len(data) >= 4 and _HEAD.unpack_from(data.ljust(12, b"\0"))[0] != VDE_MAGIC:
        raise VdeRefused(f"wrong magic 0x{struct.unpack_from('=I', data)[0]:08x} "
                         f"(expected 0x{VDE_MAGIC:08x})")
    if len(data) < REQUEST_MIN:
        raise VdeRefused(f"short request ({len(data)} bytes, at least {REQUEST_MIN})")
    magic, version, type_ = _HEAD.unpack_from(data)
    if version != VDE_VERSION:
        raise VdeRefused(f"request version {version}; only version {VDE_VERSION} is spoken")
    if type_ & 0xFF not in (REQ_NEW_CONTROL, REQ_NEW_PORT0):
        raise VdeRefused(f"bad request type {type_ & 0xFF}")
    family, raw = _SUN.unpack_from(data, _HEAD.size)
    if family != socket.AF_UNIX:
        raise VdeRefused(f"data socket family {family}, expected AF_UNIX")
    if raw[:1] == b"\0":  # Linux abstract namespace
        addr: Any = raw.rstrip(b"\0")
        if not addr:
            raise VdeRefused("unnamed data socket: nothing to send frames to")
    else:
        addr = os.fsdecode(raw.split(b"\0", 1)[0])
    description = data[REQUEST_MIN:].split(b"\0", 1)[0].decode(errors="replace")
    return type_, addr, description


class VdeClientPort(DatagramPort):
    """One VDE client: a datagram socket connected to the client's."""

    kind = "vde"

    def __init__(self, name: str, settings: Any, host: PortHost, *, sock: socket.socket,
                 client: Any, description: str, log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.sock = sock
        self.peer_addr = client
        self.learn_peer = False
        self.connected = True
        self.description = description

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["description"] = self.description
        return d

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.set_link(True)
        task_status.started(self.address)
        await self._serve_socket()

    def _closed(self) -> None:
        path = self.address
        super()._closed()
        if path:
            try:
                _remove_stale_socket(path)
            except OSError:
                pass


class VdePort(Port):
    """The VDE control directory: not a switch port itself, a maker of ports.

    Args:
        path: the control directory (created if missing); ``<path>/ctl`` is the
            socket vde_plug connects to (``vde_plug vde://<path>``).
    """

    kind = "vde"
    forwards = False  # frames flow through its clients, never through it

    def __init__(self, name: str, settings: Any, host: PortHost, *, path: str,
                 log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        self.path = path
        self.listener: socket.socket | None = None
        self.clients: dict[str, VdeClientPort] = {}
        self._next = 1

    @property
    def ctl_path(self) -> str:
        return os.path.join(self.path, "ctl")

    @property
    def address(self) -> str | None:
        return self.path if self.listener is not None else None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["link"] = "-"
        d["clients"] = sorted(self.clients)
        return d

    def send(self, frame: bytes) -> None:
        """The control port is never an egress port."""

    def open(self) -> None:
        """Create the directory and listen on ``ctl`` (raises OSError)."""
        if self.listener is not None:
            return
        os.makedirs(self.path, exist_ok=True)
        if not stat.S_ISDIR(os.stat(self.path).st_mode):
            raise NotADirectoryError(f"{self.path} is not a directory")
        ctl = self.ctl_path
        if len(os.fsencode(ctl)) > SUN_PATH_MAX - 8:
            raise OSError(f"VDE path {self.path} is too long for a unix socket")
        # A live ctl socket means another switch serves this directory.
        if os.path.exists(ctl):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(ctl)
            except OSError:
                _remove_stale_socket(ctl)
            else:
                raise OSError(f"another switch listens on {ctl}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(ctl)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.listener = sock

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        listener = self.listener
        assert listener is not None
        task_status.started(self.path)
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    await trio.lowlevel.wait_readable(listener)
                    continue
                except OSError as e:
                    self.log.error("port %s: accept failed: %s", self.name, e)
                    await trio.sleep(0.1)
                    continue
                conn.setblocking(False)
                nursery.start_soon(self._serve_client, conn)

    def _closed(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                _remove_stale_socket(self.ctl_path)
            except OSError:
                pass

    async def _serve_client(self, ctl: socket.socket) -> None:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S) as timeout:
                data = await self._read_request(ctl)
            if timeout.cancelled_caught:
                self.log.warning("port %s: no VDE request within %g s; closed", self.name,
                                 REQUEST_TIMEOUT_S)
                return
            try:
                _type, client, description = parse_request(data)
            except VdeRefused as e:
                self.log.warning("port %s: VDE request refused: %s", self.name, e)
                return
            n = self._next
            self._next += 1
            port = self._make_client(n, client, description)
            if port is None:
                return
            # The answer: our data socket's sockaddr_un (110 bytes fit any fresh socket).
            reply = _SUN.pack(socket.AF_UNIX, os.fsencode(port.address or ""))
            try:
                sent = ctl.send(reply)
            except OSError as e:
                sent = -1
                self.log.warning("port %s: answering the VDE client failed: %s", self.name, e)
            if sent != len(reply):
                port.sock.close()  # type: ignore[union-attr]
                return
            self.clients[port.name] = port
            try:
                self.host.attach(port)
                self.log.info("port %s: VDE client %r joined as %s", self.name, description,
                              port.name)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(port.run)
                    await _wait_eof(ctl)
                    nursery.cancel_scope.cancel()
            finally:
                del self.clients[port.name]
                self.host.detach(port)
                self.log.info("port %s: VDE client %s left", self.name, port.name)
        finally:
            ctl.close()

    async def _read_request(self, ctl: socket.socket) -> bytes:
        data = b""
        while len(data) < REQUEST_MIN:
            try:
                chunk = ctl.recv(REQUEST_MAX - len(data))
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_readable(ctl)
                continue
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if len(data) >= 4 and struct.unpack_from("=I", data)[0] != VDE_MAGIC:
                break  # refused at once; no need to wait for the rest
            if len(data) >= 8 and struct.unpack_from("=I", data, 4)[0] != VDE_VERSION:
                break
        # A description may follow in the same or the next segment.
        try:
            data += ctl.recv(REQUEST_MAX)
        except OSError:
            pass
        return data

    def _make_client(self, n: int, client: Any, description: str) -> VdeClientPort | None:
        data_path = os.path.join(self.path, f"{n:03d}.{os.getpid()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            _buffers(sock)
            _remove_stale_socket(data_path)
            sock.bind(data_path)
            sock.connect(client)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            self.log.warning("port %s: cannot reach the VDE client's data socket %r: %s",
                             self.name, client, e)
            return None
        name = f"{self.name}.{n}"
        settings = self.settings
        if dataclasses.is_dataclass(settings):
            settings = dataclasses.replace(settings, name=name)
        port = VdeClientPort(name, settings, self.host, sock=sock, client=client,
                             description=description, log=self.log)
        return port


async def _wait_eof(ctl: socket.socket) -> None:
    """Until the client closes its ctl connection (anything it sends is ignored)."""
    while True:
        try:
            data = ctl.recv(4096)
        except (BlockingIOError, InterruptedError):
            await trio.lowlevel.wait_readable(ctl)
            continue
        except OSError:
            return
        if not data:
            return
