# tests/switch/test_service_capture.py - capture sessions of a running switch
# service: files (pcap, pcapng with one interface per port named after the
# port), the whole-switch capture recording each frame once as it enters, a
# per-port capture both ways, live streams with count and duration, and the
# service's independence of the control socket.
"""Tests for the capture sessions of netstore.switch.service."""

from __future__ import annotations

import ast
import io
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trio
from scapy.utils import PcapNgReader, rdpcap

import netstore.switch.service as service_module
from netstore.config import SwitchConfig
from netstore.switch.capturefile import MAX_DELAY_S
from tests.switch.peers import (
    MAC_A,
    MAC_B,
    MAC_C,
    UdpPeer,
    arp_who_has,
    ping,
    start,
    udp_port,
    until,
)

TSHARK = shutil.which("tshark")


async def three_peers(nursery, **cfg):
    svc, addrs = await start(nursery, SwitchConfig(
        name="sw0", ports=[udp_port("a"), udp_port("b"), udp_port("c")], **cfg))
    peers = [await UdpPeer(addrs[n]).open() for n in "abc"]
    return svc, peers


async def hellos(svc, a, b, c) -> None:
    """Each peer says hello (a broadcast), so every port knows its peer."""
    await a.send(arp_who_has(MAC_A))
    await until(lambda: svc.ports["a"].link_up)
    await b.send(arp_who_has(MAC_B))
    assert await a.recv() == arp_who_has(MAC_B)
    await until(lambda: svc.ports["b"].link_up)
    await c.send(arp_who_has(MAC_C))
    assert await a.recv() == await b.recv() == arp_who_has(MAC_C)  # noqa: PLR0124


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    cmd = [TSHARK, "-r", str(path), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
async def test_whole_switch_capture_records_each_frame_once_as_it_enters(
        nursery, tmp_path: Path, suffix: str) -> None:
    svc, (a, b, c) = await three_peers(nursery)
    path = tmp_path / f"all.{suffix}"
    session = svc.start_capture(path=str(path))
    assert session.fmt == suffix
    await hellos(svc, a, b, c)  # 3 broadcasts, each flooded to 1-2 ports
    await a.send(ping(MAC_A, MAC_B, 1))
    assert await b.recv() == ping(MAC_A, MAC_B, 1)
    session.stop()
    assert svc.captures == {}
    frames = [bytes(f) for f in rdpcap(str(path))]
    assert frames == [arp_who_has(MAC_A), arp_who_has(MAC_B), arp_who_has(MAC_C),
                      ping(MAC_A, MAC_B, 1)]
    if suffix == "pcapng" and TSHARK:
        rows = tshark_fields(path, "frame.interface_name", "frame.interface_description",
                             "eth.src")
        assert rows == [["a", "sw0 port a", MAC_A], ["b", "sw0 port b", MAC_B],
                        ["c", "sw0 port c", MAC_C], ["a", "sw0 port a", MAC_A]]


async def test_port_capture_records_both_directions_on_its_interface(
        nursery, tmp_path: Path) -> None:
    svc, (a, b, c) = await three_peers(nursery)
    await hellos(svc, a, b, c)
    path = tmp_path / "b.pcapng"
    session = svc.start_capture(path=str(path), port="b")
    await a.send(ping(MAC_A, MAC_B, 7))  # out of b
    assert await b.recv() == ping(MAC_A, MAC_B, 7)
    await b.send(ping(MAC_B, MAC_C, 8))  # into b
    assert await c.recv() == ping(MAC_B, MAC_C, 8)
    await a.send(ping(MAC_A, MAC_C, 9))  # not b's
    assert await c.recv() == ping(MAC_A, MAC_C, 9)
    assert svc.status()["captures"][0]["frames"] == 2
    session.stop()
    assert [bytes(f) for f in rdpcap(str(path))] == [ping(MAC_A, MAC_B, 7),
                                                     ping(MAC_B, MAC_C, 8)]
    if TSHARK:
        rows = tshark_fields(path, "frame.interface_name", "frame.p2p_dir", "icmp.seq")
        # epb_flags direction: tshark shows outbound as 0 (sent), inbound as 1 (received)
        assert [(r[0], r[2]) for r in rows] == [("b", "7"), ("b", "8")]
        assert rows[0][1] != rows[1][1]


async def test_capture_from_config_and_reload(nursery, tmp_path: Path) -> None:
    first, second = tmp_path / "one.pcap", tmp_path / "two.pcapng"
    svc, (a, b, c) = await three_peers(nursery, capture=str(first))
    assert [s["to"] for s in svc.status()["captures"]] == [str(first)]
    await hellos(svc, a, b, c)
    svc.reconfigure(SwitchConfig(name="sw0", capture=str(second), ports=svc.config.ports))
    assert [s["to"] for s in svc.status()["captures"]] == [str(second)]
    await a.send(ping(MAC_A, MAC_B, 3))
    assert await b.recv() == ping(MAC_A, MAC_B, 3)
    assert len(rdpcap(str(first))) == 3
    # the file is readable while the capture still runs: whole records reach it
    # within MAX_DELAY_S (written by the file's thread, a batch at a time)
    t0 = time.monotonic()
    await until(lambda: second.stat().st_size > 0 and len(rdpcap(str(second))) == 1)
    assert time.monotonic() - t0 < MAX_DELAY_S + 2  # loose: a busy CI machine
    assert [bytes(f) for f in rdpcap(str(second))] == [ping(MAC_A, MAC_B, 3)]
    await svc.aclose()


async def test_live_capture_stream_with_count(nursery) -> None:
    svc, (a, b, c) = await three_peers(nursery)
    live = svc.capture_stream(fmt="pcapng", count=2)
    assert live.header == {"capture": "sw0", "format": "pcapng", "count": 2, "duration": None}
    got = bytearray()

    async def send(data: bytes) -> None:
        got.extend(data)

    async def reader() -> None:
        try:
            await live.produce(send)
        finally:
            live.close()

    done = trio.Event()

    async def run_reader() -> None:
        await reader()
        done.set()

    nursery.start_soon(run_reader)
    await hellos(svc, a, b, c)
    with trio.fail_after(10):
        await done.wait()
    assert svc.captures == {}
    frames = [bytes(f) for f in PcapNgReader(io.BytesIO(bytes(got)))]
    assert frames == [arp_who_has(MAC_A), arp_who_has(MAC_B)]


async def test_live_capture_duration_ends_without_frames(nursery, autojump_clock) -> None:
    svc, _ = await three_peers(nursery)
    live = svc.capture_stream(duration=3)
    got = bytearray()

    async def send(data: bytes) -> None:
        got.extend(data)

    with trio.fail_after(10):
        await live.produce(send)
    live.close()
    assert svc.captures == {}
    assert len(got) == 24  # the pcap file header alone


async def test_capture_refusals(nursery, tmp_path: Path) -> None:
    svc, _ = await three_peers(nursery)
    with pytest.raises(ValueError, match="no port 'x'"):
        svc.capture_stream(port="x")
    with pytest.raises(ValueError, match="count"):
        svc.capture_stream(count=0)
    with pytest.raises(ValueError, match="duration"):
        svc.capture_stream(duration=-1)
    with pytest.raises(ValueError, match="format"):
        svc.capture_stream(fmt="erf")
    with pytest.raises(FileNotFoundError):
        svc.start_capture(path=str(tmp_path / "no" / "such" / "dir.pcap"))
    assert svc.captures == {}


def test_the_service_does_not_import_the_control_socket() -> None:
    """architecture.md: cli/daemon -> services; the switch knows no control.py."""
    tree = ast.parse(Path(service_module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith(("netstore.control", "netstore.daemon", "netstore.cli"))
                   for m in imported), imported
    assert not hasattr(service_module, "_FileSink") and not hasattr(service_module, "_pcapng_block")
