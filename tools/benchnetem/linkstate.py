# tools/benchnetem/linkstate.py - sections 6 and 7 of tools/bench-netem: peers
# in this process (udp sockets and a QEMU-stream TCP client) ticking a frame
# every ms while the CLI takes a link down and up, sets --loss 100% and clears
# it; when traffic stops and resumes, against the command's return.
"""Sections updown and change of tools/bench-netem: link state and run-time changes."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable

from benchnetem.common import (
    EFFECT_MS,
    ETHERTYPE,
    MAC_A,
    MAC_B,
    MAC_C,
    Section,
    frame_seq,
    frame_stamps,
    make_frame,
)
from benchnetem.harness import Bench, Daemon, udp

# -- 6 and 7: link state and run-time changes, in-process peers ticking every ms -------------------


class StreamPeer:
    """A plain TCP client speaking QEMU's stream framing (4-byte big-endian length + frame)."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.connected_at: int | None = None

    def connect(self) -> bool:
        try:
            s = socket.create_connection(self.addr, timeout=1.0)
        except OSError:
            return False
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, bytearray()
        self.connected_at = time.monotonic_ns()
        return True

    def send(self, frame: bytes) -> None:
        if self.sock is not None:
            try:
                self.sock.send(struct.pack(">I", len(frame)) + frame)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close()

    def receive(self) -> tuple[list[bytes], bool]:
        """Frames read now, and whether the switch closed the connection."""
        if self.sock is None:
            return [], False
        closed = False
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from(">I", self.buf)
            if len(self.buf) < 4 + n:
                break
            frames.append(bytes(self.buf[4 : 4 + n]))
            del self.buf[: 4 + n]
        if closed:
            self.close()
        return frames, closed

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Traffic:
    """Udp peers (and a stream peer) of one switch, each sending one frame a
    tick (1 ms) to another's MAC; every crossing recorded as (direction, seq,
    sent ns, arrived ns)."""

    TICK = 0.001

    def __init__(self, d: Daemon, udp_ports: dict[str, bytes]) -> None:
        self.d = d
        self.macs = dict(udp_ports)
        self.socks: dict[str, socket.socket] = {}
        for name in udp_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks[name] = s
        self.stream: StreamPeer | None = None
        self.stream_name = ""
        self.flows: list[tuple[str, str]] = []  # (from, to) peers sending each tick
        self.seq = 0
        self.crossed: list[tuple[str, int, int, int]] = []
        self.events: list[tuple[str, int]] = []  # stream: ("closed"|"connected", ns)
        self.reconnect_every_ns: int | None = None
        self._next_try = 0

    def add_stream(self, name: str, mac: bytes) -> None:
        self.stream = StreamPeer(self.d.addr(name))
        self.stream_name = name
        self.macs[name] = mac
        if not self.stream.connect():
            raise RuntimeError("cannot connect to the stream port")
        self.events.append(("connected", time.monotonic_ns()))

    def _send(self, src: str, frame: bytes) -> None:
        if src == self.stream_name:
            assert self.stream is not None
            self.stream.send(frame)
            return
        try:
            self.socks[src].sendto(frame, self.d.addr(src))
        except OSError:
            pass

    def hello(self) -> None:
        """Every peer announces its MAC (a broadcast), so the switch learns them all."""
        for name, mac in self.macs.items():
            self._send(name, (b"\xff" * 6 + mac + ETHERTYPE).ljust(60, b"\0"))

    def tick(self) -> None:
        now = time.monotonic_ns()
        for src, dst in self.flows:
            self.seq += 1
            self._send(src, make_frame(self.macs[dst], self.macs[src], self.seq, now,
                                       time.time_ns(), 64))
        arrived = time.monotonic_ns()
        for name, s in self.socks.items():
            while True:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                    break
                self._record(name, data, arrived)
        if self.stream is not None:
            if self.stream.sock is None:
                if self.reconnect_every_ns is not None and now >= self._next_try:
                    self._next_try = now + self.reconnect_every_ns
                    if self.stream.connect():
                        self.events.append(("connected", time.monotonic_ns()))
            frames, closed = self.stream.receive()
            for data in frames:
                self._record(self.stream_name, data, arrived)
            if closed:
                self.events.append(("closed", time.monotonic_ns()))

    def _record(self, at: str, data: bytes, arrived: int) -> None:
        seq = frame_seq(data)
        if seq is None:
            return
        src = next((n for n, m in self.macs.items() if m == data[6:12]), "?")
        mono, _ = frame_stamps(data)
        self.crossed.append((f"{src}>{at}", seq, mono, arrived))

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            if until is not None and until():
                return
            time.sleep(self.TICK)

    def command(self, *args: str) -> tuple[int, int, str]:
        """Run the CLI while ticking: (ns it started, ns it returned, its stdout)."""
        t0 = time.monotonic_ns()
        p = self.d.popen(*args)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            self.tick()
            time.sleep(self.TICK)
        t1 = time.monotonic_ns()
        out, err = p.communicate(timeout=10)
        if p.returncode != 0:
            raise RuntimeError(f"netstore {' '.join(args)}: exit {p.returncode}: {err.strip()}")
        return t0, t1, out

    def sent_after(self, direction: str, t: int) -> list[tuple[str, int, int, int]]:
        return [c for c in self.crossed if c[0] == direction and c[2] > t]

    def first_after(self, direction: str, t: int) -> int | None:
        """Arrival ns of the first frame of ``direction`` sent after ``t``."""
        got = [c[3] for c in self.crossed if c[0] == direction and c[2] > t]
        return min(got) if got else None

    def last_sent_crossing(self, direction: str, before: int) -> int | None:
        got = [c[2] for c in self.crossed if c[0] == direction and c[3] <= before]
        return max(got) if got else None

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        if self.stream is not None:
            self.stream.close()


def sec_updown(b: Bench, sec: Section) -> None:
    d = b.daemon("updown", "nu", [udp("a"), udp("b"),
                                  {"name": "s", "kind": "stream", "listen": "127.0.0.1:0"}])
    t = Traffic(d, {"a": MAC_A, "b": MAC_B})
    try:
        t.add_stream("s", MAC_C)
        t.hello()
        t.run(0.3)
        t.flows = [("a", "b"), ("b", "a")]
        t.run(5, until=lambda: bool(t.sent_after("a>b", 0)) and bool(t.sent_after("b>a", 0)))
        t.run(0.2)
        if not t.sent_after("a>b", 0) or not t.sent_after("b>a", 0):
            raise RuntimeError("no frame crossed between a and b before the test")
        c0, c1, _ = t.command("link", "nu:b", "down")
        seq0 = t.seq
        t.run(1.0)
        crossed = t.sent_after("a>b", c1) + t.sent_after("b>a", c1)
        sec.check("down: frames sent after the command returned that crossed (1 s, both ways)",
                  f"{len(crossed)} of {t.seq - seq0} sent (CLI took {(c1 - c0) / 1e6:.0f} ms)",
                  "0", not crossed, len(crossed))
        u0, u1, _ = t.command("link", "nu:b", "up")
        t.run(2.0, until=lambda: t.first_after("a>b", u0) is not None
              and t.first_after("b>a", u0) is not None)
        for direction in ("a>b", "b>a"):
            first = t.first_after(direction, u0)
            rel = None if first is None else (first - u1) / 1e6
            sec.check(f"up: first frame {direction.replace('>', '->')} after the command "
                      "returned", "none within 2 s" if rel is None else f"{rel:+.1f} ms",
                      f"<= {EFFECT_MS:.0f} ms", rel is not None and rel <= EFFECT_MS, rel)
        # the stream port
        t.flows = [("s", "a"), ("a", "s")]
        t.run(0.3)
        if t.first_after("s>a", 0) is None:
            raise RuntimeError("no frame crossed from the stream peer before the test")
        s0, s1, _ = t.command("link", "nu:s", "down")
        t.run(1.0, until=lambda: any(e == "closed" for e, _ in t.events))
        closed = next((ns for e, ns in t.events if e == "closed"), None)
        rel = None if closed is None else (closed - s1) / 1e6
        sec.check("stream peer: connection closed on down", "not closed within 1 s" if rel is None
                  else f"closed {rel:+.1f} ms from the command's return", "closed",
                  closed is not None, rel)
        t.reconnect_every_ns = 20_000_000  # the peer dials again every 20 ms
        n_events = len(t.events)
        t.run(0.5)
        refused = sum(1 for e, _ in t.events[n_events:] if e == "closed")
        sec.info("stream peer: reconnects refused while down (closed at once)", str(refused))
        up0, up1, _ = t.command("link", "nu:s", "up")
        t.run(2.0, until=lambda: t.first_after("s>a", up1) is not None
              and t.first_after("a>s", up1) is not None)
        connects = [ns for e, ns in t.events if e == "connected" and ns > up0]
        stay = [ns for ns in connects if not any(e == "closed" and x > ns for e, x in t.events)]
        first_s = t.first_after("s>a", up1)
        first_a = t.first_after("a>s", up1)
        rel_c = None if not stay else (stay[0] - up1) / 1e6
        rel_f = None if first_s is None else (first_s - up1) / 1e6
        sec.check("stream peer: reconnected after up", "no" if rel_c is None else
                  f"{rel_c:+.1f} ms from the command's return (retrying every 20 ms)",
                  "reconnects", rel_c is not None, rel_c)
        sec.check("stream peer: first frame s->a after up", "none within 2 s" if rel_f is None
                  else f"{rel_f:+.1f} ms", f"<= {EFFECT_MS:.0f} ms",
                  rel_f is not None and rel_f <= EFFECT_MS, rel_f)
        sec.info("stream peer: first frame a->s after up",
                 "none" if first_a is None else f"{(first_a - up1) / 1e6:+.1f} ms")
        sec.details.update({"cli_ms": {"down": (c1 - c0) / 1e6, "up": (u1 - u0) / 1e6},
                            "stream_events": len(t.events)})
    finally:
        t.close()


def sec_change(b: Bench, sec: Section) -> None:
    d = b.daemon("change", "nc", [udp("a"), udp("b")])
    t = Traffic(d, {"a": MAC_A, "b": MAC_B})
    try:
        t.hello()
        t.run(0.3)
        t.flows = [("a", "b"), ("b", "a")]
        t.run(5, until=lambda: bool(t.sent_after("a>b", 0)) and bool(t.sent_after("b>a", 0)))
        t.run(0.2)
        c0, c1, _ = t.command("link", "nc:b", "--loss", "100%")
        seq0 = t.seq
        t.run(1.0)
        sec.info("--loss 100%: frames sent in the second after the command returned",
                 f"{t.seq - seq0}, of which crossed: "
                 f"{len(t.sent_after('a>b', c1)) + len(t.sent_after('b>a', c1))}")
        for direction in ("a>b", "b>a"):
            late = t.sent_after(direction, c1 + int(EFFECT_MS * 1e6))
            last = t.last_sent_crossing(direction, time.monotonic_ns())
            rel = None if last is None else (last - c1) / 1e6
            sec.check(f"--loss 100%: {direction.replace('>', '->')} stops",
                      f"last frame through was sent {rel:+.1f} ms from the command's return; "
                      f"{len(late)} sent later than 100 ms crossed", f"<= {EFFECT_MS:.0f} ms",
                      rel is not None and rel <= EFFECT_MS and not late, rel)
        sec.info("CLI run time (python start-up included)", f"{(c1 - c0) / 1e6:.0f} ms")
        rows = {r["port"]: r for r in d.cli("link", "show", "nc", as_json=True)}
        shows = all((rows["b"].get(x) or {}).get("settings") == {"loss": "100%"}
                    for x in ("in", "out"))
        sec.check("`--json link show nc` after --loss 100%", json.dumps(
            {x: (rows["b"].get(x) or {}).get("settings") for x in ("in", "out")}),
            'b in and out {"loss": "100%"}', shows)
        ports = {p["name"]: p for p in d.cli("switch", "show", "nc", as_json=True)["ports"]}
        imp = ports["b"].get("impair") or {}
        shows = all((imp.get(x) or {}).get("settings") == {"loss": "100%"} for x in ("in", "out"))
        sec.check("`--json switch show nc` after --loss 100%", json.dumps(
            {x: (imp.get(x) or {}).get("settings") for x in ("in", "out")}),
            'b impair in and out {"loss": "100%"}', shows)
        k0, k1, _ = t.command("link", "nc:b", "clear")
        t.run(2.0, until=lambda: t.first_after("a>b", k0) is not None
              and t.first_after("b>a", k0) is not None)
        for direction in ("a>b", "b>a"):
            first = t.first_after(direction, k0)
            rel = None if first is None else (first - k1) / 1e6
            sec.check(f"clear: {direction.replace('>', '->')} resumes",
                      "no frame within 2 s" if rel is None else
                      f"first frame through {rel:+.1f} ms from the command's return",
                      f"<= {EFFECT_MS:.0f} ms", rel is not None and rel <= EFFECT_MS, rel)
        rows = {r["port"]: r for r in d.cli("link", "show", "nc", as_json=True)}
        ports = {p["name"]: p for p in d.cli("switch", "show", "nc", as_json=True)["ports"]}
        imp = ports["b"].get("impair") or {}
        gone = (rows["b"]["in"] is None and rows["b"]["out"] is None
                and imp.get("in") is None and imp.get("out") is None)
        sec.check("after clear: link show and switch show", "in/out none" if gone else
                  json.dumps({"link": [rows["b"]["in"], rows["b"]["out"]]}), "in/out none", gone)
    finally:
        t.close()

