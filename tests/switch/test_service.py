# tests/switch/test_service.py - a whole switch service with real peers on
# loopback and unix sockets: forwarding and learning across port kinds, link
# state and counters in status(), VDE clients as dynamic ports, reloads.
"""Tests for netstore.switch.service."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
import trio

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.ports.vde import pack_request
from netstore.switch.service import SwitchService, SwitchServiceError
from tests.switch.peers import (
    MAC_A,
    MAC_B,
    MAC_C,
    TIMEOUT,
    UdpPeer,
    arp_who_has,
    ping,
    start,
    udp_port,
    until,
)


async def test_three_udp_ports_learn_and_stop_flooding(nursery) -> None:
    svc, addrs = await start(nursery, SwitchConfig(
        name="sw0", ports=[udp_port("a"), udp_port("b"), udp_port("c")]))
    a, b, c = [await UdpPeer(addrs[n]).open() for n in "abc"]
    # A udp port without remote learns its peer from the first datagram: each
    # NIC says hello (a broadcast), which reaches the NICs already known.
    await a.send(arp_who_has(MAC_A))
    await until(lambda: svc.ports["a"].link_up)
    await b.send(arp_who_has(MAC_B))
    assert await a.recv() == arp_who_has(MAC_B)
    await c.send(arp_who_has(MAC_C))
    assert await a.recv() == await b.recv() == arp_who_has(MAC_C)  # noqa: PLR0124
    # unknown unicast floods; known unicast goes to its port only
    await a.send(ping(MAC_A, "02:00:00:00:00:dd"))
    assert await b.recv() == await c.recv() == ping(MAC_A, "02:00:00:00:00:dd")  # noqa: PLR0124
    await a.send(ping(MAC_A, MAC_B, 2))
    assert await b.recv() == ping(MAC_A, MAC_B, 2)
    await b.send(ping(MAC_B, MAC_A, 3))
    assert await a.recv() == ping(MAC_B, MAC_A, 3)
    assert await c.nothing() and await a.nothing(0.05) and await b.nothing(0.05)
    st = svc.status()
    macs = {(m["mac"], m["port"]) for m in st["macs"]}
    assert (MAC_A, "a") in macs and (MAC_B, "b") in macs
    ports = {p["name"]: p for p in st["ports"]}
    assert ports["a"]["kind"] == "udp" and ports["a"]["link"] == "up"
    assert ports["a"]["rx_frames"] == 3 and ports["a"]["tx_frames"] == 3
    assert ports["c"]["rx_frames"] == 1 and ports["c"]["tx_frames"] == 1
    assert ports["b"]["rx_frames"] == 2 and ports["b"]["tx_frames"] == 3
    assert (MAC_C, "c") in macs


async def test_udp_to_stream_and_link_in_status(nursery, tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("u"), SwitchPortConfig(name="s", kind="stream", listen=path)]))
    assert addrs["s"] == path
    port = lambda: {p["name"]: p for p in svc.status()["ports"]}["s"]  # noqa: E731
    assert port()["link"] == "down"
    u = await UdpPeer(addrs["u"]).open()
    for round_ in range(2):
        s = await trio.open_unix_socket(path)
        await until(lambda: port()["link"] == "up")
        await u.send(arp_who_has(MAC_A))
        buf = b""
        with trio.fail_after(TIMEOUT):
            while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">I", buf)[0]:
                buf += await s.receive_some(65536)
        assert buf[4:] == arp_who_has(MAC_A)
        f = ping(MAC_B, MAC_A, round_)
        await s.send_all(struct.pack(">I", len(f)) + f)
        assert await u.recv() == f
        await s.aclose()
        await until(lambda: port()["link"] == "down")
    assert port()["connections"] == 2


async def test_vde_clients_are_ports_of_the_switch(nursery, tmp_path: Path) -> None:
    vde = str(tmp_path / "vde")
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("u"), SwitchPortConfig(name="v", kind="vde", path=vde, vlan=1)]))
    assert addrs["v"] == vde
    data = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await data.bind(str(tmp_path / "client"))
    ctl = await trio.open_unix_socket(vde + "/ctl")
    await ctl.send_all(pack_request(str(tmp_path / "client"), "qemu"))
    with trio.fail_after(TIMEOUT):
        answer = await ctl.receive_some(200)
    switch_data = answer[2:].split(b"\0")[0].decode()
    await until(lambda: "v.1" in svc.ports and svc.ports["v.1"].link_up)
    u = await UdpPeer(addrs["u"]).open()
    await u.send(arp_who_has(MAC_A))  # hello: the udp port learns its peer
    with trio.fail_after(TIMEOUT):
        assert await data.recv(70000) == arp_who_has(MAC_A)
    await data.sendto(arp_who_has(MAC_C), switch_data)
    assert await u.recv() == arp_who_has(MAC_C)
    await u.send(ping(MAC_A, MAC_C))
    with trio.fail_after(TIMEOUT):
        assert await data.recv(70000) == ping(MAC_A, MAC_C)
    names = {p["name"]: p for p in svc.status()["ports"]}
    assert names["v.1"]["rx_frames"] == 1 and names["v.1"]["description"] == "qemu"
    assert names["v"]["clients"] == ["v.1"]
    await ctl.aclose()
    await until(lambda: "v.1" not in svc.ports)
    assert "v.1" not in [p.name for p in svc.switch.ports()]
    data.close()


async def test_port_in_use_refuses_start(nursery) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        busy = f"127.0.0.1:{s.getsockname()[1]}"
        svc = SwitchService(SwitchConfig(name="sw0", ports=[
            udp_port("ok"), SwitchPortConfig(name="bad", kind="udp", local=busy)]))
        with pytest.raises(SwitchServiceError, match="port bad"):
            await nursery.start(svc.run)


async def test_reconfigure_adds_and_removes_ports(nursery, tmp_path: Path) -> None:
    keep = udp_port("keep")
    cfg = SwitchConfig(name="sw0", ports=[keep, udp_port("gone")])
    svc, addrs = await start(nursery, cfg)
    k = await UdpPeer(addrs["keep"]).open()
    await k.send(arp_who_has(MAC_A))
    await until(lambda: svc.ports["keep"].link_up)
    path = str(tmp_path / "new.sock")
    svc.reconfigure(SwitchConfig(name="sw0", mac_aging_s=30, ports=[
        keep, SwitchPortConfig(name="new", kind="stream", listen=path)]))
    await until(lambda: "new" in svc.ports and "gone" not in svc.ports)
    assert [p.name for p in svc.switch.ports()] == ["keep", "new"]
    assert svc.ports["keep"].link_up, "an unchanged port keeps its peer"
    assert svc.switch.aging_s == 30
    s = await trio.open_unix_socket(path)
    await until(lambda: svc.ports["new"].link_up)
    f = ping(MAC_B, MAC_A)
    await s.send_all(struct.pack(">I", len(f)) + f)
    assert await k.recv() == f
    await s.aclose()


async def test_aging_forgets_macs(nursery, autojump_clock) -> None:
    now = [1000.0]  # the service's clock, which it gives the core
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", mac_aging_s=5,
                                                   ports=[udp_port("a"), udp_port("b")]),
                             clock=lambda: now[0])
    a = await UdpPeer(addrs["a"]).open()
    await a.send(arp_who_has(MAC_A))
    await until(lambda: svc.status()["mac_count"] == 1)
    now[0] += 4.9
    await trio.sleep(2)
    assert svc.status()["mac_count"] == 1, "not aged yet"
    now[0] += 0.2  # past the 5 s aging: the next tick sweeps
    await trio.sleep(2)
    assert svc.status()["mac_count"] == 0
    assert svc.status()["macs"] == []


# -- port settings from the config: mirroring, port security, storm limits ------------

async def test_mirror_port_receives_copies_and_status_shows_it(nursery) -> None:
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("a", mirror_to="m"), udp_port("b"), udp_port("m")]))
    a, b, m = [await UdpPeer(addrs[n]).open() for n in "abm"]
    await m.send(arp_who_has(MAC_C))  # the mirror port learns its peer; the frame is dropped
    await until(lambda: svc.ports["m"].link_up)
    await a.send(arp_who_has(MAC_A))  # in on a: copied to m (a's peer not known yet)
    assert await m.recv() == arp_who_has(MAC_A)
    await b.send(arp_who_has(MAC_B))  # out of a: copied to m as sent
    assert await a.recv() == arp_who_has(MAC_B)
    assert await m.recv() == arp_who_has(MAC_B)
    await a.send(ping(MAC_A, MAC_B, 1))
    assert await b.recv() == ping(MAC_A, MAC_B, 1)
    assert await m.recv() == ping(MAC_A, MAC_B, 1)
    assert await m.nothing() and await b.nothing(0.05), "each frame copied once, m never flooded"
    ports = {p["name"]: p for p in svc.status()["ports"]}
    assert ports["a"]["mirror_to"] == "m" and ports["m"]["mirror_of"] == ["a"]
    assert ports["m"]["drops"] == {"mirror": 1} and ports["m"]["tx_frames"] == 3
    assert MAC_C not in {x["mac"] for x in svc.status()["macs"]}


async def test_bound_mac_drops_other_sources_as_security(nursery) -> None:
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("vm", bound_mac=MAC_A.upper()), udp_port("b")]))
    vm, b = [await UdpPeer(addrs[n]).open() for n in ("vm", "b")]
    await b.send(arp_who_has(MAC_B))
    await until(lambda: svc.ports["b"].link_up)
    await vm.send(arp_who_has(MAC_A))
    assert await b.recv() == arp_who_has(MAC_A)
    await vm.send(ping(MAC_C, MAC_B, 1))  # a spoofed source
    await vm.send(ping("02:00:00:00:00:0d", MAC_B, 2))
    await vm.send(ping(MAC_A, MAC_B, 3))
    assert await b.recv() == ping(MAC_A, MAC_B, 3)
    assert await b.nothing()
    port = {p["name"]: p for p in svc.status()["ports"]}["vm"]
    assert port["drops"] == {"security": 2} and port["rx_frames"] == 4
    assert port["bound_mac"] == MAC_A
    assert {x["mac"] for x in svc.status()["macs"]} == {MAC_A, MAC_B}


async def test_max_macs_limits_the_sources_of_a_port(nursery) -> None:
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("vm", max_macs=2), udp_port("b")]))
    vm, b = [await UdpPeer(addrs[n]).open() for n in ("vm", "b")]
    await b.send(arp_who_has(MAC_B))
    await until(lambda: svc.ports["b"].link_up)
    sources = [f"02:00:00:00:01:{i:02x}" for i in range(4)]
    for i, src in enumerate(sources):
        await vm.send(ping(src, MAC_B, i))
    assert [await b.recv() for _ in range(2)] == [ping(src, MAC_B, i)
                                                   for i, src in enumerate(sources[:2])]
    assert await b.nothing()
    port = {p["name"]: p for p in svc.status()["ports"]}["vm"]
    assert port["drops"] == {"security": 2} and port["max_macs"] == 2


async def test_storm_limit_drops_broadcasts_above_the_rate(nursery) -> None:
    svc, addrs = await start(nursery, SwitchConfig(name="sw0", ports=[
        udp_port("vm", storm_pps=5), udp_port("b")]))
    vm, b = [await UdpPeer(addrs[n]).open() for n in ("vm", "b")]
    await b.send(arp_who_has(MAC_B))
    await until(lambda: svc.ports["b"].link_up)
    for _ in range(50):  # far faster than 5 a second
        await vm.send(arp_who_has(MAC_A))
    await vm.send(ping(MAC_A, MAC_B, 1))  # unicast is not limited
    received = 0
    while not await b.nothing(0.3):
        received += 1
    port = {p["name"]: p for p in svc.status()["ports"]}["vm"]
    assert port["storm_pps"] == 5 and port["rx_frames"] == 51
    # a full bucket lets one second's worth through, then about 5 a second
    storm = port["drops"].get("storm", 0)
    assert 35 <= storm <= 45 and port["drops"] == {"storm": storm}
    assert received == 51 - storm
