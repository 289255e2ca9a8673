# tests/processes/test_channel.py - the supervisor's channel to a child and the
# acceptor's reading of a first Login Request: messages of any size arrive
# whole and in order with their descriptors, calls get answers or the
# other end's error, a dead end is reported; first PDUs of any bytes are
# judged without an exception.
"""Tests for netstore.processes.channel and netstore.iscsi.routing."""

from __future__ import annotations

import os
import struct

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from netstore.iscsi import pdu as P
from netstore.iscsi.routing import FIRST_PDU_MAX, first_login, first_pdu_length
from netstore.processes.channel import (
    Channel,
    ChannelClosed,
    Peer,
    RemoteError,
    channel_pair,
)


async def test_messages_of_any_size_arrive_whole_in_order_with_their_descriptors():
    a, b = channel_pair()
    left, right = Channel(a), Channel(b)
    r, w = os.pipe()
    big = os.urandom(300_000)  # several records
    async with trio.open_nursery() as n:
        n.start_soon(left.send, ("first", big))
        (msg, fds) = await right.receive()
        assert msg == ("first", big) and fds == []
        await left.send("with a pipe", fds=[w])
        msg, fds = await right.receive()
        assert msg == "with a pipe" and len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        assert os.read(r, 100) == b"through the passed descriptor"
        for fd in (r, w, *fds):
            os.close(fd)
    left.close()
    with pytest.raises(ChannelClosed):
        await right.receive()
    right.close()


async def test_calls_get_answers_errors_and_a_gone_peer_is_reported():
    a, b = channel_pair()

    async def slow_double(x: int) -> int:
        await trio.sleep(0.01)
        return 2 * x

    def refuse() -> None:
        raise LookupError("no switch named 'x'")

    server = Peer(Channel(b), {"double": slow_double, "refuse": refuse})
    client = Peer(Channel(a))
    async with trio.open_nursery() as n:
        n.start_soon(server.serve, n)
        n.start_soon(client.serve, n)
        assert await client.call("double", 21) == 42
        with pytest.raises(RemoteError, match="no switch named 'x'"):
            await client.call("refuse")
        with pytest.raises(RemoteError, match="no such request"):
            await client.call("nothing")
        server.channel.close()
        with pytest.raises(ChannelClosed):
            await client.call("double", 1, timeout=5)
        n.cancel_scope.cancel()
    client.channel.close()


def login_pdu(keys: bytes, *, cont: bool = False) -> bytes:
    bhs = bytearray(P.BHS_LEN)
    bhs[0] = 0x40 | P.OP_LOGIN_REQ
    bhs[1] = 0x87 if not cont else 0x47
    bhs[5:8] = len(keys).to_bytes(3, "big")
    return bytes(bhs) + keys + bytes(-len(keys) % 4)


def test_a_first_login_names_its_target_or_discovery():
    pdu = login_pdu(b"InitiatorName=iqn.a\0TargetName=iqn.2026-12.t:one\0SessionType=Normal\0")
    assert first_pdu_length(pdu[:48]) == len(pdu)
    got = first_login(pdu)
    assert got.readable and got.target == "iqn.2026-12.t:one" and not got.discovery
    disc = first_login(login_pdu(b"InitiatorName=iqn.a\0SessionType=Discovery\0"))
    assert disc.readable and disc.discovery and disc.target is None
    # keys continued in a next PDU cannot be routed on: the first worker decides
    assert not first_login(login_pdu(b"TargetName=iqn.x\0", cont=True)).readable
    # not a Login Request, or one too long to read here
    assert first_pdu_length(bytes(48)) is None
    long = bytearray(login_pdu(b""))
    long[5:8] = struct.pack(">I", FIRST_PDU_MAX)[1:]
    assert first_pdu_length(bytes(long[:48])) is None


@given(st.binary(min_size=0, max_size=400))
def test_any_bytes_are_judged_without_an_exception(data):
    length = first_pdu_length(data[:48])
    got = first_login(data)
    assert got.readable == (length is not None and length == len(data)
                            and not data[1] & 0x40)
