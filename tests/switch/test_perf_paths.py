# tests/switch/test_perf_paths.py - the switch's fast paths when TAP offloads
# are off: real TCP segments of one flow read in one batch and bound for a TAP
# with virtio-net headers leave as one GSO frame (offload.TcpMerge). Checked
# with scapy (the merged frame segments back into exactly the frames merged;
# its partial checksum completes to the right one), what is never merged, and
# live: bytes through two namespaces over an in-process switch with offloads
# forced off arrive intact (sha256) while frames were merged.
"""Software GRO towards TAP ports on the plain path."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netstore.config import SwitchConfig
from netstore.switch.core import PortSettings, Switch
from netstore.switch.offload import VNET_HDR, VNET_HDR_LEN, TcpMerge, complete_checksum, segment
from netstore.switch.service import SwitchService
from tests.switch.netns_util import MAC_A, MAC_B, Namespaces, needs_netns, tap_ports

MSS = 1448


class FakePort:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, ...]] = []

    def send(self, frame: bytes) -> None:
        self.sent.append((frame,))

    def send_vnet(self, *parts: bytes) -> None:
        self.sent.append(tuple(bytes(p) for p in parts))


def segs(n: int, *, last: int = MSS, seq: int = 1000, flags_last: str = "PA") -> list[bytes]:
    out = []
    for i in range(n):
        size = MSS if i < n - 1 else last
        pay = bytes((seq + i * MSS + j) & 0xFF for j in range(size))
        pkt = (Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.1", dst="10.0.0.2", id=100 + i,
                                                 flags="DF")
               / TCP(sport=40000, dport=5201, seq=seq + i * MSS, ack=77, window=500,
                     flags="A" if i < n - 1 else flags_last,
                     options=[("NOP", None), ("NOP", None), ("Timestamp", (5, 6))])
               / pay)
        out.append(bytes(pkt))
    return out


def merge_all(frames: list[bytes]) -> FakePort:
    port = FakePort()
    m = TcpMerge.start(port, frames[0])
    assert m is not None
    for f in frames[1:]:
        if not m.add(f):
            m.flush()
            m = TcpMerge.start(port, f)
            if m is None:
                port.send(f)
                continue
    if m is not None:
        m.flush()
    return port


def test_merged_frame_segments_back_into_the_same_frames() -> None:
    frames = segs(10, last=700)
    port = merge_all(frames)
    assert len(port.sent) == 1
    hdr, *rest = port.sent[0]
    assert len(hdr) == VNET_HDR_LEN
    flags, gso_type, hdr_len, gso_size, cs, co = VNET_HDR.unpack(hdr)
    assert (flags, gso_type, gso_size, cs, co) == (1, 1, MSS, 34, 16)
    big = b"".join(rest)
    assert hdr_len == 34 + 32 and len(big) == hdr_len + 9 * MSS + 700
    assert IP(big[14:]).len == len(big) - 14
    # the IP header checksum is right; the partial TCP one completes to the right one
    ip = Ether(big)[IP]
    want = ip.chksum
    again = ip.copy()
    del again.chksum
    assert IP(bytes(again)).chksum == want
    done = Ether(complete_checksum(big, 34, 16))
    got = done[TCP].chksum
    del done[TCP].chksum
    assert Ether(bytes(done))[TCP].chksum == got
    # software segmentation gives back exactly what was merged
    assert segment(hdr, big) == frames


def test_what_is_not_merged() -> None:
    frames = segs(4)
    # a gap in the sequence: two frames out
    gap = frames[:2] + segs(2, seq=1000 + 3 * MSS)
    assert len(merge_all(gap).sent) == 2
    # PSH ends a merge; the next frame starts anew (or goes alone)
    assert len(merge_all(frames + segs(2, seq=1000 + 4 * MSS)).sent) == 2
    # a SYN, a FIN, a frame with another flow: never merged
    for odd in (segs(1, flags_last="S")[0], segs(1, flags_last="FA")[0]):
        port = FakePort()
        assert TcpMerge.start(port, odd) is None
        m = TcpMerge.start(port, frames[0])
        assert m is not None and not m.add(odd)
    other = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.1", dst="10.0.0.3")
                  / TCP(sport=40000, dport=5201, seq=1000 + MSS, flags="A") / bytes(MSS))
    m = TcpMerge.start(FakePort(), frames[0])
    assert m is not None and not m.add(other)
    # a single frame is sent as it is
    port = FakePort()
    m = TcpMerge.start(port, frames[0])
    assert m is not None
    m.flush()
    assert port.sent == [(frames[0],)]


def make_switch() -> Switch:
    sw = Switch("sw0", now=100.0, table_size=64)
    for s in (PortSettings("a", mtu=1500), PortSettings("b", mtu=1400),
              PortSettings("c", vlan=None, trunk=frozenset({1, 5}), native=1),
              PortSettings("d", vlan=5)):
        sw.add_port(s)
        sw.set_link(s.name, True)
    return sw


def eth(dst: str, src: str, size: int = 100, vlan: int | None = None) -> bytes:
    d, s = bytes.fromhex(dst * 6), bytes.fromhex(src * 6)
    tag = b"\x81\x00" + vlan.to_bytes(2, "big") if vlan is not None else b""
    return (d + s + tag + b"\x08\x00" + bytes(max(0, size - 14)))[:size]


def test_batch_receiver_forwards_and_counts_as_receive_does() -> None:
    """Runs of one flow, a MAC moving mid-run, floods, oversize frames for the
    other port, tags, broadcasts: the same pairs, counters and MAC table."""
    batch = [
        eth("0a", "02"),  # unknown: flooded
        eth("04", "02"), eth("04", "02"), eth("04", "02", 1400),
        eth("04", "02", 1514),  # fits a, too big for b
        eth("04", "02"), eth("04", "02"), eth("04", "02"),
        eth("02", "04"),  # a hairpin source: 04 moves to a (flap lock permitting)
        eth("04", "02"), eth("04", "02"),
        eth("ff", "02"), eth("ff", "02"),
        eth("06", "02", vlan=5), eth("06", "02", vlan=5),
        eth("06", "08"), eth("06", "08"),
        eth("04", "02", 10), eth("04", "02", 13), eth("04", "02", 1600),
        eth("01", "02"), eth("01", "02"),
    ]
    for ingress in ("a", "c"):
        one, many = make_switch(), make_switch()
        for sw in (one, many):  # 04 lives on b, 06 on c, 08 on d
            sw.receive("b", eth("ff", "04"))
            sw.receive("c", eth("ff", "06", vlan=5))
            sw.receive("d", eth("ff", "08"))
        want = [one.receive(ingress, f) for f in batch]
        full = many.receive
        calls = []
        many.receive = lambda port, f, calls=calls, full=full: calls.append(f) or full(port, f)  # type: ignore[method-assign]  # noqa: E501
        rx = many.batch_receiver(ingress)
        got = [rx(f) for f in batch]
        assert got == want
        assert len(calls) <= len(batch) - 4  # runs took the short way
        for name in "abcd":
            assert many.counters(name) == one.counters(name), name
        assert many.macs() == one.macs()


SINK = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5400)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

SOURCE = r"""
import socket, sys
data = bytes.fromhex(sys.argv[2]) * (int(sys.argv[3]) // 32)
c = socket.create_connection((sys.argv[1], 5400), timeout=20); c.sendall(data); c.close()
"""


@needs_netns
async def test_bytes_arrive_intact_with_merging_on_the_plain_path(nursery) -> None:
    ns = Namespaces()
    svc = SwitchService(SwitchConfig(name="sw0", ports=tap_ports(ns)))
    svc._update_offloads = lambda: None  # type: ignore[method-assign]  # the plain path
    merged = [0]
    try:
        await nursery.start(svc.run)
        assert not any(p.offloaded for p in svc.ports.values())
        b = svc.ports["b"]
        send_vnet = b.send_vnet  # type: ignore[attr-defined]

        def counting(*parts: bytes) -> None:
            merged[0] += 1
            send_vnet(*parts)

        b.send_vnet = counting  # type: ignore[attr-defined]
        ns.setup()
        await ns.ping()
        seed = hashlib.sha256(b"netstore").digest()
        size = 32 * 400_000  # 12.8 MB
        sink = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", ns.ns[1], sys.executable, "-c", SINK, ns.addr[1]],
            stdout=subprocess.PIPE)
        try:
            assert sink.stdout is not None
            with trio.fail_after(30):
                out = b""
                while b"ready\n" not in out:
                    out += await sink.stdout.receive_some()
                out = out.split(b"ready\n", 1)[1]
                r = await trio.run_process(
                    ["ip", "netns", "exec", ns.ns[0], sys.executable, "-c", SOURCE, ns.addr[1],
                     seed.hex(), str(size)], capture_stderr=True, check=False)
                assert r.returncode == 0, r.stderr.decode()
                while b"\n" not in out:
                    more = await sink.stdout.receive_some()
                    assert more, "the sink ended without a result"
                    out += more
            n, digest = out.split()
            assert int(n) == size
            assert digest.decode() == hashlib.sha256(seed * (size // 32)).hexdigest()
        finally:
            if sink.returncode is None:
                sink.kill()
            with trio.move_on_after(5):
                await sink.wait()
        assert merged[0] > 0
        ports = {p["name"]: p for p in svc.status()["ports"]}
        assert ports["a"]["rx_bytes"] / ports["a"]["rx_frames"] <= 1514  # real frames read
        assert not ports["b"]["drops"], ports["b"]
    finally:
        ns.cleanup()
        await svc.aclose()
