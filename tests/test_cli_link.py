# tests/test_cli_link.py - `netstore link` as a user meets it: a daemon with two
# udp ports and real udp peers; a loss of 100% stops frames one way and clear
# lets them cross again, down/up stops and resumes both ways, `link show`
# and `switch show --json` carry the settings and counters, and wrong values,
# ports and switches are refused in one line.
"""Tests for `netstore link` against a live daemon."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.test_cli_switch import MAC_A, MAC_B, Peer, addresses, hello, ping, wait_link_up

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
"""


def link(d, *args: str):
    return d.cli("link", *args)


def ok(d, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def shown(d) -> dict[str, dict]:
    return {row["port"]: row for row in json.loads(ok(d, "link", "show", "sw0", "--json"))}


def two_peers(d) -> tuple[Peer, Peer]:
    """Peers on ports a and b, each known to the switch (both links up, MACs learnt)."""
    addrs = addresses(d.ready_line)
    a, b = Peer(addrs["sw0:a"]), Peer(addrs["sw0:b"])
    a.send(hello(MAC_A))
    wait_link_up(d, "a")
    b.send(hello(MAC_B))
    assert a.recv() == hello(MAC_B)
    return a, b


def first_through(src: Peer, dst: Peer, frames: list[bytes], seconds: float = 2.0) -> bytes:
    """Send ``frames`` one by one from ``src`` until ``dst`` receives one (within
    ``seconds``); returns the first frame ``dst`` received."""
    dst.sock.settimeout(0.05)
    try:
        deadline = time.monotonic() + seconds
        for frame in frames:
            src.send(frame)
            try:
                return dst.recv()
            except TimeoutError:
                if time.monotonic() > deadline:
                    break
        pytest.fail(f"no frame crossed within {seconds} s")
    finally:
        dst.sock.settimeout(10)


def wait_counter(d, port: str, direction: str, name: str, n: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        row = shown(d)[port]
        if (row[direction] or {}).get("counters", {}).get(name, 0) >= n:
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"{port} {direction} {name} did not reach {n}: {row}")
        time.sleep(0.05)


def test_loss_100_stops_one_direction_and_clear_lets_frames_cross(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    a, b = two_peers(d)
    out = ok(d, "link", "sw0:a", "--out", "--loss", "100%")  # what a receives
    assert "out: loss 100%" in out and "in: none" in out, out
    for i in range(5):
        b.send(ping(MAC_B, MAC_A, i))
    a.send(ping(MAC_A, MAC_B, 50))  # the other direction is untouched
    assert b.recv() == ping(MAC_A, MAC_B, 50)
    row = wait_counter(d, "a", "out", "loss", 5)
    assert row["out"]["settings"] == {"loss": "100%"} and row["in"] is None
    assert row["out"]["counters"]["passed"] == 0
    ports = {p["name"]: p for p in json.loads(ok(d, "switch", "show", "sw0", "--json"))["ports"]}
    assert ports["a"]["impair"]["out"]["settings"] == {"loss": "100%"}
    assert ports["b"]["impair"]["out"] is None and ports["b"]["impair"]["in"] is None

    assert "out: none" in ok(d, "link", "sw0:a", "clear")
    # none of the five lost frames comes late: the first to arrive is sent after clear
    after = [ping(MAC_B, MAC_A, 100 + i) for i in range(200)]
    assert first_through(b, a, after) == after[0]
    assert shown(d)["a"]["out"] is None


def test_down_stops_both_ways_and_up_resumes(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    a, b = two_peers(d)
    ok(d, "link", "sw0:a", "down")
    row = shown(d)["a"]
    assert (row["link"], row["admin"]) == ("down", "down")
    assert "down (set down)" in ok(d, "link", "show", "sw0")
    for i in range(5):
        a.send(ping(MAC_A, MAC_B, i))
        b.send(ping(MAC_B, MAC_A, i))
    ok(d, "link", "sw0:a", "up")
    # resumes (within 100 ms as a rule; 2 s allowed on a busy machine), and not
    # one frame sent while down crosses, either way
    after = [ping(MAC_A, MAC_B, 100 + i) for i in range(200)]
    assert first_through(a, b, after) == after[0]
    back = [ping(MAC_B, MAC_A, 100 + i) for i in range(200)]
    assert first_through(b, a, back) == back[0]
    row = shown(d)["a"]
    assert (row["link"], row["admin"]) == ("up", "up")


def test_show_merges_settings_per_direction_and_flaps(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    ok(d, "link", "sw0:b", "--delay", "80ms", "--jitter", "5ms", "--distribution", "normal",
       "--loss", "1%")
    ok(d, "link", "sw0:b", "--in", "--rate", "10mbit", "--limit", "50")
    row = shown(d)["b"]
    both = {"delay": "80ms", "jitter": "5ms", "distribution": "normal", "loss": "1%"}
    assert row["out"]["settings"] == both
    assert row["in"]["settings"] == {**both, "rate": "10mbit", "limit": 50}
    assert set(row["in"]["counters"]) >= {"delayed", "loss", "overflow", "duplicated",
                                          "corrupted", "reordered", "held"}
    assert shown(d)["a"]["in"] is None
    text = ok(d, "link", "show", "sw0")
    for word in ("delay 80ms jitter 5ms", "rate 10mbit", "overflow", "reordered", "none"):
        assert word in text, (word, text)
    one = json.loads(ok(d, "link", "sw0:b", "--json"))
    assert one["port"] == "b" and one["in"]["settings"]["rate"] == "10mbit"
    ok(d, "link", "sw0:b", "--in", "clear")  # the action after the option, too
    row = shown(d)["b"]
    assert row["in"] is None and row["out"]["settings"] == both
    # the loss model is one setting: a gemodel replaces random loss, and back
    ok(d, "link", "sw0:b", "--out", "--gemodel", "2%,25%")
    settings = shown(d)["b"]["out"]["settings"]
    assert "loss" not in settings, settings
    assert (settings["gemodel"]["p"], settings["gemodel"]["r"]) == ("2%", "25%")
    ok(d, "link", "sw0:b", "--out", "--loss", "1%")
    assert shown(d)["b"]["out"]["settings"] == both
    ok(d, "link", "sw0:b", "--flap", "down 2s every 30s")
    assert shown(d)["b"]["flap"] == "down 2s every 30s"
    ok(d, "link", "sw0:b", "--flap", "off")
    assert shown(d)["b"]["flap"] is None


def test_refusals(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH)
    r = link(d, "sw0:a", "--loss", "120%")
    assert r.returncode == 2 and '--loss: expected a percentage' in r.stderr, r.stderr
    assert '"120%"' in r.stderr
    r = link(d, "sw0:a", "--delay", "80 parsecs")
    assert r.returncode == 2 and "--delay: expected a time" in r.stderr, r.stderr
    r = link(d, "sw0:a", "--limit", "0")
    assert r.returncode == 2 and "--limit: expected an integer" in r.stderr, r.stderr
    r = link(d, "sw0:a", "--reorder", "25%")  # the daemon: the port has no delay
    assert r.returncode == 2 and "--reorder: expected a delay as well" in r.stderr, r.stderr
    r = link(d, "sw0:a", "--flap", "now and then")
    assert r.returncode == 2 and "--flap: expected" in r.stderr, r.stderr
    r = link(d, "sw0:a", "sideways")
    assert r.returncode == 2 and "expected down, up or clear" in r.stderr
    assert shown(d)["a"]["in"] is None, "nothing changed"
    r = link(d, "sw0:nope", "--loss", "1%")
    assert r.returncode == 1 and "no port 'nope'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = link(d, "sw0:nope", "down")
    assert r.returncode == 1 and "no port 'nope'" in r.stderr, r.stderr
    r = link(d, "show", "nosw")
    assert r.returncode == 1 and "no switch named 'nosw'" in r.stderr, r.stderr
    d.stop()
    r = link(d, "show", "sw0")
    assert r.returncode == 1 and "no netstore daemon is running" in r.stderr


def test_a_stream_peer_is_disconnected_by_down(netstore_daemon) -> None:
    d = netstore_daemon(SWITCH + '\n[[switches.ports]]\nname = "s"\nkind = "stream"\n'
                        'listen = "{tmp}/s.sock"\n')
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.settimeout(10)
    peer.connect(str(d.workdir / "s.sock"))
    wait_link_up(d, "s")
    ok(d, "link", "sw0:s", "down")
    assert peer.recv(100) == b"", "the switch closed the connection"
    peer.close()
