# tests/switch/test_vnic.py - tools/vnic (an asyncio VM NIC emulator, each on
# its own event loop in a thread) on the udp ports of a switch run by the real
# daemon (`netstore serve`): they ARP and ping each other through it, the
# switch learns (after the first reply nothing is flooded), access VLANs keep
# NICs apart, and a burst of frames arrives complete. Loopback only.
"""VM NIC emulators ping each other through a live daemon's switch."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port, netstore_command

pytest.importorskip("asyncio_dgram")

VNIC_PATH = Path(__file__).resolve().parents[2] / "tools" / "vnic"


def load_vnic() -> Any:
    loader = importlib.machinery.SourceFileLoader("vnic_tool", str(VNIC_PATH))
    spec = importlib.util.spec_from_loader("vnic_tool", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


vnic = load_vnic()

# name, VLAN, MAC, IP
NICS = [
    ("a", 1, "52:54:00:00:00:0a", "10.0.0.10"),
    ("b", 1, "52:54:00:00:00:0b", "10.0.0.11"),
    ("c", 1, "52:54:00:00:00:0c", "10.0.0.12"),
    ("d", 2, "52:54:00:00:00:0d", "10.0.0.13"),
]


def config(remotes: dict[str, int]) -> str:
    text = '[[switches]]\nname = "sw0"\n'
    for name, vlan, _mac, _ip in NICS:
        text += (
            f'\n[[switches.ports]]\nname = "{name}"\nkind = "udp"\n'
            f'local = "127.0.0.1:0"\nremote = "127.0.0.1:{remotes[name]}"\nvlan = {vlan}\n'
        )
    return text


def switch_addresses(ready: str) -> dict[str, int]:
    out = {}
    for word in ready.split():
        if word.startswith("switch="):
            sw_port, _, addr = word[len("switch=") :].partition("=")
            out[sw_port.partition(":")[2]] = int(addr.rpartition(":")[2])
    return out


def show(d: Any) -> dict[str, dict[str, Any]]:
    r = subprocess.run(
        netstore_command("switch", "show", "sw0", "--json", "--config", str(d.config_path)),
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)["ports"]}


@pytest.fixture
def lab(netstore_daemon):
    remotes = {name: free_port() for name, *_ in NICS}
    d = netstore_daemon(config(remotes))
    ports = switch_addresses(d.ready_line)
    nics: dict[str, Any] = {}
    try:
        for name, _vlan, mac, ip in NICS:
            nics[name] = vnic.VNicThread(
                ("127.0.0.1", remotes[name]), ("127.0.0.1", ports[name]), mac=mac, ip=f"{ip}/24"
            )
        yield d, nics
    finally:
        for n in nics.values():
            n.close()


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_ping_learns_then_stops_flooding(lab) -> None:
    d, nics = lab
    a, b, c = nics["a"], nics["b"], nics["c"]
    rtts = a.call(a.nic.ping, "10.0.0.11", 3, interval=0.05, timeout=2)
    assert all(r is not None for r in rtts), rtts
    # b counts a reply after sending it, in its own thread: a may see the last
    # reply before b's count moves
    assert wait_for(lambda: b.nic.counters["echo_replies"] == 3), dict(b.nic.counters)
    assert b.nic.counters["arp_replies"] == 1
    # c saw only the first ARP request (a broadcast), nothing after the reply
    assert wait_for(lambda: c.nic.counters["rx"] == 1)
    rtts = b.call(b.nic.ping, "10.0.0.10", 2, interval=0.05, timeout=2)  # b knows a's MAC
    assert all(r is not None for r in rtts), rtts
    time.sleep(0.2)
    assert c.nic.counters["rx"] == 1, dict(c.nic.counters)
    ports = show(d)
    assert ports["c"]["tx_frames"] == 1
    assert ports["d"]["tx_frames"] == 0  # another VLAN: not even the broadcast
    # a: ARP + 3 echoes out, ARP reply + 3 + 2 replies/requests in, 2 replies out
    assert ports["a"]["rx_frames"] == 1 + 3 + 2 and ports["b"]["rx_frames"] == 1 + 3 + 2
    r = subprocess.run(
        netstore_command(
            "switch", "show", "sw0", "--macs", "--json", "--config", str(d.config_path)
        ),
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=20,
    )
    macs = {(m["mac"], m["port"]) for m in json.loads(r.stdout)["macs"]}
    assert {("52:54:00:00:00:0a", "a"), ("52:54:00:00:00:0b", "b")} <= macs


def test_three_nics_ping_each_other(lab) -> None:
    _d, nics = lab
    for src, dst in (("a", "10.0.0.12"), ("c", "10.0.0.11"), ("b", "10.0.0.10")):
        n = nics[src]
        rtts = n.call(n.nic.ping, dst, 2, interval=0.02, timeout=2)
        assert all(r is not None for r in rtts), (src, dst, rtts)


def test_vlans_keep_nics_apart(lab) -> None:
    d, nics = lab
    a, dd = nics["a"], nics["d"]
    rtts = a.call(a.nic.ping, "10.0.0.13", 1, timeout=0.3)  # d is on VLAN 2
    assert rtts == [None]
    rtts = dd.call(dd.nic.ping, "10.0.0.10", 1, timeout=0.3)
    assert rtts == [None]
    assert a.nic.counters["arp_replies"] == 0 and dd.nic.counters["arp_replies"] == 0
    assert dd.nic.counters["rx"] == 0
    ports = show(d)
    assert ports["d"]["tx_frames"] == 0 and ports["a"]["tx_frames"] == 0
    # a's 3 ARP requests went to b and c only; d's 3 stayed in VLAN 2 (nobody there)
    assert ports["b"]["tx_frames"] == 3 and ports["c"]["tx_frames"] == 3


@pytest.mark.parametrize("size", [64, 1500])
def test_a_burst_arrives_complete(lab, size: int) -> None:
    _d, nics = lab
    a, b, c = nics["a"], nics["b"], nics["c"]
    # b's MAC is learnt first, so the burst is unicast (c must see none of it)
    assert b.call(b.nic.resolve, "10.0.0.10") is not None
    n = 2000
    bid = a.call(a.nic.burst, n, size, "52:54:00:00:00:0b", rate=20000)
    assert wait_for(lambda: b.nic.burst_received(bid) == n), b.nic.burst_received(bid)
    assert c.nic.burst_received() == 0


def test_command_line_pings_and_exits(netstore_daemon) -> None:
    ra, rb = free_port(), free_port()
    text = '[[switches]]\nname = "sw0"\n'
    for name, r in (("a", ra), ("b", rb)):
        text += (
            f'\n[[switches.ports]]\nname = "{name}"\nkind = "udp"\n'
            f'local = "127.0.0.1:0"\nremote = "127.0.0.1:{r}"\n'
        )
    d = netstore_daemon(text)
    ports = switch_addresses(d.ready_line)
    listener = subprocess.Popen(
        [
            sys.executable,
            str(VNIC_PATH),
            "--local",
            f"127.0.0.1:{rb}",
            "--remote",
            f"127.0.0.1:{ports['b']}",
            "--ip",
            "10.9.0.2/24",
            "--duration",
            "4",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # its socket is bound
        r = subprocess.run(
            [
                sys.executable,
                str(VNIC_PATH),
                "--local",
                f"127.0.0.1:{ra}",
                "--remote",
                f"127.0.0.1:{ports['a']}",
                "--ip",
                "10.9.0.1/24",
                "--ping",
                "10.9.0.2",
                "--count",
                "3",
                "--interval",
                "0.05",
                "--duration",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "3 sent, 3 received" in r.stdout
        out, _ = listener.communicate(timeout=20)
        result = json.loads(out.strip().splitlines()[-1])
        assert result["counters"]["echo_replies"] == 3
        assert listener.returncode == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(5)
