# tests/switch/test_tap_offload.py - TAP offloads (IFF_VNET_HDR + TUNSETOFFLOAD)
# in netstore's switch: the software segmentation and checksums of
# netstore/switch/offload.py checked with scapy; the service's handling of
# offloaded frames towards ports without virtio-net headers (udp, fed by hand);
# and two network namespaces over TAP ports of an in-process SwitchService
# running iperf3 (2 s, bounded) and ping: offloads on when only TAPs are on the
# switch or with a udp port beside them (the udp port gets real frames), off
# with a single TAP, real frames in a capture.
# Namespaces and devices are the test's own and removed in finally.
"""TAP offloads: software segmentation, pass-through between TAPs, fallbacks."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import rdpcap

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.offload import (
    VNET_HDR,
    checksum,
    complete_checksum,
    segment,
)
from netstore.switch.service import SwitchService
from tests.switch.netns_util import MAC_A, MAC_B, Namespaces, needs_netns, tap_ports

PAYLOAD = bytes(range(256)) * 200  # 51200 bytes


def gso_frame(ip_layer, payload: bytes = PAYLOAD, flags: str = "PA", tagged: bool = False):
    """A TCP GSO superframe as the kernel hands it over (one IP header for the
    whole payload); its TCP checksum field is garbage, as only segmentation
    makes the real ones."""
    l2 = Ether(src=MAC_A, dst=MAC_B)
    if tagged:
        l2 = l2 / Dot1Q(vlan=5)
    pkt = l2 / ip_layer / TCP(sport=40000, dport=5201, seq=1000, flags=flags) / payload
    raw = bytearray(bytes(pkt))
    l4 = len(bytes(l2)) + (20 if ip_layer.version == 4 else 40)
    raw[l4 + 16 : l4 + 18] = b"\x12\x34"  # garbage: segmentation must redo it
    return bytes(raw), l4


def check_segments(frames: list[bytes], payload: bytes, mss: int, v6: bool) -> None:
    data = b""
    seq = 1000
    for i, f in enumerate(frames):
        pkt = Ether(f)
        ip = pkt[IPv6] if v6 else pkt[IP]
        tcp = pkt[TCP]
        chunk = bytes(tcp.payload)
        assert len(chunk) == min(mss, len(payload) - len(data))
        assert tcp.seq == seq
        seq += len(chunk)
        data += chunk
        want_tcp = tcp.chksum
        want_ip = None if v6 else ip.chksum
        again = Ether(f)
        del again[TCP].chksum
        if not v6:
            del again[IP].chksum
            del again[IP].len
        else:
            del again[IPv6].plen
        again = Ether(bytes(again))
        assert again[TCP].chksum == want_tcp, i
        if not v6:
            assert again[IP].chksum == want_ip and again[IP].len == ip.len
        last = i == len(frames) - 1
        assert bool(tcp.flags & 0x08) == last  # PSH on the last segment only
    assert data == payload


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("tagged", [False, True])
def test_segment_tcp(v6: bool, tagged: bool) -> None:
    ip_layer = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.1.0.1", dst="10.1.0.2")
    raw, l4 = gso_frame(ip_layer, tagged=tagged)
    mss = 1448
    hdr = VNET_HDR.pack(1, 4 if v6 else 1, l4 + 32, mss, l4, 16)
    frames = segment(hdr, raw)
    assert len(frames) == -(-len(PAYLOAD) // mss)
    assert all(len(f) <= 14 + (4 if tagged else 0) + (40 if v6 else 20) + 20 + mss for f in frames)
    check_segments(frames, PAYLOAD, mss, v6)


def test_segment_odd_tail_and_partial_checksums() -> None:
    raw, l4 = gso_frame(IP(src="10.1.0.1", dst="10.1.0.2"), payload=PAYLOAD[:3001])
    frames = segment(VNET_HDR.pack(1, 1, 0, 1000, l4, 16), raw)
    assert [len(bytes(Ether(f)[TCP].payload)) for f in frames] == [1000, 1000, 1000, 1]
    check_segments(frames, PAYLOAD[:3001], 1000, False)
    # A partial UDP checksum: the field holds the pseudo-header sum
    pkt = (
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src="10.1.0.1", dst="10.1.0.2")
        / UDP(sport=1, dport=2)
        / b"hello, offloads!?"
    )
    good = bytes(pkt)
    raw = bytearray(good)
    ip = pkt[IP]
    pseudo = (
        socket.inet_aton(ip.src)
        + socket.inet_aton(ip.dst)
        + struct.pack("!BBH", 0, 17, len(pkt[UDP]))
    )
    partial = (0xFFFF - checksum(pseudo)) & 0xFFFF  # the un-complemented folded sum
    raw[34 + 6 : 34 + 8] = struct.pack("!H", partial)
    assert complete_checksum(bytes(raw), 34, 6) == good
    assert segment(VNET_HDR.pack(1, 0, 0, 0, 34, 6), bytes(raw)) == [good]
    with pytest.raises(ValueError):
        segment(VNET_HDR.pack(0, 3, 0, 1400, 34, 6), good)  # UFO is not offered


async def test_offloaded_frames_reach_a_udp_port_segmented() -> None:
    """deliver_vnet with a GSO frame whose egress is a udp port (and a trunk that
    tags it): real, checksummed frames arrive, at most MTU-sized."""
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in peers:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    svc = SwitchService(
        SwitchConfig(
            name="sw0",
            ports=[
                SwitchPortConfig(name="in", kind="udp", local="127.0.0.1:0", remote="127.0.0.1:9"),
                SwitchPortConfig(
                    name="out",
                    kind="udp",
                    local="127.0.0.1:0",
                    remote=f"127.0.0.1:{peers[0].getsockname()[1]}",
                ),
                SwitchPortConfig(
                    name="trunk",
                    kind="udp",
                    local="127.0.0.1:0",
                    trunk=[1],
                    remote=f"127.0.0.1:{peers[1].getsockname()[1]}",
                ),
            ],
        )
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run)
            with trio.fail_after(5):  # the port tasks bring their links up
                while not all(p.link_up for p in svc.ports.values()):
                    await trio.sleep(0.01)
            raw, l4 = gso_frame(IP(src="10.1.0.1", dst="10.1.0.2"))
            hdr = VNET_HDR.pack(1, 1, l4 + 20, 1448, l4, 16)
            svc.deliver_vnet("in", [hdr + raw])  # unknown destination: flooded
            n = -(-len(PAYLOAD) // 1448)
            for s, tagged in zip(peers, (False, True), strict=True):
                frames = []
                with trio.move_on_after(5):
                    while len(frames) < n:
                        await trio.lowlevel.wait_readable(s)
                        frames.append(s.recv(65536))
                assert len(frames) == n
                assert all(len(f) <= 1514 + 4 * tagged for f in frames)
                if tagged:
                    assert all(Ether(f)[Dot1Q].vlan == 1 for f in frames)
                    frames = [f[:12] + f[16:] for f in frames]
                check_segments(frames, PAYLOAD, 1448, False)
            c = svc.status()["ports"]
            ports = {p["name"]: p for p in c}
            assert ports["in"]["rx_frames"] == 1 and ports["in"]["rx_bytes"] == len(raw)
            nursery.cancel_scope.cancel()
    finally:
        for s in peers:
            s.close()


# -- two namespaces over TAP ports ---------------------------------------------------

@needs_netns
async def test_tcp_through_two_tap_ports_with_offloads(nursery, tmp_path: Path) -> None:
    ns = Namespaces()
    svc = SwitchService(SwitchConfig(name="sw0", ports=tap_ports(ns)))
    try:
        await nursery.start(svc.run)
        assert all(p.vnet and p.offloaded for p in svc.ports.values())
        ns.setup()
        await ns.ping()
        gbps = await ns.iperf(2)
        assert gbps > 0.05, gbps
        ports = {p["name"]: p for p in svc.status()["ports"]}
        a = ports["a"]
        # segments crossed whole: on average far more than one MTU per frame
        assert a["rx_bytes"] / a["rx_frames"] > 1514, a
        assert not a["drops"] and not ports["b"]["drops"], ports
        # A capture sees real frames only (segmented in software, then the
        # kernel's once the offloads are off) and TCP still flows.
        pcap = tmp_path / "cap.pcap"
        session = svc.start_capture(path=str(pcap))
        gbps2 = await ns.iperf(2)
        assert gbps2 > 0.02
        assert not any(p.offloaded for p in svc.ports.values())
        session.stop("done")
        await trio.sleep(1.2)  # the ticker turns them on again
        assert all(p.offloaded for p in svc.ports.values())
        frames = rdpcap(str(pcap))
        assert len(frames) > 100
        assert max(len(f) for f in frames) <= 1514
        for f in [f for f in frames if TCP in f and len(f) > 1000][:200]:
            tcp = f[TCP]
            want = tcp.chksum
            again = f.copy()
            del again[TCP].chksum
            assert Ether(bytes(again))[TCP].chksum == want
    finally:
        ns.cleanup()
        await svc.aclose()


@needs_netns
async def test_a_udp_port_keeps_offloads_between_taps(nursery) -> None:
    """A udp port on the switch leaves the TAPs their offloads: TCP between the
    TAPs crosses in segments of more than one MTU, while the udp port (here the
    mirror of port a, so it sees every one of them) gets real frames only, each
    segmented and checksummed in software. A single TAP left has them off."""
    ns = Namespaces()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    vm = SwitchPortConfig(
        name="vm",
        kind="udp",
        local="127.0.0.1:0",
        remote=f"127.0.0.1:{peer.getsockname()[1]}",
    )
    a, b = tap_ports(ns)
    a = SwitchPortConfig(name=a.name, kind=a.kind, device=a.device, mirror_to="vm")
    svc = SwitchService(SwitchConfig(name="sw0", ports=[a, b, vm]))
    try:
        await nursery.start(svc.run)
        taps = [p for p in svc.ports.values() if p.kind == "tap"]
        assert all(p.vnet and p.offloaded for p in taps)
        ns.setup()
        await ns.ping()
        gbps = await ns.iperf(2)
        assert gbps > 0.02, gbps
        ports = {p["name"]: p for p in svc.status()["ports"]}
        assert ports["a"]["rx_bytes"] / ports["a"]["rx_frames"] > 1514, ports["a"]
        assert not ports["b"]["drops"], ports["b"]
        got = []
        while True:
            try:
                got.append(peer.recv(65536))
            except BlockingIOError:
                break
        assert len(got) > 100
        assert all(len(f) <= 1514 for f in got)
        big = [Ether(f) for f in got if len(f) > 1000]
        assert big
        for f in [f for f in big if TCP in f][:200]:
            want = f[TCP].chksum
            again = f.copy()
            del again[TCP].chksum
            assert Ether(bytes(again))[TCP].chksum == want
        # one TAP and the udp port: nothing to cross whole, the kernel segments
        svc.reconfigure(SwitchConfig(name="sw0", ports=[b, vm]))
        with trio.fail_after(5):
            while not all(p.kind != "tap" or not p.offloaded for p in svc.ports.values()):
                await trio.sleep(0.05)
            while "a" in svc.ports:
                await trio.sleep(0.05)
        assert not any(p.offloaded for p in taps)
    finally:
        ns.cleanup()
        await svc.aclose()
        peer.close()
