# tests/switch/bench_core.py - micro-benchmark of the pure forwarding core (not
# a test): microseconds per Switch.receive for 64- and 1500-byte frames in the
# common cases. Run: python tests/switch/bench_core.py [frames]
"""Microseconds per forwarded frame in netstore.switch.core.Switch."""

from __future__ import annotations

import sys
import time

from netstore.switch.core import PortSettings, Switch
from netstore.switch.frames import add_tag

A = bytes.fromhex("02000000000a")
B = bytes.fromhex("02000000000b")


def frame(dst: bytes, src: bytes, size: int) -> bytes:
    return dst + src + b"\x08\x00" + b"\x45" * (size - 14)


def bench(label: str, sw: Switch, port: str, f: bytes, n: int) -> None:
    receive = sw.receive
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            receive(port, f)
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<44} {best / n * 1e6:6.2f} µs/frame  ({n / best / 1e3:6.0f} kframes/s)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    sw = Switch("bench")
    for name in ("a", "b", "c", "d"):
        sw.add_port(PortSettings(name))
    sw.add_port(PortSettings("t", vlan=None, trunk=frozenset({1, 10})))
    sw.receive("a", frame(b"\xff" * 6, A, 64))
    sw.receive("b", frame(b"\xff" * 6, B, 64))
    for size in (64, 1500):
        bench(f"untagged unicast to a known MAC, {size} B", sw, "a", frame(B, A, size), n)
    for size in (64, 1500):
        bench(
            f"broadcast flood to 4 ports (1 tagged), {size} B",
            sw,
            "a",
            frame(b"\xff" * 6, A, size),
            n,
        )
    for size in (64, 1500):
        tagged = add_tag(frame(A, B, size), 1)
        bench(f"trunk in (tag stripped) to a known MAC, {size} B", sw, "t", tagged, n)


if __name__ == "__main__":
    main()
