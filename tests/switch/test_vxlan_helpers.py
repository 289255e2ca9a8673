# tests/switch/test_vxlan_helpers.py - what the VXLAN end-to-end tests share:
# network namespaces made for one test (unique names, deleted at teardown even
# on failure), veth links between them, commands run inside them with a bound
# time, `netstore serve` run inside one, and the raw-socket ping. It holds no
# tests itself.
"""Namespaces, veth links and netstore daemons inside namespaces, for the VXLAN tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    ACTIVE,
    READY,
    Daemon,
    netstore_command,
    netstore_env,
)
from tests.switch.netns_util import PING

# The ping of netns_util, with a payload size and don't-fragment (IP_MTU_DISCOVER).
PING_SIZED = PING.replace(
    'dst, count = sys.argv[1], int(sys.argv[2])',
    'dst, count = sys.argv[1], int(sys.argv[2])\n'
    'size = int(sys.argv[3]) if len(sys.argv) > 3 else 32',
).replace(
    's.settimeout(3)',
    's.settimeout(3)\ns.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_PMTUDISC_DO',
).replace('b"netstore" * 4', 'bytes(size)')


def netns_usable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add, raw sockets)"
    if shutil.which("ip") is None:
        return "ip(8) is not installed"
    return None


def run(*args: str, timeout: float = 15, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


class Net:
    """Namespaces and veth links of one test; ``cleanup`` removes them all."""

    def __init__(self, tag: str) -> None:
        self.tag = f"{tag}{os.getpid() % 100000}"
        self.namespaces: list[str] = []

    def ns(self, name: str) -> str:
        full = f"nvx{name}{self.tag}"
        run("ip", "netns", "add", full)
        self.namespaces.append(full)
        run("ip", "-n", full, "link", "set", "lo", "up")
        # no IPv6 chatter (router solicitations, MLD) in the counters tests read
        run("ip", "netns", "exec", full, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1", check=False)
        return full

    def veth(self, a: str, a_addr: str | None, b: str, b_addr: str | None,
             mtu: int = 1500) -> tuple[str, str]:
        """A veth pair between namespaces ``a`` and ``b``, up, with /24 addresses
        (None: none); returns the two device names."""
        ea, eb = f"va{self.tag}{len(self.namespaces)}", f"vb{self.tag}{len(self.namespaces)}"
        run("ip", "link", "add", ea, "mtu", str(mtu), "netns", a, "type", "veth", "peer",
            "name", eb, "mtu", str(mtu), "netns", b)
        for ns, dev, addr in ((a, ea, a_addr), (b, eb, b_addr)):
            if addr is not None:
                run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        return ea, eb

    def exec(self, ns: str, *args: str, timeout: float = 20,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *args, timeout=timeout, check=check)

    def ping(self, ns: str, dst: str, count: int = 3, size: int = 32,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """ICMP echo from ``ns`` to ``dst``, DF set; each echo waits at most 3 s."""
        return self.exec(ns, sys.executable, "-c", PING_SIZED, dst, str(count), str(size),
                         timeout=10 + 4 * count, check=check)

    def cleanup(self) -> None:
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=10).stdout.split()
            for pid in pids:  # processes a test started in it and left behind
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.namespaces.clear()


@contextmanager
def network(tag: str) -> Iterator[Net]:
    net = Net(tag)
    try:
        yield net
    finally:
        net.cleanup()


class NsDaemon(Daemon):
    """``netstore serve`` run inside a namespace (its control socket is a file,
    so the CLI reaches it from anywhere)."""

    def __init__(self, workdir: Path, name: str, ns: str) -> None:
        state = workdir / f"{name}-state"
        (state / "media").mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, state, name)
        self.ns = ns

    def start(self, timeout: float = 20.0) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns,
                 *netstore_command("serve", "--config", str(self.config_path))],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=netstore_env())
        ACTIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first, newline, _ = self.stdout_path.read_text(errors="replace").partition("\n")
            if newline and first.startswith(READY):
                self.ready_line = first
                return
            if self.proc.poll() is not None:
                pytest.fail(f"netstore serve exited with {self.proc.returncode}; stderr:\n"
                            f"{self.stderr()}", pytrace=False)
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"netstore serve not ready within {timeout} s; stderr:\n{self.stderr()}",
                    pytrace=False)

    def shutdown(self) -> None:
        super().shutdown()
        if self in ACTIVE:
            ACTIVE.remove(self)

    def show(self, switch: str = "sw0") -> dict[str, Any]:
        """``netstore switch show SW --json``."""
        r = self.cli("switch", "show", switch, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@contextmanager
def daemon_in(ns: str, workdir: Path, name: str, config: str) -> Iterator[NsDaemon]:
    d = NsDaemon(workdir, name, ns)
    d.write_config(f'[daemon]\nstate_dir = "{d.state_dir}"\n' + config)
    try:
        d.start()
        yield d
    finally:
        d.shutdown()


def until(what: Callable[[], Any], timeout: float = 10.0, step: float = 0.1) -> Any:
    """Poll ``what`` until it returns something true (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def port_row(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in status["ports"] if p["name"] == name)
