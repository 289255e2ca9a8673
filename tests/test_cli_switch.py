# tests/test_cli_switch.py - the switch as a user meets it: `netstore serve`
# with udp ports, peers sending scapy frames, `netstore switch list|show`,
# and `netstore capture ... -w - | tshark -r -` while the daemon runs.
"""Tests for `netstore switch` and `netstore capture` against a live daemon."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, Ether
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap

from tests.harness import netstore_command, netstore_env

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
SWITCH = """
[[switches]]
name = "sw0"

[[switches.ports]]
name = "a"
kind = "udp"
local = "127.0.0.1:0"

[[switches.ports]]
name = "b"
kind = "udp"
local = "127.0.0.1:0"

[[switches.ports]]
name = "s"
kind = "stream"
listen = "{tmp}/s.sock"
"""
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def addresses(ready: str) -> dict[str, tuple[str, int] | str]:
    out: dict = {}
    for word in ready.split():
        if word.startswith("switch="):
            sw_port, _, addr = word[len("switch="):].partition("=")
            host, _, port = addr.rpartition(":")
            out[sw_port] = (host, int(port)) if port.isdigit() else addr
    return out


def cli(d, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return d.cli(*args, timeout=timeout)


class Peer:
    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.to)

    def recv(self) -> bytes:
        return self.sock.recv(70000)


def hello(mac: str) -> bytes:
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=mac, pdst="10.0.0.9"))


def ping(src: str, dst: str, seq: int) -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(seq=seq))


def wait_link_up(d, port: str) -> None:
    """Wait until the switch learnt the peer of udp port ``port`` (its link is up):
    a frame flooded before that is not sent to it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = json.loads(cli(d, "switch", "show", "sw0", "--json").stdout)
        if {p["name"]: p["link"] for p in st["ports"]}.get(port) == "up":
            return
        time.sleep(0.05)
    pytest.fail(f"port {port} did not come up within 10 s")


def wait_capture_running(d, n: int = 1) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = json.loads(cli(d, "switch", "show", "sw0", "--json").stdout)
        if len(st["captures"]) >= n:
            return
        time.sleep(0.05)
    pytest.fail("the capture did not start within 10 s")


@needs_tshark
def test_ready_line_show_and_live_capture_through_tshark(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    addrs = addresses(d.ready_line)
    assert set(addrs) == {"sw0:a", "sw0:b", "sw0:s"}
    assert addrs["sw0:s"] == str(d.workdir / "s.sock")
    a, b = Peer(addrs["sw0:a"]), Peer(addrs["sw0:b"])

    pipeline = subprocess.Popen(
        " ".join(netstore_command("capture", "sw0", "-w", "-", "--count", "4",
                                  "--config", str(d.config_path)))
        + " | tshark -r - -T fields -e eth.src -e eth.dst -e icmp.seq",
        shell=True, cwd=d.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=netstore_env())
    try:
        wait_capture_running(d)
        a.send(hello(MAC_A))
        wait_link_up(d, "a")  # a's peer is learnt before b's hello is flooded to it
        b.send(hello(MAC_B))
        assert a.recv() == hello(MAC_B)
        a.send(ping(MAC_A, MAC_B, 1))
        assert b.recv() == ping(MAC_A, MAC_B, 1)
        b.send(ping(MAC_B, MAC_A, 2))
        assert a.recv() == ping(MAC_B, MAC_A, 2)
        out, err = pipeline.communicate(timeout=20)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait()
    lines = [ln.split("\t") for ln in out.splitlines()]
    assert lines == [
        [MAC_A, "ff:ff:ff:ff:ff:ff", ""],
        [MAC_B, "ff:ff:ff:ff:ff:ff", ""],
        [MAC_A, MAC_B, "1"],
        [MAC_B, MAC_A, "2"],
    ], err

    shown = cli(d, "switch", "show", "sw0", "--macs")
    assert shown.returncode == 0, shown.stderr
    assert MAC_A in shown.stdout and MAC_B in shown.stdout
    assert "MAC table" in shown.stdout and "ports" not in shown.stdout.split("MAC table")[0][40:]
    st = json.loads(cli(d, "switch", "show", "sw0", "--json").stdout)
    macs = {(m["mac"], m["port"]) for m in st["macs"]}
    assert macs == {(MAC_A, "a"), (MAC_B, "b")}
    ports = {p["name"]: p for p in st["ports"]}
    assert ports["a"]["link"] == "up" and ports["s"]["link"] == "down"
    assert ports["a"]["rx_frames"] == 2 and ports["a"]["tx_frames"] == 2
    assert st["captures"] == [], "the capture ended with its count"

    listed = cli(d, "switch", "list")
    assert listed.returncode == 0 and "sw0" in listed.stdout
    as_json = json.loads(cli(d, "switch", "list", "--json").stdout)
    assert as_json[0]["name"] == "sw0" and as_json[0]["mac_count"] == 2
    assert json.loads(cli(d, "status", "--json").stdout)["switches"][0]["name"] == "sw0"


def test_capture_to_files_per_port_and_duration(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    addrs = addresses(d.ready_line)
    a, b = Peer(addrs["sw0:a"]), Peer(addrs["sw0:b"])
    a.send(hello(MAC_A))
    wait_link_up(d, "a")  # else b's hello may be flooded before a's peer is known
    b.send(hello(MAC_B))
    assert a.recv() == hello(MAC_B)
    out = d.workdir / "b.pcapng"
    proc = subprocess.Popen(netstore_command("capture", "sw0:b", "-w", str(out), "--duration",
                                             "1.5", "--config", str(d.config_path)),
                            cwd=d.workdir, stderr=subprocess.PIPE, text=True,
                            env=netstore_env())
    wait_capture_running(d)
    a.send(ping(MAC_A, MAC_B, 7))  # rx on a, tx on b: in b's capture
    assert b.recv() == ping(MAC_A, MAC_B, 7)
    b.send(ping(MAC_B, MAC_A, 8))  # rx on b
    assert a.recv() == ping(MAC_B, MAC_A, 8)
    assert proc.wait(timeout=15) == 0, proc.stderr.read()
    frames = rdpcap(str(out))
    assert [bytes(f) for f in frames] == [ping(MAC_A, MAC_B, 7), ping(MAC_B, MAC_A, 8)]
    if shutil.which("tshark"):
        text = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e",
                               "frame.interface_name"], capture_output=True, text=True,
                              timeout=20).stdout
        assert text.split() == ["b", "b"]  # pcapng if_name: the plain port name


def records(path: Path) -> list:
    """The whole records in a pcap file so far (none before its header)."""
    try:
        return list(rdpcap(str(path)))
    except Exception:  # scapy: no header yet
        return []


def test_capture_from_config_file_survives_kill(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH.replace('name = "sw0"\n',
                                       'name = "sw0"\ncapture = "{tmp}/all.pcap"\n', 1))
    addrs = addresses(d.ready_line)
    a, b = Peer(addrs["sw0:a"]), Peer(addrs["sw0:b"])
    a.send(hello(MAC_A))
    wait_link_up(d, "a")  # else b's hello may be flooded before a's peer is known
    b.send(hello(MAC_B))
    assert a.recv() == hello(MAC_B)
    for i in range(5):
        a.send(ping(MAC_A, MAC_B, i))
        assert b.recv() == ping(MAC_A, MAC_B, i)
    path = d.workdir / "all.pcap"
    # records reach the file within milliseconds (written by the file's thread)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(records(path)) < 7:
        time.sleep(0.01)
    for i in range(5, 50):  # the daemon is killed while frames are being captured
        a.send(ping(MAC_A, MAC_B, i))
    d.kill()
    frames = rdpcap(str(path))  # whole records only, up to the last one written
    assert len(frames) >= 7 and bytes(frames[6]) == ping(MAC_A, MAC_B, 4)
    assert [bytes(f) for f in frames[7:]] == [ping(MAC_A, MAC_B, i)
                                              for i in range(5, 5 + len(frames) - 7)]


def test_refusals(netstore_daemon, tmp_path: Path) -> None:
    d = netstore_daemon(SWITCH)
    r = cli(d, "switch", "show", "nope")
    assert r.returncode == 1 and "no switch named 'nope'" in r.stderr
    r = cli(d, "capture", "sw0:nope", "-w", "-", "--count", "1")
    assert r.returncode == 1 and "no port 'nope'" in r.stderr
    r = cli(d, "capture", "sw0", "-w", "-", "--count", "0")
    assert r.returncode == 2
    r = cli(d, "switch")
    assert r.returncode == 2
    d.stop()
    r = cli(d, "switch", "list")
    assert r.returncode == 1 and "no netstore daemon is running" in r.stderr


POLICY = """
[[switches]]
name = "sw0"

[[switches.ports]]
name = "a"
kind = "udp"
local = "127.0.0.1:0"
bound_mac = "02:00:00:00:00:0A"
storm_pps = 50
mirror_to = "m"

[[switches.ports]]
name = "b"
kind = "udp"
local = "127.0.0.1:0"
max_macs = 3

[[switches.ports]]
name = "m"
kind = "udp"
local = "127.0.0.1:0"
"""


def test_show_ports_has_policy_counters_and_drops(netstore_daemon) -> None:
    d = netstore_daemon(POLICY)
    addrs = addresses(d.ready_line)
    a, b = Peer(addrs["sw0:a"]), Peer(addrs["sw0:b"])
    b.send(hello(MAC_B))
    wait_link_up(d, "b")
    a.send(hello(MAC_A))
    assert b.recv() == hello(MAC_A)
    a.send(ping("02:00:00:00:00:0c", MAC_B, 1))  # not a's bound MAC: dropped
    a.send(ping(MAC_A, MAC_B, 2))
    assert b.recv() == ping(MAC_A, MAC_B, 2)
    shown = cli(d, "switch", "show", "sw0", "--ports", "--macs")
    assert shown.returncode == 0, shown.stderr
    for text in ("policy", "mirror to m", "only 02:00:00:00:00:0a", "storm 50 pps",
                 "max 3 MACs", "mirror of a", "security 1", "MAC table"):
        assert text in shown.stdout, (text, shown.stdout)
    st = json.loads(cli(d, "switch", "show", "sw0", "--json").stdout)
    ports = {p["name"]: p for p in st["ports"]}
    assert ports["a"]["bound_mac"] == MAC_A and ports["a"]["storm_pps"] == 50
    assert ports["a"]["mirror_to"] == "m" and ports["m"]["mirror_of"] == ["a"]
    assert ports["b"]["max_macs"] == 3
    assert ports["a"]["drops"] == {"security": 1}
    assert (ports["a"]["rx_frames"], ports["a"]["tx_frames"]) == (3, 0)  # b said hello first
    assert ports["a"]["rx_bytes"] == len(hello(MAC_A)) + 2 * len(ping(MAC_A, MAC_B, 1))
    assert ports["b"]["tx_bytes"] == len(hello(MAC_A)) + len(ping(MAC_A, MAC_B, 2))
    assert {(m["vlan"], m["mac"], m["port"]) for m in st["macs"]} == {
        (1, MAC_A, "a"), (1, MAC_B, "b")}
    assert all(isinstance(m["age_s"], float | int) for m in st["macs"])
