# tests/switch/test_capturefile.py - capture files written by a thread of
# their own (netstore/switch/capturefile.py): whole records reach the file
# within the bounded delay and all of them by close; a full disk stops the
# capture with its error while the switch forwards on; a capture file whose
# writes stall (a FIFO nobody reads) never stalls the frames.
"""Tests for netstore.switch.capturefile."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from netstore.switch.capture import PcapWriter
from netstore.switch.capturefile import MAX_DELAY_S, CaptureFile
from tests.switch.peers import MAC_A, MAC_B, ping, two_peers, until


def frames(n: int) -> list[bytes]:
    return [ping(MAC_A, MAC_B, i) for i in range(n)]


def test_records_reach_the_file_within_the_delay_and_all_by_close(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    file = CaptureFile(path)
    writer = PcapWriter(file, owns_fd=True)
    sent = frames(20)
    for f in sent[:10]:
        writer.write(f)
    deadline = time.monotonic() + MAX_DELAY_S + 5
    while time.monotonic() < deadline and file.written < 24 + 10 * (16 + len(sent[0])):
        time.sleep(0.01)
    assert [bytes(p) for p in rdpcap(str(path))] == sent[:10]  # while still open
    for f in sent[10:]:
        writer.write(f)
    writer.close()
    assert [bytes(p) for p in rdpcap(str(path))] == sent
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(OSError, match="closed"):
        file(b"late")


def test_a_full_disk_is_raised_to_the_capture(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    file = CaptureFile("/dev/full")
    file(b"x" * 100)
    deadline = time.monotonic() + MAX_DELAY_S + 5
    while file.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError) as e:
        file(b"more")
    assert "No space" in str(e.value)
    with pytest.raises(OSError):
        file.close()


async def test_a_full_disk_stops_the_capture_not_the_switch(nursery) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    svc, pa, pb = await two_peers(nursery)
    session = svc.start_capture(path="/dev/full")
    for f in frames(30):
        await pa.send(f)
        assert await pb.recv() == f
    await until(lambda: session.finished)
    assert svc.captures == {}
    for f in frames(3):  # the switch forwards on
        await pa.send(f)
        assert await pb.recv() == f


async def test_a_stalled_capture_file_never_stalls_the_frames(nursery, tmp_path: Path) -> None:
    fifo = tmp_path / "stalled.pcap"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, but never reading
    try:
        svc, pa, pb = await two_peers(nursery)
        session = svc.start_capture(path=str(fifo))
        # far more than a pipe holds (64 KiB): the file's thread blocks in write
        for f in frames(1500):
            await pa.send(f)
            assert await pb.recv() == f
        assert session.frames == 1500
        # the reader catches up: every record arrives, whole, and stop need not wait
        expected = 24 + 1500 * (16 + len(frames(1)[0]))
        got = 0
        deadline = time.monotonic() + 20
        while got < expected and time.monotonic() < deadline:
            try:
                got += len(os.read(reader, 1 << 20))
            except BlockingIOError:
                time.sleep(0.01)
        session.stop()
        assert got == expected
    finally:
        os.close(reader)
