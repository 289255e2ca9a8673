"""The Trio shell with real loopback sockets: pings, dead peers, several
connections in one session, isolation of a broken connection, clean stop."""

import errno
import os
import socket

import pytest
import trio

from netstore.config import IscsiConfig, TargetConfig
from netstore.exports.served import TargetUnits
from netstore.exports.settings import iscsi_settings
from netstore.exports.targets import TargetWiring
from netstore.iscsi import pdu as P
from netstore.iscsi.server import IscsiService
from netstore.iscsi.text import encode_text, parse_text
from tests.iscsi.client import IQN, Client
from tests.iscsi.initiator import INITIATOR, bhs, read10, wire


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(256 * 1024))
    return str(path)


def config(image, **kw) -> IscsiConfig:
    return IscsiConfig(portals=[("127.0.0.1", 0)], base_iqn="iqn.2026-11.org.netstore",
                       discovery_chap=None,
                       targets=[TargetConfig(iqn=IQN, luns=[image], allow=["*"], chap=None,
                                             alias=None)], **kw)


def service(cfg: IscsiConfig) -> IscsiService:
    """The service serving `cfg`'s targets, wired as the daemon wires it."""
    svc = IscsiService(iscsi_settings(cfg))
    svc.set_targets(exports(cfg))
    return svc


def exports(cfg: IscsiConfig):
    wiring = TargetWiring(".", cfg.base_iqn)
    wiring.set_config(cfg.targets)
    return TargetUnits(".").exports(wiring.plans())


async def start(nursery, cfg) -> tuple[IscsiService, int]:
    svc = service(cfg)
    bound = await nursery.start(svc.run)
    return svc, bound[0][1]


async def test_idle_initiator_is_pinged_and_dropped_when_silent(image):
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image, nop_interval_s=0.2, nop_timeout_s=0.6))
        c = await Client.connect(port)
        await c.login()
        ping = await c.recv(timeout=3)
        assert ping is not None and ping.opcode == P.OP_NOP_IN
        assert ping.itt == P.RESERVED_TAG and ping.u32(20) != P.RESERVED_TAG
        # answer this ping: the connection stays
        b = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=P.RESERVED_TAG, f20=ping.u32(20),
                f24=c.cmdsn)
        await c.stream.send_all(wire(b))
        ping2 = await c.recv(timeout=3)
        assert ping2 is not None and ping2.opcode == P.OP_NOP_IN
        # stay silent: the target drops the dead initiator
        with trio.fail_after(5):
            while (p := await c.recv(timeout=5)) is not None:
                assert p.opcode == P.OP_NOP_IN
        assert svc.group.sessions == {}
        n.cancel_scope.cancel()


async def test_two_connections_in_one_session(image):
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        a = await Client.connect(port)
        r = await a.login()
        tsih = int.from_bytes(r.bhs[14:16], "big")
        assert dict(parse_text(r.data)).get("MaxConnections") == "4"
        b = await Client.connect(port)
        b.cmdsn = a.cmdsn
        await b.login(tsih=tsih, cid=1)
        (session,) = svc.group.sessions.values()
        assert sorted(session.connections) == [0, 1]
        await a.command(bytes(6))  # consume the power-on unit attention
        b.cmdsn = a.cmdsn
        (d,) = await b.command(read10(0, 1), read=512)
        with open(image, "rb") as f:
            assert d.data == f.read(512)
        a.cmdsn = b.cmdsn
        (d,) = await a.command(read10(1, 1), read=512)
        assert d.opcode == P.OP_DATA_IN and len(d.data) == 512
        n.cancel_scope.cancel()


async def test_broken_connection_does_not_disturb_another(image):
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        good = await Client.connect(port)
        await good.login()
        await good.command(bytes(6))
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        junk = bytearray(48)
        junk[0] = P.OP_SCSI_CMD
        junk[5:8] = b"\xff\xff\xff"  # a 16 MiB data segment before login
        await bad.send_all(bytes(junk) + os.urandom(4096))
        with trio.fail_after(5):
            while await bad.receive_some(4096):
                pass
        (d,) = await good.command(read10(0, 1), read=512)
        assert d.opcode == P.OP_DATA_IN
        n.cancel_scope.cancel()


async def test_clean_stop_asks_for_logout(image):
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        c = await Client.connect(port)
        await c.login()
        n.start_soon(svc.aclose)
        msg = await c.recv()
        assert msg is not None and msg.opcode == P.OP_ASYNC and msg.bhs[36] == 1
        b = bhs(P.OP_LOGOUT_REQ, 0x80, immediate=True, itt=77, f24=c.cmdsn)
        await c.stream.send_all(wire(b))
        r = await c.recv()
        assert r is not None and r.opcode == P.OP_LOGOUT_RSP and r.bhs[2] == 0
        assert await c.recv() is None


async def test_portal_in_use_is_a_clear_error(image):
    async with trio.open_nursery() as n:
        _, port = await start(n, config(image))
        cfg = config(image)
        cfg = IscsiConfig(portals=[("127.0.0.1", port)], base_iqn=cfg.base_iqn,
                          discovery_chap=None, targets=cfg.targets)
        from netstore.iscsi.server import ServiceError

        with pytest.raises(ServiceError, match=f"127.0.0.1:{port}"):
            await service(cfg).run()
        n.cancel_scope.cancel()



async def test_reconfigure_keeps_sessions_adds_and_retires_targets(image, tmp_path):
    other = tmp_path / "other.img"
    other.write_bytes(bytes(64 * 1024))
    new_iqn = "iqn.2026-11.org.netstore:new"
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        live = await Client.connect(port)
        await live.login()
        await live.command(bytes(6))
        # a new file: the old target is gone, a new one appears
        svc.set_targets(exports(IscsiConfig(
            portals=[("127.0.0.1", 0)], base_iqn="iqn.2026-11.org.netstore",
            discovery_chap=None,
            targets=[TargetConfig(iqn=new_iqn, luns=[str(other)], allow=["*"], chap=None,
                                  alias=None)])))
        # the live session keeps working
        (d,) = await live.command(read10(0, 1), read=512)
        assert d.opcode == P.OP_DATA_IN
        # a new login to the removed target is refused: 0203 target not found
        c = await Client.connect(port)
        b = bhs(P.OP_LOGIN_REQ, 0x80 | (1 << 2) | 3, immediate=True, itt=1)
        b[8:14] = bytes.fromhex("400001370009")
        await c.stream.send_all(wire(b, encode_text([
            ("InitiatorName", INITIATOR), ("TargetName", IQN), ("SessionType", "Normal")])))
        r = await c.recv()
        assert r is not None and (r.bhs[36], r.bhs[37]) == (2, 3)
        assert await c.recv() is None
        # the new target takes logins
        assert svc.group.lookup(new_iqn) is not None
        n.cancel_scope.cancel()


class _FailingListener:
    """accept() raises the given errors in turn, then would block forever."""

    def __init__(self, *errnos: int) -> None:
        self.errnos = list(errnos)
        self.calls = 0

    async def accept(self):
        self.calls += 1
        if self.errnos:
            code = self.errnos.pop(0)
            raise OSError(code, os.strerror(code))
        await trio.sleep_forever()


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS])
async def test_accept_retries_capacity_errors(image, caplog, code):
    svc = service(config(image))
    listener = _FailingListener(code, code)
    async with trio.open_nursery() as n:
        svc._nursery = n
        n.start_soon(svc._accept_loop, listener)
        with trio.fail_after(5):
            while listener.calls < 3:
                await trio.sleep(0.01)
        n.cancel_scope.cancel()
    retried = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == 2 and os.strerror(code) in retried[0].getMessage()


@pytest.mark.parametrize("code", [errno.EBADF, errno.EINVAL, errno.ENOTSOCK])
async def test_accept_ends_on_other_errors(image, caplog, code):
    svc = service(config(image))
    listener = _FailingListener(code, code)
    async with trio.open_nursery() as n:
        svc._nursery = n
        with trio.fail_after(5):
            await svc._accept_loop(listener)  # returns instead of spinning
    assert listener.calls == 1
    (rec,) = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert "accepts no more connections" in rec.getMessage()
    assert os.strerror(code) in rec.getMessage()


async def test_an_initiator_that_does_not_read_is_answered_when_it_does(image):
    """A window of 64 KiB reads (8 MiB of answers) from an initiator that reads
    nothing: what the socket does not take waits for it, while another
    connection is served; then every answer arrives, in order, whole."""
    data = open(image, "rb").read()
    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        slow = Client(trio.SocketStream(sock))
        await slow.login()
        await slow.command(bytes(6))  # consume the power-on unit attention
        other = await Client.connect(port)
        await other.login(isid=bytes.fromhex("400001370001"))
        await other.command(bytes(6))
        commands = []
        for i in range(128):
            slow.itt += 1
            b = bhs(P.OP_SCSI_CMD, 0x81 | 0x40, itt=slow.itt, f20=65536, f24=slow.cmdsn)
            b[32:42] = read10((i % 4) * 128, 128)
            slow.cmdsn += 1
            commands.append(wire(b))
        await slow.stream.send_all(b"".join(commands))
        await trio.sleep(0.2)
        for _ in range(20):  # the other connection is served meanwhile
            (d,) = await other.command(read10(1, 1), read=512)
            assert bytes(d.data) == data[512:1024]
        for i in range(128):
            d = await slow.recv(timeout=10)
            assert d is not None and d.opcode == P.OP_DATA_IN and d.u32(16) == i + 2
            assert bytes(d.data) == data[(i % 4) * 65536:(i % 4 + 1) * 65536]
        n.cancel_scope.cancel()
