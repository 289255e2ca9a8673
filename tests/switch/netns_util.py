"""Helpers shared by the switch tests that build network namespaces: the
raw-socket ping, ip(8), two namespaces joined by the switch's TAP ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import trio

from netstore.config import SwitchPortConfig
from netstore.switch.ports.tap import tap_available

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

# ping(8) may be missing; this sends ICMP echo requests from a raw socket and
# exits 0 after `count` matching replies (bounded by a timeout per echo).
PING = r"""
import os, socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
def csum(b):
    b += b"\0" * (len(b) & 1)
    n = sum(struct.unpack(f"!{len(b)//2}H", b)); n = (n >> 16) + (n & 0xFFFF); n += n >> 16
    return ~n & 0xFFFF
ident, got = os.getpid() & 0xFFFF, 0
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netstore" * 4
    s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (dst, 0))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data, _ = s.recvfrom(2048)
        t, _c, _k, i, q = struct.unpack_from("!BBHHH", data, (data[0] & 15) * 4)
        if t == 0 and i == ident and q == seq:
            got += 1
            break
print(f"{got} received")
sys.exit(0 if got == count else 1)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


# -- two namespaces over TAP ports ---------------------------------------------------

needs_netns = pytest.mark.skipif(
    tap_available() is not None or shutil.which("iperf3") is None,
    reason=tap_available() or "iperf3 is not installed",
)



class Namespaces:
    """Two namespaces, each with one TAP device of the switch (192.0.2.1, .2)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = [f"nsoA{tag}", f"nsoB{tag}"]
        self.dev = [f"ntoA{tag}", f"ntoB{tag}"]
        self.addr = ["192.0.2.1", "192.0.2.2"]

    def setup(self) -> None:
        for n, d, a in zip(self.ns, self.dev, self.addr, strict=True):
            ip("netns", "add", n)
            ip("link", "set", d, "netns", n)
            ip("-n", n, "addr", "add", f"{a}/24", "dev", d)
            ip("-n", n, "link", "set", d, "up")
            ip("-n", n, "link", "set", "lo", "up")

    def cleanup(self) -> None:
        for n in self.ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)
        for d in self.dev:
            subprocess.run(["ip", "link", "del", d], capture_output=True, timeout=10)

    async def ping(self, count: int = 3) -> None:
        r = await trio.run_process(
            [
                "ip",
                "netns",
                "exec",
                self.ns[0],
                sys.executable,
                "-c",
                PING,
                self.addr[1],
                str(count),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()

    async def iperf(self, seconds: int = 2) -> float:
        """iperf3 TCP A -> B for ``seconds``: Gbit/s received."""
        server = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", self.ns[1], "iperf3", "-s", "-1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await trio.sleep(0.5)
            with trio.fail_after(seconds + 30):
                r = await trio.run_process(
                    [
                        "ip",
                        "netns",
                        "exec",
                        self.ns[0],
                        "iperf3",
                        "-c",
                        self.addr[1],
                        "-t",
                        str(seconds),
                        "-J",
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        finally:
            if server.returncode is None:
                server.kill()
            with trio.move_on_after(5):
                await server.wait()


def tap_ports(ns: Namespaces) -> list[SwitchPortConfig]:
    return [
        SwitchPortConfig(name="a", kind="tap", device=ns.dev[0]),
        SwitchPortConfig(name="b", kind="tap", device=ns.dev[1]),
    ]
