# netstore/switch/ports/vxlan.py - a switch port that is a VXLAN tunnel
# endpoint (RFC 7348) over IPv4: it receives on a UDP socket bound to `local`
# and sends from a raw UDP socket, so that each packet's outer source port is
# the hash of its inner flow (as Linux and Open vSwitch do), with don't-fragment
# set (IP_PMTUDISC_DO): a packet the path cannot carry is dropped and counted,
# never fragmented. The decisions (header, learning, flooding, MTU) are the
# pure VxlanSegment's (switch/vxlan.py); this module only moves bytes.
"""VXLAN ports: ``local`` bound, ``remotes`` for floods, ``vni`` or a VLAN->VNI map."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import socket
import struct
import time
from typing import Any

import trio

from netstore.switch.frames import mac_text
from netstore.switch.limits import DEFAULT_MAC_AGING_S, DEFAULT_MAC_TABLE_SIZE, MTU_MIN
from netstore.switch.ports.base import MAX_FRAME, RECV_BATCH, DatagramPort, PortHost
from netstore.switch.vxlan import OUTER_OVERHEAD, VxlanSegment, udp_header

__all__ = ["VxlanPort", "underlay_mtu"]

# Linux <linux/in.h>: path MTU discovery on, never fragment locally.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IP_MTU = getattr(socket, "IP_MTU", 14)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SOCKET_BUFFER = 4 << 20
# The underlay MTU assumed when the kernel cannot say (no remote to route to).
FALLBACK_PATH_MTU = 1500
EXPIRE_INTERVAL_S = 1.0


def underlay_mtu(local: str, remotes: list[tuple[str, int]]) -> int:
    """The smallest path MTU the kernel's routes give towards ``remotes``
    (IP_MTU of a connected socket), or FALLBACK_PATH_MTU without any."""
    mtus = []
    for host, port in remotes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((local, 0))
                s.connect((host, port))
                mtus.append(s.getsockopt(socket.IPPROTO_IP, IP_MTU))
            except OSError:
                continue
    return min(mtus) if mtus else FALLBACK_PATH_MTU


class VxlanPort(DatagramPort):
    """A VXLAN port.

    Args:
        local: ``"ip:port"`` bound for receiving (and the raw sender's source IP).
        vni / vnis: the access port's VNI, or (VLAN, VNI) pairs of a trunk.
        remotes: ``"ip:port"`` of the VTEPs floods are replicated to.
        path_mtu: the underlay path MTU (None: the kernel's route MTU).
        aging_s, table_size: of the VTEP table (the switch's, by default).
    """

    kind = "vxlan"

    def __init__(self, name: str, settings: Any, host: PortHost, *, local: str,
                 vni: int | None = None, vnis: Any = None, remotes: Any = (),
                 path_mtu: int | None = None, aging_s: float = DEFAULT_MAC_AGING_S,
                 table_size: int = DEFAULT_MAC_TABLE_SIZE,
                 log: logging.Logger | None = None) -> None:
        super().__init__(name, settings, host, log)
        ip, _, port = local.rpartition(":")
        self.local = (ip, int(port))
        self.remotes = [(h, int(p)) for h, _, p in (r.rpartition(":") for r in remotes)]
        self.vni = vni
        self.vnis = tuple(vnis) if vnis else None
        self.path_mtu = path_mtu
        self.aging_s = aging_s
        self.table_size = table_size
        self.segment: VxlanSegment | None = None
        self.raw: socket.socket | None = None
        self.learn_peer = False
        clock = getattr(host, "clock", None)
        self.clock = clock if callable(clock) else time.monotonic

    # -- opening --------------------------------------------------------------------
    def open(self) -> None:
        """Bind the receiving socket and open the raw sender (raises OSError)."""
        if self.sock is not None:
            return
        ip, port = self.local
        mtu = self.path_mtu or underlay_mtu(ip, self.remotes)
        if mtu - OUTER_OVERHEAD < MTU_MIN:
            raise ValueError(f"the underlay path MTU {mtu} leaves less than {MTU_MIN} "
                             f"bytes for frames after {OUTER_OVERHEAD} bytes of VXLAN headers")
        if self.vnis:
            vnis, tagged = dict(self.vnis), True
        else:
            vnis, tagged = {self.settings.vlan: self.vni or 0}, False
        self.segment = VxlanSegment(vnis, tagged=tagged, remotes=self.remotes, port=port,
                                    path_mtu=mtu, aging_s=self.aging_s, size=self.table_size)
        self.segment.drops = self.drops  # one counter of the port's own drops
        # The switch's own MTU check then matches the inner MTU (what Linux gives
        # its vxlan device: 1450 on a 1500-byte underlay).
        self.settings = dataclasses.replace(self.settings, mtu=self.segment.inner_mtu)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw = None
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            sock.bind((ip, port))
            sock.setblocking(False)
            raw = _raw_sender(ip, self.log, self.name)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.raw = raw

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self.open()
        self.set_link(True)  # a tunnel has no carrier: it is up once bound
        task_status.started(self.address)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            await self._serve_socket()

    async def _expire(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL_S)
            if self.segment is not None:
                self.segment.table.expire(self.clock())

    def _closed(self) -> None:
        if self.raw is not None:
            self.raw.close()
        super()._closed()

    # -- status ---------------------------------------------------------------------
    @property
    def peer(self) -> str | None:
        return ", ".join(f"{h}:{p}" for h, p in self.remotes) or None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        seg = self.segment
        out.update(vni=self.vni, vnis={str(v): n for v, n in self.vnis} if self.vnis else None,
                   remotes=[f"{h}:{p}" for h, p in self.remotes],
                   path_mtu=seg.path_mtu if seg else self.path_mtu,
                   vteps_learnt=len(seg.table) if seg else 0,
                   sender="raw" if self.raw is not None else "bound socket")
        return out

    def vtep_of(self, vlan: int, mac: bytes) -> str | None:
        """``"ip:port"`` of the VTEP ``mac`` of ``vlan`` was learnt behind, if any."""
        seg = self.segment
        if seg is None:
            return None
        vni = seg.vlan_vni.get(vlan)
        vtep = None if vni is None else seg.table.lookup(vni, mac, self.clock())
        return None if vtep is None else f"{vtep[0]}:{vtep[1]}"

    def remote_macs(self) -> list[dict[str, Any]]:
        """Learnt remote MACs: VLAN, VNI, MAC, VTEP and age."""
        seg = self.segment
        if seg is None:
            return []
        return [{"vlan": vlan, "vni": vni, "mac": mac_text(mac), "vtep": f"{v[0]}:{v[1]}",
                 "age_s": round(age, 1)} for vlan, vni, mac, v, age in seg.entries(self.clock())]

    # -- receiving ------------------------------------------------------------------
    def _drain(self) -> int:
        sock = self.sock
        seg = self.segment
        assert sock is not None and seg is not None
        recvfrom = sock.recvfrom
        now = self.clock()
        frames: list[bytes] = []
        got = 0
        try:
            while got < RECV_BATCH:
                data, addr = recvfrom(MAX_FRAME)
                got += 1
                frame = seg.decapsulate(data, addr, now)
                if frame is not None:
                    frames.append(frame)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:  # an ICMP error of an earlier send: keep going
            self.log.debug("port %s: receive: %s", self.name, e)
        if frames:
            self.host.deliver(self.name, frames)
        return got

    # -- sending --------------------------------------------------------------------
    def transmit(self, frame: bytes) -> None:
        """Encapsulate ``frame`` and send it to its VTEP, or to every remote."""
        seg = self.segment
        if seg is None or not self.link_up:
            self.drops["no_peer"] += 1
            return
        sport, payload, vteps = seg.encapsulate(frame, self.clock())
        for vtep in vteps:
            item = (udp_header(sport, vtep[1], len(payload)) + payload, vtep, sport)
            if self._queue:
                self._enqueue(item)
                continue
            try:
                self._send_one(item)
            except (BlockingIOError, InterruptedError):
                self._enqueue(item)
            except OSError as e:
                self._send_failed(e)

    def _send_one(self, item: Any) -> None:
        packet, (host, port), _ = item
        if self.raw is not None:
            self.raw.sendto(packet, (host, 0))
        else:  # no raw socket: from the bound port, UDP header left to the kernel
            assert self.sock is not None
            self.sock.sendto(packet[8:], (host, port))

    def _send_failed(self, e: OSError) -> None:
        if e.errno == errno.EMSGSIZE:  # the route's MTU is below what we were told
            self.drops["path_mtu"] += 1
            return
        self.drops["error"] += 1
        self.log.debug("port %s: send failed: %s", self.name, e)

    def _writable_fd(self) -> Any:
        return self.raw if self.raw is not None else self.sock


def _raw_sender(ip: str, log: logging.Logger, name: str) -> socket.socket | None:
    """A raw IPv4 socket carrying our own UDP headers (the hashed source port),
    don't-fragment set, reading nothing; None where raw sockets are not allowed
    (then packets leave from the bound port)."""
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError as e:
        log.warning("port %s: no raw socket (%s): sending from the bound port, "
                    "not a per-flow source port", name, e)
        return None
    try:
        # A raw UDP socket would get a copy of every UDP packet: a filter
        # that accepts none (BPF "ret #0") keeps its queue empty.
        prog = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))
        fprog = struct.pack("HL", 1, ctypes.addressof(prog))
        raw.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        raw.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        raw.bind((ip, 0))
        raw.setblocking(False)
    except BaseException:
        raw.close()
        raise
    return raw
