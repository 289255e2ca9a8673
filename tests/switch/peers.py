# tests/switch/peers.py - peers of a switch service in tests: a VM NIC on a
# udp port, the frames the tests send, starting a service, waiting for a state.
"""Helpers for the switch service tests (imported, never collected)."""

from __future__ import annotations

import socket

import trio
from scapy.layers.inet import ICMP, IP, Ether
from scapy.layers.l2 import ARP

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.service import SwitchService

TIMEOUT = 10
MAC_A, MAC_B, MAC_C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def udp_port(name: str, **kw) -> SwitchPortConfig:
    return SwitchPortConfig(name=name, kind="udp", local="127.0.0.1:0", **kw)


def ping(src: str, dst: str, seq: int = 1) -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(seq=seq))


def arp_who_has(src: str) -> bytes:
    return bytes(Ether(src=src, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=src, pdst="10.0.0.2"))


class UdpPeer:
    """A VM NIC on a udp port: a bound socket that sends to the switch's address."""

    def __init__(self, switch_addr: str) -> None:
        h, p = switch_addr.rsplit(":", 1)
        self.to = (h, int(p))
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def open(self) -> UdpPeer:
        await self.sock.bind(("127.0.0.1", 0))
        return self

    async def send(self, frame: bytes) -> None:
        await self.sock.sendto(frame, self.to)

    async def recv(self, timeout: float = TIMEOUT) -> bytes:
        with trio.fail_after(timeout):
            return await self.sock.recv(70000)

    async def nothing(self, wait: float = 0.2) -> bool:
        with trio.move_on_after(wait):
            await self.sock.recv(70000)
            return False
        return True


async def start(nursery, config: SwitchConfig, **kw) -> tuple[SwitchService, dict[str, str]]:
    svc = SwitchService(config, **kw)
    listening = await nursery.start(svc.run)
    return svc, {name: addr for name, _kind, addr in listening}


async def until(cond, timeout: float = TIMEOUT) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def two_peers(nursery) -> tuple[SwitchService, UdpPeer, UdpPeer]:
    """A switch sw0 of udp ports a and b whose peers have introduced themselves
    (both links up, both MACs learnt, the flood of b's hello taken)."""
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[udp_port("a"),
                                                                      udp_port("b")]))
    pa, pb = await UdpPeer(addrs["a"]).open(), await UdpPeer(addrs["b"]).open()
    for peer, mac, name in ((pa, MAC_A, "a"), (pb, MAC_B, "b")):
        await peer.send(arp_who_has(mac))
        await until(lambda name=name: svc.ports[name].link_up)
    await pa.recv()  # the flood of b's introduction
    return svc, pa, pb
