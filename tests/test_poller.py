# tests/test_poller.py - the shared receive poller of the switch's
# ports (netstore/poller.py) in a real Trio run with real sockets:
# it drains ports while doing Trio's I/O wait, and must never stall Trio —
# deadlines keep their time, tasks a drain wakes run at once, Trio's own
# sockets wake their tasks, a failing drain closes its port only, and the
# task fallback (no Trio epoll to share) receives as well.
"""Tests for netstore.poller."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import trio

from netstore import poller as poller_module
from netstore.poller import Poller
from tests.switch.peers import MAC_A, MAC_B, ping, two_peers, until


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def reader(sock: socket.socket, got: list[bytes], then=None):
    def drain() -> int:
        n = 0
        try:
            while True:
                got.append(sock.recv(100))
                n += 1
        except BlockingIOError:
            pass
        if n and then is not None:
            then()
        return n
    return drain


async def test_the_poller_waits_in_trios_place_here() -> None:
    poller = Poller.current()
    assert poller.waits_for_trio  # this Trio on Linux: one wait for ports and Trio
    assert Poller.current() is poller  # one per run, shared by every switch


async def test_deadlines_keep_their_time_while_ports_are_watched() -> None:
    poller = Poller.current()
    a, b = pair()
    got: list[bytes] = []
    poller.watch(b.fileno(), reader(b, got))
    try:
        t0 = time.monotonic()
        await trio.sleep(0.3)
        slept = time.monotonic() - t0
        a.send(b"x")
        await until(lambda: got == [b"x"], timeout=2)
    finally:
        poller.unwatch(b.fileno())
        a.close()
        b.close()
    # waiting out Trio's timeout here and then letting Trio wait it again would take 0.6 s
    assert 0.29 <= slept < 0.55


async def test_a_task_a_drain_wakes_runs_at_once(nursery) -> None:
    poller = Poller.current()
    a, b = pair()
    got: list[bytes] = []
    woke = trio.Event()
    poller.watch(b.fileno(), reader(b, got, woke.set))
    nursery.start_soon(trio.sleep, 30)  # Trio's next deadline is far away
    try:
        await trio.sleep(0.05)
        t0 = time.monotonic()
        # sent from another thread: only the watched socket tells the process
        threading.Timer(0.05, a.send, (b"y",)).start()
        with trio.fail_after(5):
            await woke.wait()
        assert time.monotonic() - t0 < 2
    finally:
        poller.unwatch(b.fileno())
        a.close()
        b.close()


async def test_trios_own_sockets_wake_their_tasks(nursery) -> None:
    poller = Poller.current()
    a, b = pair()
    poller.watch(b.fileno(), reader(b, []))
    x, raw_y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    y = trio.socket.from_stdlib_socket(raw_y)
    nursery.start_soon(trio.sleep, 30)
    try:
        await trio.sleep(0.05)
        threading.Timer(0.05, x.send, (b"z",)).start()
        t0 = time.monotonic()
        with trio.fail_after(5):
            assert await y.recv(10) == b"z"
        assert time.monotonic() - t0 < 2
    finally:
        poller.unwatch(b.fileno())
        for s in (a, b, x, y):
            s.close()


async def test_a_failing_drain_closes_its_port_only() -> None:
    poller = Poller.current()
    a1, b1 = pair()
    a2, b2 = pair()

    def broken() -> int:
        raise RuntimeError("a port bug")

    got: list[bytes] = []
    ended = poller.watch(b1.fileno(), broken)
    poller.watch(b2.fileno(), reader(b2, got))
    try:
        a1.send(b"boom")
        with trio.fail_after(5):
            await ended.wait()
        a2.send(b"fine")
        await until(lambda: got == [b"fine"], timeout=5)
    finally:
        poller.unwatch(b2.fileno())
        for s in (a1, b1, a2, b2):
            s.close()


async def test_frames_cross_a_switch(nursery) -> None:
    svc, pa, pb = await two_peers(nursery)
    assert svc.poller is Poller.current()
    for seq in range(50):
        await pa.send(ping(MAC_A, MAC_B, seq))
        assert (await pb.recv()) == ping(MAC_A, MAC_B, seq)
        await pb.send(ping(MAC_B, MAC_A, seq))
        assert (await pa.recv()) == ping(MAC_B, MAC_A, seq)


@pytest.fixture
def no_shared_wait(monkeypatch):
    monkeypatch.setattr(poller_module, "_trio_epoll_fd", lambda: None)


async def test_without_trios_epoll_a_task_waits(no_shared_wait, nursery) -> None:
    poller = Poller.current()
    assert not poller.waits_for_trio
    svc, pa, pb = await two_peers(nursery)
    assert svc.poller is poller
    await pa.send(ping(MAC_A, MAC_B))
    assert (await pb.recv()) == ping(MAC_A, MAC_B)
