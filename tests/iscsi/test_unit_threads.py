"""The shell drains each unit's commands in a worker thread: a unit stuck on
its disk (a backend whose flush or write waits on an event) stalls nothing
but its own queue.  Real loopback sockets; the order of events is asserted,
never wall times."""

import os
import threading

import pytest
import trio

from netstore.disk.raw import RawImage
from netstore.iscsi import pdu as P
from netstore.iscsi.login import TargetEntry
from netstore.iscsi.portal import TargetExport
from netstore.iscsi.server import IscsiService
from netstore.iscsi.settings import ServiceSettings
from netstore.scsi.lun import LogicalUnit, LunIdentity
from tests.iscsi.client import Client
from tests.iscsi.initiator import bhs, read10, wire, write10

IQN_A = "iqn.2026-11.org.netstore:a"
IQN_B = "iqn.2026-11.org.netstore:b"
BS = 512
SYNC10 = bytes([0x35]) + bytes(9)
STUCK_LIMIT_S = 10  # a gate never waits longer (a failing test must end)


class Gate:
    """A backend whose flush (or pwrite) waits until released: a stuck disk."""

    def __init__(self, inner: RawImage, *, stuck: str = "flush") -> None:
        self.inner = inner
        self.stuck = stuck
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _wait(self, what: str) -> None:
        if self.armed and what == self.stuck:
            self.entered.set()
            self.release.wait(STUCK_LIMIT_S)

    def flush(self) -> None:
        self._wait("flush")
        self.inner.flush()

    def pwrite(self, offset, data) -> None:
        self._wait("pwrite")
        self.inner.pwrite(offset, data)


@pytest.fixture
def images(tmp_path):
    paths = []
    for name in ("a.img", "b.img"):
        p = tmp_path / name
        p.write_bytes(os.urandom(256 * 1024))
        paths.append(str(p))
    return paths


def unit(backend, target: str) -> LogicalUnit:
    return LogicalUnit(backend, LunIdentity(serial=target[-1], naa=bytes(8), target_name=target))


async def serve(nursery, exports) -> tuple[IscsiService, int]:
    svc = IscsiService(ServiceSettings(portals=(("127.0.0.1", 0),)))
    svc.set_targets(exports)
    bound = await nursery.start(svc.run)
    return svc, bound[0][1]


async def send_command(c: Client, cdb: bytes, *, read: int = 0, data: bytes = b"") -> int:
    """Send a SCSI command without waiting for its answer; its ITT."""
    c.itt += 1
    flags = 0x81 | (0x40 if read else 0) | (0x20 if data else 0)
    b = bhs(P.OP_SCSI_CMD, flags, itt=c.itt, f20=read or len(data), f24=c.cmdsn)
    b[32:32 + len(cdb)] = cdb
    c.cmdsn += 1
    await c.stream.send_all(wire(b, data))
    return c.itt


async def wait_thread(event: threading.Event) -> None:
    assert await trio.to_thread.run_sync(event.wait, STUCK_LIMIT_S)


async def test_a_unit_stuck_in_sync_cache_stalls_no_other_session(images):
    gate = Gate(RawImage(images[0]))
    exports = [TargetExport(TargetEntry(IQN_A), {0: unit(gate, IQN_A)}),
               TargetExport(TargetEntry(IQN_B), {0: unit(RawImage(images[1]), IQN_B)})]
    events = []
    async with trio.open_nursery() as n:
        svc, port = await serve(n, exports)
        a = await Client.connect(port, IQN_A)
        await a.login()
        await a.command(bytes(6))  # the power-on unit attention
        b = await Client.connect(port, IQN_B)
        await b.login(isid=bytes.fromhex("400001370002"))
        await b.command(bytes(6))
        gate.armed = True
        sync_itt = await send_command(a, SYNC10)
        read_itt = await send_command(a, read10(0, 1), read=BS)  # behind the SYNC
        await wait_thread(gate.entered)  # A's LUN 0 is in fdatasync now
        # another session's reads are answered meanwhile ...
        (d,) = await b.command(read10(1, 1), read=BS)
        assert d.opcode == P.OP_DATA_IN and len(d.data) == BS
        events.append("B read answered")
        # ... and so is a NOP-Out on A's own connection
        nop = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=0x4242, f20=P.RESERVED_TAG,
                  f24=a.cmdsn)
        await a.stream.send_all(wire(nop, b"ping"))
        r = await a.recv()
        assert r is not None and r.opcode == P.OP_NOP_IN and r.itt == 0x4242
        events.append("A NOP answered")
        gate.release.set()
        r = await a.recv()
        assert r is not None and r.opcode == P.OP_SCSI_RSP and r.itt == sync_itt
        assert r.bhs[3] == 0
        events.append("A SYNC answered")
        r = await a.recv()
        assert r is not None and r.opcode == P.OP_DATA_IN and r.itt == read_itt
        with open(images[0], "rb") as f:
            assert r.data == f.read(BS)
        events.append("A read answered")
        n.cancel_scope.cancel()
    assert events == ["B read answered", "A NOP answered", "A SYNC answered", "A read answered"]


async def stuck_write(n, images, lba: int, data: bytes):
    """Target A served by `n`, with a write of `data` at `lba` stuck in its pwrite:
    (gate, service, port, the writing client)."""
    gate = Gate(RawImage(images[0]), stuck="pwrite")
    exports = [TargetExport(TargetEntry(IQN_A), {0: unit(gate, IQN_A)})]
    svc, port = await serve(n, exports)
    a = await Client.connect(port, IQN_A)
    await a.login()
    await a.command(bytes(6))
    gate.armed = True
    await send_command(a, write10(lba, len(data) // BS), data=data)
    await wait_thread(gate.entered)
    return gate, svc, port, a


async def test_a_write_in_flight_when_the_connection_drops_is_applied_whole(images):
    new = os.urandom(64 * BS)
    async with trio.open_nursery() as n:
        gate, svc, port, a = await stuck_write(n, images, 16, new)
        await a.stream.aclose()  # the initiator is gone mid-write
        with trio.fail_after(5):
            while svc.group.sessions:
                await trio.sleep(0.01)
        gate.armed = False
        gate.release.set()
        # a new session is served; its read queues behind the old write
        c = await Client.connect(port, IQN_A)
        await c.login()
        await c.command(bytes(6))
        (d,) = await c.command(read10(16, 64), read=64 * BS)
        assert d.data == new
        n.cancel_scope.cancel()
    with open(images[0], "rb") as f:
        f.seek(16 * BS)
        assert f.read(64 * BS) == new


async def test_clean_stop_waits_for_queued_writes(images):
    new = os.urandom(8 * BS)
    async with trio.open_nursery() as n:
        gate, svc, _port, _a = await stuck_write(n, images, 0, new)
        stopped = trio.Event()

        async def stop():
            await svc.aclose()
            stopped.set()

        n.start_soon(stop)
        await trio.sleep(0.1)
        assert not stopped.is_set()  # the write is still running
        gate.release.set()
        with trio.fail_after(10):
            await stopped.wait()
    with open(images[0], "rb") as f:
        assert f.read(8 * BS) == new
