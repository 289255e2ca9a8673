# tests/switch/test_capture.py - pcap and pcapng written from a switch's tap,
# read back by scapy (rdpcap) and by tshark: the frames, their ports (pcapng
# interface names) and directions are what was sent; files cut after any
# complete record, and files of a writer killed with SIGKILL, read cleanly;
# count and duration limits; streaming through a pipe into `tshark -r -`.
"""Tests for netstore.switch.capture."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import rdpcap

from netstore.switch.capture import (
    Capture,
    PcapngWriter,
    PcapWriter,
    RecordQueue,
    open_capture,
)
from netstore.switch.core import PortSettings, Switch

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def tshark(
    path: Path | str, *fields: str, stdin: bytes | None = None
) -> tuple[int, list[list[str]], str]:
    """(exit status, rows of fields, stderr) of ``tshark -r PATH -T fields``."""
    cmd = [TSHARK, "-r", str(path), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    rows = [line.split("\t") for line in r.stdout.decode().splitlines()]
    return r.returncode, rows, r.stderr.decode()


def traffic() -> list[tuple[str, bytes]]:
    """(ingress port, frame) of a short exchange on a 3-port switch with a trunk."""
    return [
        ("p1", bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=A, pdst="10.0.0.2"))),
        ("p2", bytes(Ether(src=B, dst=A) / ARP(op=2, hwsrc=B, hwdst=A, psrc="10.0.0.2"))),
        ("p1", bytes(Ether(src=A, dst=B) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())),
        ("p2", bytes(Ether(src=B, dst=A) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0))),
        ("up", bytes(Ether(src="02:00:00:00:00:0c", dst=A) / Dot1Q(vlan=1) / IP() / ICMP())),
    ]


def switch() -> Switch:
    sw = Switch("sw0")
    sw.add_port(PortSettings("p1"))
    sw.add_port(PortSettings("p2"))
    sw.add_port(PortSettings("up", vlan=None, trunk=frozenset({1, 2}), native=None))
    return sw


def run(sw: Switch) -> list[tuple[str, str, bytes]]:
    """Send the traffic; every (port, direction, frame) the switch saw, in order."""
    seen: list[tuple[str, str, bytes]] = []
    sw.add_tap(lambda p, d, f: seen.append((p, d, f)))
    for port, frame in traffic():
        sw.receive(port, frame)
    return seen


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_capture_file_read_by_scapy(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"sw0.{fmt}"
    sw = switch()
    cap = Capture(open_capture(path, fmt, description="sw0")).attach(sw)
    seen = run(sw)
    cap.stop()
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [f for _, _, f in seen]
    assert len(seen) == 5 + 6  # 5 in; out: the flood to 2 ports, then 4 unicasts
    raw = path.read_bytes()
    if fmt == "pcap":
        assert raw[:4] == bytes.fromhex("d4c3b2a1")  # a1b2c3d4 little-endian
        assert raw[4:8] == b"\x02\x00\x04\x00" and raw[16:24] == b"\x00\x00\x04\x00\x01\x00\x00\x00"
    assert cap not in sw._taps  # stopping untapped it


@needs_tshark
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_capture_file_read_by_tshark(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"sw0.{fmt}"
    sw = switch()
    cap = Capture(open_capture(path, fmt)).attach(sw)
    seen = run(sw)
    cap.stop()
    fields = ["eth.src", "eth.dst"]
    if fmt == "pcapng":
        fields += ["frame.interface_name", "frame.packet_flags_direction"]
    rc, rows, err = tshark(path, *fields)
    assert rc == 0, err
    want = []
    for port, direction, frame in seen:
        row = [Ether(frame).src, Ether(frame).dst]
        if fmt == "pcapng":
            row += [port, 1 if direction == "rx" else 2]  # epb_flags inbound / outbound
        want.append(row)
    if fmt == "pcapng":
        rows = [[*r[:3], int(r[3], 16)] for r in rows]
    assert rows == want


@needs_tshark
def test_pcapng_interfaces_appear_as_ports_do(tmp_path: Path) -> None:
    path = tmp_path / "late.pcapng"
    sw = switch()
    cap = Capture(open_capture(path, ports=["p2"])).attach(sw)  # .pcapng suffix: pcapng
    assert cap.writer.format == "pcapng"
    cap.ports = None  # now everything: p1 and up get their IDBs after p2's packets
    seen = run(sw)
    sw.add_port(PortSettings("late"))
    sw.receive("late", traffic()[0][1])
    cap.stop()
    rc, rows, err = tshark(path, "frame.interface_name", "eth.src")
    assert rc == 0, err
    assert rows[: len(seen)] == [[p, Ether(f).src] for p, _, f in seen]
    assert ["late", A] in rows
    assert cap.writer.interfaces == ["p2", "p1", "up", "late"]


@needs_tshark
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_a_file_cut_after_any_record_reads_cleanly(tmp_path: Path, fmt: str) -> None:
    sink = io.BytesIO()
    writer = PcapWriter(sink) if fmt == "pcap" else PcapngWriter(sink)
    boundaries = [len(sink.getvalue())]
    packets = [f for _, f in traffic()]
    for i, frame in enumerate(packets):
        writer.write_frame(f"p{i % 3}", "rx", frame, ts=1_700_000_000 + i / 10)
        boundaries.append(len(sink.getvalue()))
    whole = sink.getvalue()
    for n, cut in enumerate(boundaries):
        path = tmp_path / f"cut{n}.{fmt}"
        path.write_bytes(whole[:cut])
        rc, rows, err = tshark(path, "eth.src")
        assert rc == 0, (cut, err)
        assert [r[0] for r in rows] == [Ether(f).src for f in packets[:n]]
        assert len(rdpcap(str(path))) == n
    # cut inside a record: tshark still shows every complete record before it
    # (and complains) - what record-at-once writing keeps from happening
    path = tmp_path / f"mid.{fmt}"
    path.write_bytes(whole[: boundaries[3] + 10])
    rc, rows, err = tshark(path, "eth.src")
    assert [r[0] for r in rows] == [Ether(f).src for f in packets[:3]]
    # tshark 4.0: "appears to have been cut short in the middle of a packet", status 2
    assert rc == 2 and "cut short" in err, (rc, err)


WRITER = textwrap.dedent(
    """
    import sys
    import time
    from netstore.switch.capture import open_capture
    frame = bytes.fromhex(sys.argv[3])
    w = open_capture(sys.argv[1], sys.argv[2])
    i = 0
    while True:
        w.write_frame("p%d" % (i % 4), "rx", frame + bytes([i % 256]) * (i % 1500))
        i += 1
        if i == 200:
            print("writing", flush=True)
        if i % 10 == 0:
            time.sleep(0.001)  # bursts, so the file stays small enough to read quickly
    """
)


@needs_tshark
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_a_killed_writer_leaves_complete_records(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"killed.{fmt}"
    frame = traffic()[2][1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), fmt, frame.hex()],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"writing\n"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rc, rows, err = tshark(path, "frame.len")
    assert rc == 0, err
    assert len(rows) >= 200
    assert len(rdpcap(str(path))) == len(rows)


def test_count_limit_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    sw = switch()
    stopped = []
    cap = Capture(open_capture(path), ports=["p1"], directions=["tx"], count=2).attach(sw)
    cap.on_stop(stopped.append)
    seen = run(sw)
    assert cap.stopped and stopped == [cap] and cap.captured == 2
    want = [f for p, d, f in seen if p == "p1" and d == "tx"][:2]
    assert [bytes(p) for p in rdpcap(str(path))] == want
    assert cap not in sw._taps


def test_duration_limit(tmp_path: Path) -> None:
    t = [0.0]
    sw = switch()
    cap = Capture(open_capture(tmp_path / "d.pcap"), duration=5, clock=lambda: t[0]).attach(sw)
    sw.receive("p1", traffic()[0][1])
    t[0] = 4.9
    assert cap.poll()
    t[0] = 5.0
    assert not cap.poll()  # over even with no frame coming
    assert cap.deadline == 5.0
    sw.receive("p1", traffic()[0][1])
    assert cap.captured == 3  # the first broadcast: rx on p1, tx on p2 and up


def test_write_errors_stop_the_capture_not_the_switch() -> None:
    r, w = os.pipe()
    sw = switch()
    cap = Capture(PcapWriter(w), close_writer=False).attach(sw)
    os.close(r)
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        assert sw.receive("p1", traffic()[0][1])  # forwarding goes on
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(w)
    assert cap.stopped and isinstance(cap.error, BrokenPipeError)


def test_batched_writes_are_whole_records() -> None:
    chunks: list[bytes] = []
    w = PcapWriter(chunks.append, batch_bytes=1000, max_delay_s=60)
    frame = traffic()[2][1]
    for _ in range(30):
        w.write(frame, ts=0)
    record = 16 + len(frame)
    assert all(len(c) % record == 0 for c in chunks[1:])  # header first, then whole records
    w.flush()
    assert sum(len(c) for c in chunks) == 24 + 30 * record


@needs_tshark
def test_stream_through_a_pipe_into_tshark() -> None:
    """`netstore capture sw0 -w - | tshark -r -`: a RecordQueue drained into a pipe."""
    queue = RecordQueue()
    sw = switch()
    cap = Capture(PcapngWriter(queue), count=6).attach(sw)
    proc = subprocess.Popen(
        [TSHARK, "-r", "-", "-T", "fields", "-e", "frame.interface_name", "-e", "eth.src"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    seen = run(sw)
    out, err = proc.communicate(queue.take(), timeout=60)
    assert cap.stopped
    assert proc.returncode == 0, err
    rows = [line.split("\t") for line in out.decode().splitlines()]
    assert rows == [[p, Ether(f).src] for p, _, f in seen[:6]]


def test_record_queue_refuses_when_full_but_never_a_header() -> None:
    q = RecordQueue(max_bytes=50)
    w = PcapngWriter(q)  # the SHB goes into the empty queue
    frame = traffic()[2][1]
    w.write_frame("p1", "rx", frame)  # the queue holds the SHB: the IDB is refused
    assert w.dropped == 1 and w.interfaces == []
    data = q.take()
    w.write_frame("p1", "rx", frame)  # empty queue: the IDB goes in, the EPB is refused
    assert w.interfaces == ["p1"]
    assert w.dropped == 2
    data += q.take()
    w.write_frame("p1", "rx", frame)
    data += q.take()
    assert w.records == 1
    assert [bytes(p) for p in rdpcap(io.BytesIO(data))] == [frame]
