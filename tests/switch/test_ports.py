# tests/switch/test_ports.py - each port kind against real peers on loopback
# or unix sockets in the test's temp dir: frames in, frames out, peers that
# come and go, a bounded send queue, and input that must be refused.
"""Tests for netstore.switch.ports (udp, unixgram, stream, vde)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, UDP, Ether

from netstore.switch.limits import PORT_KINDS
from netstore.switch.ports import PORT_CLASSES
from netstore.switch.ports.base import QUEUE_FRAMES
from netstore.switch.ports.stream import MAX_STREAM_FRAME, StreamPort
from netstore.switch.ports.udp import UdpPort
from netstore.switch.ports.unixgram import UnixgramPort
from netstore.switch.ports.vde import VdePort, pack_request

TIMEOUT = 10  # every wait in these tests is bounded by this


def frame(i: int = 0, size: int = 0) -> bytes:
    pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(dst="10.0.0.2")
           / UDP(sport=1000 + i, dport=9) / (b"x" * size))
    return bytes(pkt)


class Host:
    """A stand-in for the switch service: records what ports report."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.links: list[tuple[str, bool]] = []
        self.ports: dict[str, object] = {}
        self.changed = trio.Event()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def deliver(self, port: str, frames: list[bytes]) -> None:
        self.frames.extend((port, f) for f in frames)
        self._poke()

    def link_changed(self, port: str, up: bool) -> None:
        self.links.append((port, up))
        self._poke()

    def attach(self, port) -> None:
        self.ports[port.name] = port
        self._poke()

    def detach(self, port) -> None:
        del self.ports[port.name]
        self._poke()

    async def until(self, cond) -> None:
        with trio.fail_after(TIMEOUT):
            while not cond():
                await self.changed.wait()


async def recv_dgram(sock: trio.socket.SocketType) -> bytes:
    with trio.fail_after(TIMEOUT):
        return await sock.recv(70000)


# -- udp ------------------------------------------------------------------------------

async def test_udp_learns_peer_and_exchanges_frames(nursery) -> None:
    host = Host()
    port = UdpPort("p1", None, host, local="127.0.0.1:0")
    addr = await nursery.start(port.run)
    h, p = addr.rsplit(":", 1)
    assert not port.link_up, "no remote and nothing received yet: no peer"
    port.send(frame(9))
    assert port.drops["no_peer"] == 1

    vm = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await vm.bind(("127.0.0.1", 0))
    sent = [frame(i, i * 100) for i in range(10)]
    for f in sent:
        await vm.sendto(f, (h, int(p)))
    await host.until(lambda: len(host.frames) == 10)
    assert [f for _, f in host.frames] == sent
    assert port.link_up and host.links == [("p1", True)]
    assert port.peer == f"127.0.0.1:{vm.getsockname()[1]}"
    # 1500-byte payload and a jumbo one leave whole, one per datagram
    for f in (frame(1, 1458), frame(2, 8000)):
        port.send(f)
        assert await recv_dgram(vm) == f
    vm.close()
    port.close()


async def test_udp_with_remote_sends_before_receiving(nursery) -> None:
    host = Host()
    vm = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await vm.bind(("127.0.0.1", 0))
    port = UdpPort("p1", None, host, local="127.0.0.1:0",
                   remote=f"127.0.0.1:{vm.getsockname()[1]}")
    await nursery.start(port.run)
    assert port.link_up
    port.send(frame(3))
    assert await recv_dgram(vm) == frame(3)
    port.close()


async def test_udp_bind_conflict_raises(nursery) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = UdpPort("p1", None, Host(), local=f"127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(OSError) as caught:
            await nursery.start(port.run)
        assert caught.value.errno == errno.EADDRINUSE


# -- unixgram -------------------------------------------------------------------------

async def test_unixgram_learns_and_answers(nursery, tmp_path: Path) -> None:
    host = Host()
    local = str(tmp_path / "sw.sock")
    port = UnixgramPort("u1", None, host, local=local)
    await nursery.start(port.run)
    vm = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await vm.bind(str(tmp_path / "vm.sock"))
    # an unbound sender has no address: its frames count, but it is not a peer
    anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    anon.sendto(frame(0), local)
    anon.close()
    await host.until(lambda: len(host.frames) == 1)
    assert not port.link_up
    await vm.sendto(frame(1), local)
    await host.until(lambda: len(host.frames) == 2)
    assert port.link_up and port.peer == str(tmp_path / "vm.sock")
    port.send(frame(5, 1400))
    assert await recv_dgram(vm) == frame(5, 1400)
    port.close()
    await trio.sleep(0.05)
    assert not os.path.exists(local), "the socket file goes with the port"


async def test_unixgram_with_remote(nursery, tmp_path: Path) -> None:
    vm = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await vm.bind(str(tmp_path / "vm.sock"))
    port = UnixgramPort("u1", None, Host(), local=str(tmp_path / "sw.sock"),
                        remote=str(tmp_path / "vm.sock"))
    await nursery.start(port.run)
    port.send(frame(7))
    assert await recv_dgram(vm) == frame(7)
    port.close()


# -- stream ---------------------------------------------------------------------------

def framed(*frames: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)


async def read_framed(stream: trio.SocketStream, n: int) -> list[bytes]:
    buf = b""
    out: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        while len(out) < n:
            while len(buf) >= 4 and len(buf) - 4 >= struct.unpack_from(">I", buf)[0]:
                size = struct.unpack_from(">I", buf)[0]
                out.append(buf[4 : 4 + size])
                buf = buf[4 + size :]
            if len(out) >= n:
                break
            data = await stream.receive_some(65536)
            assert data, "stream closed early"
            buf += data
    return out


async def test_stream_tcp_listen_frames_both_ways(nursery) -> None:
    host = Host()
    port = StreamPort("s1", None, host, listen="127.0.0.1:0")
    addr = await nursery.start(port.run)
    h, p = addr.rsplit(":", 1)
    assert not port.link_up
    client = await trio.open_tcp_stream(h, int(p))
    await host.until(lambda: port.link_up)
    sent = [frame(i, i * 37) for i in range(20)] + [frame(99, 9000)]
    data = framed(*sent)
    # in odd pieces: prefixes and frames split across segments
    for i in range(0, len(data), 777):
        await client.send_all(data[i : i + 777])
    await host.until(lambda: len(host.frames) == len(sent))
    assert [f for _, f in host.frames] == sent
    for f in sent[:5]:
        port.send(f)
    assert await read_framed(client, 5) == sent[:5]
    await client.aclose()
    await host.until(lambda: not port.link_up)
    assert host.links == [("s1", True), ("s1", False)]
    port.close()


async def test_stream_unix_peer_disconnects_and_reconnects(nursery, tmp_path: Path) -> None:
    host = Host()
    path = str(tmp_path / "s.sock")
    port = StreamPort("s1", None, host, listen=path)
    await nursery.start(port.run)
    for round_ in range(3):
        client = await trio.open_unix_socket(path)
        await host.until(lambda: port.link_up)
        await client.send_all(framed(frame(round_)))
        await host.until(lambda r=round_: len(host.frames) == r + 1)
        port.send(frame(50 + round_))
        assert await read_framed(client, 1) == [frame(50 + round_)]
        await client.aclose()
        await host.until(lambda: not port.link_up)
        port.send(frame(0))  # nobody there: counted, not queued
    assert port.drops["no_peer"] == 3
    assert port.connections == 3
    assert host.links == [("s1", True), ("s1", False)] * 3
    port.close()


async def test_stream_second_peer_refused_while_first_connected(nursery) -> None:
    host = Host()
    port = StreamPort("s1", None, host, listen="127.0.0.1:0")
    h, p = (await nursery.start(port.run)).rsplit(":", 1)
    first = await trio.open_tcp_stream(h, int(p))
    await host.until(lambda: port.link_up)
    second = await trio.open_tcp_stream(h, int(p))
    with trio.fail_after(TIMEOUT):
        assert await second.receive_some(10) == b""
    await first.send_all(framed(frame(1)))
    await host.until(lambda: len(host.frames) == 1)
    await first.aclose()
    await second.aclose()
    port.close()


async def test_stream_oversize_prefix_drops_only_that_connection(nursery, caplog) -> None:
    host = Host()
    port = StreamPort("s1", None, host, listen="127.0.0.1:0")
    h, p = (await nursery.start(port.run)).rsplit(":", 1)
    bad = await trio.open_tcp_stream(h, int(p))
    await host.until(lambda: port.link_up)
    await bad.send_all(framed(frame(1)) + struct.pack(">I", MAX_STREAM_FRAME + 1) + b"z" * 100)
    with trio.fail_after(TIMEOUT):
        while await bad.receive_some(100):
            pass
    await host.until(lambda: not port.link_up)
    assert [f for _, f in host.frames] == [frame(1)]
    assert port.drops["oversize_prefix"] == 1
    assert "length prefix" in caplog.text
    good = await trio.open_tcp_stream(h, int(p))
    await good.send_all(framed(frame(2)))
    await host.until(lambda: len(host.frames) == 2)
    await good.aclose()
    await bad.aclose()
    port.close()


async def test_stream_connect_mode_retries_and_reconnects(nursery) -> None:
    host = Host()
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    h, p = listener.getsockname()
    listener.close()  # nobody listens yet: the port keeps retrying
    port = StreamPort("c1", None, host, connect=f"{h}:{p}")
    await nursery.start(port.run)
    await trio.sleep(0.3)
    assert not port.link_up
    listeners = await trio.open_tcp_listeners(p, host=h)
    for round_ in range(2):
        with trio.fail_after(TIMEOUT):
            peer = await listeners[0].accept()
        await host.until(lambda: port.link_up)
        port.send(frame(round_))
        assert await read_framed(peer, 1) == [frame(round_)]
        await peer.send_all(framed(frame(10 + round_)))
        await host.until(lambda r=round_: len(host.frames) == r + 1)
        await peer.aclose()
        await host.until(lambda: not port.link_up)
    await listeners[0].aclose()
    port.close()


async def test_stream_queue_is_bounded_when_peer_does_not_read(nursery) -> None:
    host = Host()
    port = StreamPort("s1", None, host, listen="127.0.0.1:0")
    h, p = (await nursery.start(port.run)).rsplit(":", 1)
    client = socket.create_connection((h, int(p)))
    await host.until(lambda: port.link_up)
    big = frame(0, 8000)
    n = QUEUE_FRAMES * 4
    for _ in range(n):
        port.send(big)
    assert port.drops["queue"] > 0
    assert len(port._queue) <= QUEUE_FRAMES
    # whatever was queued arrives whole and in order once the peer reads
    got = 0
    buf = b""
    expected = n - port.drops["queue"]
    deadline = trio.current_time() + TIMEOUT
    client.setblocking(False)
    while got < expected and trio.current_time() < deadline:
        try:
            data = client.recv(1 << 20)
        except BlockingIOError:
            await trio.sleep(0)
            continue
        buf += data
        while len(buf) >= 4 and len(buf) - 4 >= struct.unpack_from(">I", buf)[0]:
            size = struct.unpack_from(">I", buf)[0]
            assert buf[4 : 4 + size] == big
            buf = buf[4 + size :]
            got += 1
    assert got == expected
    client.close()
    port.close()


# -- vde ------------------------------------------------------------------------------

async def vde_client(ctl: str, data_path: str, request: bytes | None = None):
    """A hand-rolled libvdeplug: returns (ctl stream, data socket, switch data address)."""
    data = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await data.bind(data_path)
    stream = await trio.open_unix_socket(ctl)
    await stream.send_all(request if request is not None else pack_request(data_path, "test"))
    with trio.fail_after(TIMEOUT):
        answer = await stream.receive_some(200)
    return stream, data, answer


async def test_vde_client_becomes_a_dynamic_port(nursery, tmp_path: Path) -> None:
    host = Host()
    vde_dir = str(tmp_path / "vde")
    port = VdePort("v", None, host, path=vde_dir)
    assert await nursery.start(port.run) == vde_dir
    ctl = os.path.join(vde_dir, "ctl")
    stream, data, answer = await vde_client(ctl, str(tmp_path / "c1"))
    assert len(answer) == 110
    family, raw = struct.unpack("=H108s", answer)
    assert family == socket.AF_UNIX
    switch_data = raw.split(b"\0")[0].decode()
    assert switch_data.startswith(vde_dir + "/")
    await host.until(lambda: "v.1" in host.ports and host.ports["v.1"].link_up)
    client_port = host.ports["v.1"]
    await data.sendto(frame(1), switch_data)
    await host.until(lambda: host.frames == [("v.1", frame(1))])
    client_port.send(frame(2))
    assert await recv_dgram(data) == frame(2)
    # a second client is another port
    stream2, data2, _ = await vde_client(ctl, str(tmp_path / "c2"))
    await host.until(lambda: "v.2" in host.ports)
    # leaving: closing ctl removes the port and its data socket
    await stream.aclose()
    await host.until(lambda: "v.1" not in host.ports)
    assert not os.path.exists(switch_data)
    assert set(host.ports) == {"v.2"}
    await stream2.aclose()
    await host.until(lambda: not host.ports)
    data.close()
    data2.close()
    port.close()


@pytest.mark.parametrize(
    "request_, why",
    [
        (struct.pack("=III", 0xDEADBEEF, 3, 0) + bytes(110), "wrong magic"),
        (struct.pack("=III", 0xFEEDFACE, 2, 0) + bytes(110), "version 2"),
        (struct.pack(">III", 0xFEEDFACE, 3, 0) + bytes(110), "wrong magic"),  # byte order
        (b"GET / HTTP/1.0\r\n\r\n" + bytes(120), "wrong magic"),
    ],
)
async def test_vde_wrong_magic_or_version_refused(nursery, tmp_path: Path, caplog,
                                                  request_: bytes, why: str) -> None:
    host = Host()
    port = VdePort("v", None, host, path=str(tmp_path / "vde"))
    await nursery.start(port.run)
    stream, data, answer = await vde_client(str(tmp_path / "vde" / "ctl"),
                                            str(tmp_path / "c"), request_)
    assert answer == b"", "refused: closed without an answer"
    assert not host.ports
    assert why in caplog.text
    # the directory still serves good clients
    good, gdata, answer = await vde_client(str(tmp_path / "vde" / "ctl"), str(tmp_path / "g"))
    assert len(answer) == 110
    await host.until(lambda: len(host.ports) == 1)
    await good.aclose()
    await stream.aclose()
    data.close()
    gdata.close()
    port.close()


def test_every_port_kind_has_its_class() -> None:
    assert tuple(PORT_CLASSES) == PORT_KINDS
