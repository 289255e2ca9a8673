# tests/switch/test_netns.py - the host side of the switch: two network
# namespaces created by the test, each holding one TAP device of a switch
# service, ping each other through it. Addresses (198.51.100.0/24) exist only in
# those namespaces; namespaces and devices are removed in finally.
"""Two network namespaces ping each other through a switch with TAP ports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trio

from netstore.config import SwitchConfig, SwitchPortConfig
from netstore.switch.ports.tap import tap_available
from netstore.switch.service import SwitchService
from tests.switch.netns_util import PING, ip

reason = tap_available()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")




async def test_two_namespaces_ping_through_tap_ports(nursery) -> None:
    tag = f"{os.getpid() % 100000}"
    ns = [f"nsA{tag}", f"nsB{tag}"]
    dev = [f"nstA{tag}", f"nstB{tag}"]
    addr = ["198.51.100.1", "198.51.100.2"]
    svc = SwitchService(SwitchConfig(name="sw0", ports=[
        SwitchPortConfig(name="a", kind="tap", device=dev[0]),
        SwitchPortConfig(name="b", kind="tap", device=dev[1])]))
    try:
        await nursery.start(svc.run)
        for n, d, a in zip(ns, dev, addr, strict=True):
            ip("netns", "add", n)
            ip("link", "set", d, "netns", n)
            ip("-n", n, "addr", "add", f"{a}/24", "dev", d)
            ip("-n", n, "link", "set", d, "up")
            ip("-n", n, "link", "set", "lo", "up")
        result = await trio.run_process(
            ["ip", "netns", "exec", ns[0], sys.executable, "-c", PING, addr[1], "3"],
            capture_stdout=True, capture_stderr=True, check=False)
        out = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == 0, out
        assert "3 received" in out
        st = svc.status()
        ports = {p["name"]: p for p in st["ports"]}
        assert ports["a"]["kind"] == "tap" and ports["a"]["link"] == "up"
        assert ports["a"]["rx_frames"] >= 4 and ports["b"]["rx_frames"] >= 4  # ARP + 3 echoes
        assert {m["port"] for m in st["macs"]} == {"a", "b"}
    finally:
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)
        for d in dev:
            subprocess.run(["ip", "link", "del", d], capture_output=True, timeout=10)
        await svc.aclose()
