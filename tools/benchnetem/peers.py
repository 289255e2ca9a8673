# tools/benchnetem/peers.py - the sender and receiver processes of
# tools/bench-netem (run as `bench-netem _send|_recv ...`, parsed by helper()):
# the sender paces numbered frames to a switch port, the receiver announces
# its MAC and records every frame with its arrival and kernel stamps into a
# pickle.
"""The sender and receiver processes of tools/bench-netem (`_send`, `_recv`)."""

from __future__ import annotations

import argparse
import array
import json
import pickle
import select
import socket
import struct
import sys
import time

from benchnetem.common import (
    ETHERTYPE,
    HEAD,
    MAGIC,
    MIN_FRAME,
    PATTERN,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
    TAIL,
)

# -- the sender and receiver processes (run as `bench-netem _send|_recv ...`) ----------


def _stdin_ready(timeout: float) -> bool:
    r, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
    return bool(r)


def cmd_send(a: argparse.Namespace) -> int:
    """Send ``count`` frames (0: until told) at ``rate``/s in bursts of ``burst``."""
    host, port = a.to.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.connect((host, int(port)))
    s.settimeout(1.0)  # a full send buffer is waited out, not a lost frame
    dst, src = bytes.fromhex(a.dst), bytes.fromhex(a.src)
    stamps = array.array("q")
    period = a.burst * 1e9 / a.rate
    mono_ns, real_ns, pack = time.monotonic_ns, time.time_ns, HEAD.pack
    head = dst + src + ETHERTYPE
    nfill = a.size - MIN_FRAME
    t0 = mono_ns()
    deadline = t0 + int(a.max_seconds * 1e9)
    seq = k = late = errors = 0
    first = last = t0
    while a.count == 0 or seq < a.count:
        due = t0 + int(k * period)
        now = mono_ns()
        if now > deadline:
            break
        if due > now:
            if _stdin_ready((due - now) / 1e9):
                break
            continue
        if now - due > 20_000_000:  # 20 ms behind (not scheduled): restart the beat
            late += 1
            t0 = now - int(k * period)
        for _ in range(a.burst if a.count == 0 else min(a.burst, a.count - seq)):
            mono, real = mono_ns(), real_ns()
            off = seq % 256
            frame = (head + pack(MAGIC, seq, mono, real) + PATTERN[off : off + nfill]
                     + TAIL.pack(seq))
            try:
                s.send(frame)
            except OSError:
                errors += 1
            if a.log:
                stamps.append(mono)
                stamps.append(real)
            if seq == 0:
                first = mono
            last = mono
            seq += 1
        k += 1
    if a.log:
        with open(a.log, "wb") as f:
            stamps.tofile(f)
    print(json.dumps({"sent": seq, "first_ns": first, "last_ns": last, "late": late,
                      "errors": errors}), flush=True)
    return 0


def cmd_recv(a: argparse.Namespace) -> int:
    """Announce ``mac`` to the switch port, record every frame until told to stop."""
    host, port = a.to.rsplit(":", 1)
    switch = (host, int(port))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    announce = (b"\xff" * 6 + bytes.fromhex(a.mac) + ETHERTYPE).ljust(60, b"\0")
    s.sendto(announce, switch)
    print("ready", flush=True)
    frames: list[tuple[int, int, bytes]] = []
    cmsg = socket.CMSG_SPACE(16)
    mono_ns = time.monotonic_ns
    deadline = time.monotonic() + a.max_seconds
    stop_at: float | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        watch = [s] if stop_at is not None else [s, sys.stdin]
        r, _, _ = select.select(watch, [], [], 0.05)
        now = time.monotonic()
        if sys.stdin in r:
            sys.stdin.readline()
            stop_at = quiet_since = now
        if s in r:
            for _ in range(512):
                try:
                    data, anc, _, _ = s.recvmsg(65536, cmsg)
                except BlockingIOError:
                    break
                t = mono_ns()
                kern = 0
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack_from("qq", cdata)
                        kern = sec * 1_000_000_000 + nsec
                frames.append((t, kern, data[: a.keep] if a.keep else data))
            quiet_since = time.monotonic()
        elif stop_at is not None and now - quiet_since >= a.drain:
            break
        if stop_at is not None and now - stop_at >= a.stop_within:
            break
    with open(a.out, "wb") as f:
        pickle.dump(frames, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"received": len(frames)}), flush=True)
    return 0



def helper(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench-netem " + argv[0])
    p.add_argument("--to", required=True, help="the switch port, host:port")
    p.add_argument("--max-seconds", type=float, default=60.0)
    if argv[0] == "_send":
        p.add_argument("--src", required=True)
        p.add_argument("--dst", required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--rate", type=float, required=True)
        p.add_argument("--burst", type=int, default=1)
        p.add_argument("--size", type=int, default=64)
        p.add_argument("--log")
        a = p.parse_args(argv[1:])
        a.size = max(a.size, MIN_FRAME)
        return cmd_send(a)
    p.add_argument("--mac", required=True)
    p.add_argument("--keep", type=int, default=0)
    p.add_argument("--drain", type=float, default=0.5)
    p.add_argument("--stop-within", type=float, default=30.0)
    p.add_argument("--out", required=True)
    return cmd_recv(p.parse_args(argv[1:]))

