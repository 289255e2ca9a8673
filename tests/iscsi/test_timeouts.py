# The connection's clocks, driven through the public Connection.tick(now):
# login timeout, NOP-In pings of an idle initiator, the drop of a silent one.
"""Timeouts of the iSCSI core: the time is an argument, never a clock read."""

from __future__ import annotations

import pytest

from netstore.iscsi import pdu as P
from netstore.iscsi.connection import Timeouts
from tests.iscsi.initiator import Initiator, bhs, make_group, wire

T = Timeouts(nop_interval_s=10, nop_timeout_s=30, login_s=15)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * (1 << 20))
    return str(path)


def test_login_not_finished_in_time_is_dropped(image):
    ini = Initiator(make_group(image), timeouts=T)
    ini.conn.tick(1000.0)
    ini.conn.tick(1015.0)
    assert not ini.conn.closing
    ini.conn.tick(1015.5)
    assert ini.conn.closing
    assert ini.conn.close_reason == "login not finished within 15 s"


def test_finished_login_has_no_login_timeout(image):
    ini = Initiator(make_group(image), timeouts=T)
    ini.conn.tick(0.0)
    ini.login()
    ini.conn.tick(5.0)  # sees the login's bytes
    ini.conn.tick(14.9)
    assert not ini.conn.closing and ini.replies() == []


def test_idle_initiator_is_pinged_then_dropped_when_silent(image):
    ini = Initiator(make_group(image), timeouts=T)
    ini.conn.tick(0.0)
    ini.login()
    ini.conn.tick(1.0)
    ini.conn.tick(11.5)
    (ping,) = ini.replies()
    assert ping.opcode == P.OP_NOP_IN and ping.itt == P.RESERVED_TAG
    assert ping.u32(20) == ini.conn.nop_ttt
    ini.conn.tick(41.0)  # 29.5 s after the ping: not yet
    assert not ini.conn.closing and ini.replies() == []
    ini.conn.tick(42.0)
    assert ini.conn.closing
    assert ini.conn.close_reason == "no answer to a NOP-In ping in 30 s"


def test_any_pdu_after_the_ping_keeps_the_connection(image):
    ini = Initiator(make_group(image), timeouts=T)
    ini.conn.tick(0.0)
    ini.login()
    ini.conn.tick(1.0)
    ini.conn.tick(12.0)
    (ping,) = ini.replies()
    b = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=0x55, f20=P.RESERVED_TAG, f24=ini.cmdsn)
    assert len(ini.send(wire(b))) == 1  # a NOP-Out of its own, not the answer
    ini.conn.tick(13.0)
    ini.conn.tick(60.0)
    assert not ini.conn.closing
    assert ini.conn.nop_ttt == ping.u32(20)  # still unanswered, but the initiator lives


def test_answered_ping_lets_the_next_ping_come(image):
    ini = Initiator(make_group(image), timeouts=T)
    ini.conn.tick(0.0)
    ini.login()
    ini.conn.tick(1.0)
    ini.conn.tick(12.0)
    (ping,) = ini.replies()
    b = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=P.RESERVED_TAG, f20=ping.u32(20),
            f24=ini.cmdsn)
    assert ini.send(wire(b)) == []
    assert ini.conn.nop_ttt is None
    ini.conn.tick(13.0)
    ini.conn.tick(23.5)
    (ping2,) = ini.replies()
    assert ping2.opcode == P.OP_NOP_IN and ping2.u32(20) != ping.u32(20)


def test_no_pings_when_the_interval_is_zero(image):
    ini = Initiator(make_group(image), timeouts=Timeouts())
    ini.conn.tick(0.0)
    ini.login()
    ini.conn.tick(1.0)
    ini.conn.tick(1e6)
    assert ini.replies() == [] and not ini.conn.closing
