# tools/benchkit_probe.py - the latency probe of the benchmark tools (part of
# benchkit, which re-exports all of it): a sender and a receiver process of
# Ethernet frames across a switch's two udp ports, run from tools/benchkit.py
# (`python3 tools/benchkit.py probe-send|probe-recv ...`), the Probe that
# drives them, and the percentiles of what they measured.
"""The latency probe: frames at a steady rate from one switch port to another, timed."""

from __future__ import annotations

import json
import math
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchkit_children import end, spawn

MIB = 1 << 20
KIT = Path(__file__).resolve().parent / "benchkit.py"  # the probe processes' entry point

# Probe frames: Ethernet, from SENDER_MAC to RECEIVER_MAC, EtherType 0x88b5
# (IEEE local experimental), payload MAGIC, sequence number, the sender's
# time.monotonic_ns() and time.time_ns() at send, padded to 60 bytes.
SENDER_MAC = bytes.fromhex("020000b00001")
RECEIVER_MAC = bytes.fromhex("020000b00002")
ETHERTYPE = b"\x88\xb5"
MAGIC = b"nsprobe1"
PAYLOAD = struct.Struct("!8sQQQ")
FRAME_BYTES = 60
FLOW_TIMEOUT_S = 10.0  # the first probe frame crosses the switch within this
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted values, nearest rank; None for none."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(lat_ms: list[float]) -> dict[str, Any]:
    s = sorted(lat_ms)
    return {"p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
            "p999_ms": percentile(s, 0.999), "max_ms": s[-1] if s else None,
            "over_2ms": sum(1 for x in s if x > 2.0), "over_20ms": sum(1 for x in s if x > 20.0)}


class Probe:
    """Frames at `rate` per second from switch port A's peer to port B's peer.

    start() launches the receiver (it announces RECEIVER_MAC on port B, so the
    switch learns it and answers that socket) and then the sender (port A),
    and returns once the first frame crossed (frames sent before it are the
    warm-up, not counted as lost); stop() ends the sender, lets the receiver drain for `drain` seconds and
    returns the figures: sent, received, lost, duplicates, latency p50/p99/
    p999/max in ms from user-space stamps (time.monotonic_ns() at send and on
    return from recv) and `kernel_*` from the kernel's receive stamp
    (SO_TIMESTAMPNS against time.time_ns() at send: no receiver wake-up in
    it). `max_seconds` bounds both processes even if stop() never comes.
    """

    def __init__(self, port_a: tuple[str, int], port_b: tuple[str, int], *, rate: int = 1000,
                 max_seconds: float = 900.0, drain: float = 0.5) -> None:
        self.port_a, self.port_b = port_a, port_b
        self.rate, self.max_seconds, self.drain = rate, max_seconds, drain
        self.sender: subprocess.Popen[str] | None = None
        self.receiver: subprocess.Popen[str] | None = None
        self.started = 0.0

    def _run(self, *args: object) -> subprocess.Popen[str]:
        return spawn([sys.executable, str(KIT), *map(str, args)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> None:
        host, port = self.port_b
        self.receiver = self._run("probe-recv", host, port, self.max_seconds + 30)
        assert self.receiver.stdout is not None
        if self.receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("probe receiver did not start")
        time.sleep(0.1)  # the announcement is learnt
        host, port = self.port_a
        self.sender = self._run("probe-send", host, port, self.rate, self.max_seconds)
        assert self.sender.stdout is not None
        if self.sender.stdout.readline().strip() != "ready":
            raise RuntimeError("probe sender did not start")
        r, _, _ = select.select([self.receiver.stdout], [], [], FLOW_TIMEOUT_S)
        if not r or not self.receiver.stdout.readline().startswith("flowing"):
            raise RuntimeError(f"no probe frame crossed the switch within {FLOW_TIMEOUT_S} s")
        self.started = time.monotonic()

    def _finish(self, p: subprocess.Popen[str], wait: float) -> dict[str, Any]:
        try:
            out, _ = p.communicate("stop\n", timeout=wait)
        except subprocess.TimeoutExpired:
            end(p)
            raise RuntimeError("probe process did not stop") from None
        end(p)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> dict[str, Any]:
        assert self.sender is not None and self.receiver is not None
        seconds = time.monotonic() - self.started
        sent = self._finish(self.sender, 10.0)
        time.sleep(self.drain)
        got = self._finish(self.receiver, 10.0)
        counted = sent["sent"] - got["first_seq"]  # from the first frame that crossed
        return {"seconds": seconds, "rate": self.rate, "sent": counted,
                "sender_max_gap_ms": sent["max_gap_ms"], "sender_skipped": sent["skipped"],
                "warmup": got["first_seq"], "received": got["received"],
                "lost": counted - got["received"],
                "duplicates": got["duplicates"], "reordered": got["reordered"],
                **latency_summary(got["lat_ms"]),
                **{f"kernel_{k}": v for k, v in latency_summary(got["klat_ms"]).items()},
                "worst": got["worst"]}


def _stdin_says_stop(timeout: float) -> bool:
    r, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
    return bool(r)


def probe_send(host: str, port: int, rate: int, max_seconds: float) -> None:
    """The sender process: frames to RECEIVER_MAC at `rate`/s until stdin speaks or the bound."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect((host, port))
    period = 1_000_000_000 // rate
    head = RECEIVER_MAC + SENDER_MAC + ETHERTYPE
    print("ready", flush=True)
    t0 = nxt = time.monotonic_ns()
    deadline = t0 + int(max_seconds * 1e9)
    seq = skipped = 0
    last = t0
    max_gap = 0
    while True:
        now = time.monotonic_ns()
        if nxt > now:
            if _stdin_says_stop((nxt - now) / 1e9):
                break
            continue
        if now > deadline:
            break
        frame = head + PAYLOAD.pack(MAGIC, seq, time.monotonic_ns(), time.time_ns())
        try:
            s.send(frame.ljust(FRAME_BYTES, b"\0"))
        except (ConnectionRefusedError, BlockingIOError):
            pass  # the frame is lost: the receiver counts it
        seq += 1
        max_gap = max(max_gap, now - last)
        last = now
        nxt += period
        if now - nxt > 50_000_000:  # 50 ms behind (we were not scheduled): restart the beat
            skipped += (now - nxt) // period
            nxt = now
    print(json.dumps({"sent": seq, "max_gap_ms": max_gap / 1e6, "skipped": skipped}), flush=True)


def probe_recv(host: str, port: int, max_seconds: float) -> None:
    """The receiver process: announces RECEIVER_MAC to the switch port, records every frame."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("127.0.0.1", 0))
    switch = (host, port)
    announce = (SENDER_MAC + RECEIVER_MAC + ETHERTYPE).ljust(FRAME_BYTES, b"\0")
    broadcast = b"\xff" * 6 + announce[6:]
    s.sendto(broadcast, switch)  # learnt on port b (again every 0.1 s until a frame comes)
    print("ready", flush=True)
    seen = bytearray()
    lat: list[float] = []
    klat: list[float] = []
    worst: list[tuple[float, int]] = []
    dup = reordered = top = 0
    first_seq: int | None = None
    deadline = time.monotonic() + max_seconds
    next_announce = time.monotonic() + 0.1
    stopping_at: float | None = None
    while time.monotonic() < deadline:
        if time.monotonic() > next_announce:  # until flowing; then past the MAC aging
            s.sendto(broadcast if first_seq is None else announce, switch)
            next_announce = time.monotonic() + (0.1 if first_seq is None else 5.0)
        r, _, _ = select.select([s] if stopping_at else [s, sys.stdin], [], [], 0.2)
        if sys.stdin in r:
            sys.stdin.readline()
            stopping_at = time.monotonic()
            continue
        if s not in r:
            if stopping_at:
                break  # drained
            continue
        data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(16))
        now = time.monotonic_ns()
        if len(data) < 14 + PAYLOAD.size or data[14:22] != MAGIC:
            continue
        _, seq, mono, real = PAYLOAD.unpack_from(data, 14)
        if first_seq is None:
            first_seq = seq
            print(f"flowing {seq}", flush=True)
        if seq >= len(seen):
            seen.extend(bytes(seq + 1 - len(seen) + 4096))
        if seen[seq]:
            dup += 1
            continue
        seen[seq] = 1
        if seq < top:
            reordered += 1
        top = max(top, seq)
        ms = (now - mono) / 1e6
        lat.append(ms)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack_from("qq", cdata)
                klat.append((sec * 1_000_000_000 + nsec - real) / 1e6)
        if ms > 2.0:
            worst.append((ms, seq))
            if len(worst) > 200:
                worst = sorted(worst, reverse=True)[:20]
    worst = sorted(worst, reverse=True)[:10]
    print(json.dumps({"received": len(lat), "first_seq": first_seq or 0, "duplicates": dup, "reordered": reordered,
                      "lat_ms": lat, "klat_ms": klat,
                      "worst": [{"ms": round(ms, 3), "seq": q} for ms, q in worst]}), flush=True)
