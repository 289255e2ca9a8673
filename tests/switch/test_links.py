# tests/switch/test_links.py - impaired links, link state and flaps of a
# running switch service with real udp and stream peers on loopback: frames
# lost, delayed on the timer (not a sleep: other ports keep going), the link
# set down and up, a stream peer disconnected, captures that show what an
# impairment dropped and why (read by tshark), the same drops for one seed,
# and impairment-only reloads applied without reopening the port.
"""Tests for netstore.switch.links in a SwitchService."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import trio

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.impairments import parse_flap, parse_impairment
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


async def pair(nursery, **kw):
    """A switch of udp ports a, b (and c) whose peers have introduced themselves."""
    names = kw.pop("names", "ab")
    cfg = SwitchConfig(name="sw0", ports=[udp_port(n) for n in names], **kw)
    svc, addrs = await start(nursery, cfg)
    peers = {n: await UdpPeer(addrs[n]).open() for n in names}
    macs = {"a": MAC_A, "b": MAC_B, "c": MAC_C}
    for n in names:
        await peers[n].send(arp_who_has(macs[n]))
        await until(lambda n=n: svc.ports[n].link_up)
    for n in names:  # drain the floods of the introductions
        while not await peers[n].nothing(0.05):
            pass
    return svc, peers


def numbered(i: int) -> bytes:
    return ping(MAC_A, MAC_B, i % 65536)[:-4] + struct.pack("!I", i)


async def collect(peer: UdpPeer, wait: float = 0.3) -> list[bytes]:
    got = []
    while True:
        with trio.move_on_after(wait):
            got.append(await peer.sock.recv(70000))
            continue
        return got


async def test_loss_on_out_drops_frames_and_clearing_brings_them_back(nursery) -> None:
    svc, p = await pair(nursery)
    svc.set_impairment("b", "out", parse_impairment({"loss": "100%"}))
    for i in range(20):
        await p["a"].send(numbered(i))
    assert await p["b"].nothing(0.3)
    await p["b"].send(ping(MAC_B, MAC_A, 1))  # the other direction is not impaired
    assert await p["a"].recv() == ping(MAC_B, MAC_A, 1)
    row = {r["port"]: r for r in svc.link_show()}["b"]
    assert row["out"]["counters"]["loss"] == 20 and row["in"] is None
    assert row["out"]["settings"] == {"loss": "100%"}
    svc.set_impairment("b", "out", None)
    await p["a"].send(numbered(99))
    assert await p["b"].recv() == numbered(99)
    assert {r["port"]: r for r in svc.link_show()}["b"]["out"] is None


async def test_delay_holds_frames_on_a_timer_while_other_ports_go_on(nursery) -> None:
    svc, p = await pair(nursery, names="abc")
    svc.set_impairment("b", "out", parse_impairment({"delay": "200ms"}))
    t0 = time.monotonic()
    await p["a"].send(numbered(1))
    await p["c"].send(ping(MAC_C, MAC_A, 5))  # c -> a is not delayed
    assert await p["a"].recv() == ping(MAC_C, MAC_A, 5)
    assert time.monotonic() - t0 < 0.15
    assert await p["b"].recv() == numbered(1)
    assert time.monotonic() - t0 >= 0.2
    c = {r["port"]: r for r in svc.link_show()}["b"]["out"]["counters"]
    assert c["delayed"] == 1 and c["passed"] == 1 and c["held"] == 0


async def test_inbound_delay_is_what_the_peer_sends(nursery) -> None:
    svc, p = await pair(nursery)
    svc.set_impairment("a", "in", parse_impairment({"delay": "150ms"}))
    t0 = time.monotonic()
    await p["a"].send(numbered(2))
    assert await p["b"].recv() == numbered(2)
    assert time.monotonic() - t0 >= 0.15


async def test_link_down_stops_both_ways_and_up_resumes(nursery) -> None:
    svc, p = await pair(nursery)
    svc.set_admin("b", False)
    await p["a"].send(numbered(1))
    await p["b"].send(ping(MAC_B, MAC_A, 1))
    assert await p["b"].nothing(0.2) and await p["a"].nothing(0.05)
    row = {r["port"]: r for r in svc.link_show()}["b"]
    assert row["link"] == "down" and row["admin"] == "down"
    assert {r["name"]: r for r in svc.status()["ports"]}["b"]["link"] == "down"
    svc.set_admin("b", True)
    await p["b"].send(ping(MAC_B, MAC_A, 2))  # relearn b (its MAC went with the link)
    assert await p["a"].recv() == ping(MAC_B, MAC_A, 2)
    await p["a"].send(numbered(3))
    assert await p["b"].recv() == numbered(3)


async def test_a_stream_peer_is_disconnected_while_down_and_may_reconnect(
        nursery, tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    svc, _ = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("u"), SwitchPortConfig(name="s", kind="stream", listen=path)]))
    s = await trio.open_unix_socket(path)
    await until(lambda: svc.ports["s"].link_up)
    svc.set_admin("s", False)
    with trio.fail_after(5):
        assert await s.receive_some(100) == b""  # the switch closed it
    await s.aclose()
    s = await trio.open_unix_socket(path)  # refused while down
    with trio.fail_after(5):
        assert await s.receive_some(100) == b""
    await s.aclose()
    svc.set_admin("s", True)
    s = await trio.open_unix_socket(path)
    await until(lambda: svc.ports["s"].link_up)
    await s.aclose()


async def test_a_flap_takes_the_link_down_on_schedule(nursery) -> None:
    svc, p = await pair(nursery)
    svc.set_flap("b", parse_flap("down 300ms every 600ms"))
    await until(lambda: {r["port"]: r for r in svc.link_show()}["b"]["link"] == "down", 3)
    assert {r["port"]: r for r in svc.link_show()}["b"]["flap"] == "down 300ms every 600ms"
    await until(lambda: {r["port"]: r for r in svc.link_show()}["b"]["link"] == "up", 3)
    svc.set_flap("b", None)
    assert {r["port"]: r for r in svc.link_show()}["b"]["flap"] is None


async def test_same_seed_same_drops(nursery) -> None:
    async def dropped(seed: int) -> set[int]:
        async with trio.open_nursery() as n:
            svc, p = await pair(n, seed=seed)
            svc.set_impairment("b", "out", parse_impairment({"loss": "30%"}))
            for i in range(300):
                await p["a"].send(numbered(i))
                if i % 20 == 19:
                    await trio.sleep(0.005)
            got = await collect(p["b"])
            n.cancel_scope.cancel()
        return set(range(300)) - {struct.unpack("!I", f[-4:])[0] for f in got}

    first, again, other = await dropped(7), await dropped(7), await dropped(8)
    assert first == again and 40 < len(first) < 140
    assert other != first


@pytest.mark.skipif(TSHARK is None, reason="needs tshark")
async def test_a_capture_shows_what_the_link_dropped_and_why(nursery, tmp_path: Path) -> None:
    svc, p = await pair(nursery)
    svc.set_impairment("b", "out", parse_impairment({"loss": "100%"}))
    path = tmp_path / "b.pcapng"
    session = svc.start_capture(path=str(path), port="b")
    await p["a"].send(numbered(1))
    await until(lambda: session.frames >= 1)
    session.stop()
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.comment"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split("\n")[0].strip() == "netstore: dropped by loss"


async def test_a_reload_that_changes_only_links_keeps_the_port(nursery) -> None:
    svc, p = await pair(nursery)
    port = svc.ports["b"]
    cfg = dataclasses.replace(svc.config, ports=[
        svc.config.ports[0],
        dataclasses.replace(svc.config.ports[1], impair_out=parse_impairment({"loss": "100%"}))])
    svc.reconfigure(cfg)
    await until(lambda: svc.impairment("b", "out") is not None)
    assert svc.ports["b"] is port and port.link_up
    await p["a"].send(numbered(1))
    assert await p["b"].nothing(0.2)


async def test_an_out_links_port_counts_what_it_really_sent(nursery) -> None:
    svc, p = await pair(nursery, seed=11)
    svc.set_impairment("b", "out", parse_impairment(
        {"loss": "30%", "duplicate": "20%", "rate": "100kbit", "limit": 5}))
    before = svc.switch.counters("b").tx_frames
    for i in range(200):
        await p["a"].send(numbered(i))
        if i % 20 == 19:
            await trio.sleep(0.01)  # bursts: some overflow the 5-frame limit, some not
    got = await collect(p["b"])
    c = {r["port"]: r for r in svc.link_show()}["b"]["out"]["counters"]
    assert c["loss"] and c["duplicated"] and c["overflow"], c  # every correction was needed
    assert c["held"] == 0
    sent = svc.switch.counters("b")
    assert sent.tx_frames - before == len(got)
