"""The full feature phase of the target core, driven PDU by PDU (no sockets)."""

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.iscsi import pdu as P
from netstore.iscsi.connection import Timeouts
from tests.iscsi.initiator import Initiator, bhs, make_group, read10, wire, write10

BS = 512
TUR = bytes(6)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
    return str(path)


def ready(image, **keys) -> Initiator:
    """A logged-in initiator whose power-on unit attention has been consumed."""
    ini = Initiator(make_group(image), keys={k: str(v) for k, v in keys.items()})
    ini.login()
    _, (rsp,) = ini.scsi(TUR)
    assert rsp.opcode == P.OP_SCSI_RSP and rsp.bhs[3] == 0x02  # UA: power on
    _, (rsp,) = ini.scsi(TUR)
    assert rsp.bhs[3] == 0x00
    return ini


def file_bytes(image, off, n):
    with open(image, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_read_status_rides_in_single_data_in(image):
    ini = ready(image)
    itt, replies = ini.scsi(read10(8, 8), read=8 * BS)
    assert [r.opcode for r in replies] == [P.OP_DATA_IN]
    d = replies[0]
    assert d.itt == itt and d.flags & P.DATA_STATUS and d.flags & P.FLAG_FINAL
    assert d.bhs[3] == 0 and d.u32(36) == 0 and d.u32(40) == 0
    assert d.data == file_bytes(image, 8 * BS, 8 * BS)


def test_read_split_by_initiator_mrdsl_and_burst(image):
    ini = ready(image, MaxRecvDataSegmentLength=4096, MaxBurstLength=16384)
    itt, replies = ini.scsi(read10(0, 128), read=128 * BS)
    assert all(r.opcode == P.OP_DATA_IN for r in replies)
    assert len(replies) == 16
    assert [r.u32(36) for r in replies] == list(range(16))  # DataSN
    assert [r.u32(40) for r in replies] == [i * 4096 for i in range(16)]  # offsets
    # F closes each MaxBurstLength sequence; status only in the last PDU
    assert [bool(r.flags & P.FLAG_FINAL) for r in replies] == [i % 4 == 3 for i in range(16)]
    assert [bool(r.flags & P.DATA_STATUS) for r in replies] == [False] * 15 + [True]
    assert b"".join(r.data for r in replies) == file_bytes(image, 0, 128 * BS)
    assert max(len(r.data) for r in replies) <= 4096


def test_read_residuals(image):
    ini = ready(image)
    _, (d,) = ini.scsi(read10(0, 4), read=3 * BS, edtl=3 * BS)  # EDTL below the CDB's
    assert d.flags & P.RESID_OVERFLOW and d.u32(44) == BS and len(d.data) == 3 * BS
    _, (d,) = ini.scsi(read10(0, 4), read=6 * BS, edtl=6 * BS)
    assert d.flags & P.RESID_UNDERFLOW and d.u32(44) == 2 * BS and len(d.data) == 4 * BS


def test_write_with_immediate_data(image):
    ini = ready(image)
    payload = os.urandom(4 * BS)
    _, (rsp,) = ini.scsi(write10(16, 4), write=payload)
    assert rsp.opcode == P.OP_SCSI_RSP and rsp.bhs[3] == 0
    assert file_bytes(image, 16 * BS, 4 * BS) == payload


@pytest.mark.parametrize("max_r2t", [1, 4])
def test_write_solicited_with_r2t(image, max_r2t):
    ini = ready(image, InitialR2T="Yes", ImmediateData="No", MaxBurstLength=8192,
                FirstBurstLength=8192, MaxOutstandingR2T=max_r2t)
    payload = os.urandom(64 * BS)  # 32 KiB: four bursts of 8 KiB
    itt, replies = ini.scsi(write10(100, 64), write=payload, immediate_len=0)
    r2ts = [r for r in replies if r.opcode == P.OP_R2T]
    assert len(r2ts) == max_r2t
    done = []
    seen = 0
    while r2ts:
        r = r2ts.pop(0)
        assert r.itt == itt and r.u32(36) == seen  # R2TSN
        seen += 1
        ttt, off, length = r.u32(20), r.u32(40), r.u32(44)
        assert length <= 8192
        out = ini.data_out(itt, ttt, 0, off, payload[off:off + length])
        r2ts += [x for x in out if x.opcode == P.OP_R2T]
        done += [x for x in out if x.opcode == P.OP_SCSI_RSP]
    assert seen == 4
    assert len(done) == 1 and done[0].bhs[3] == 0 and done[0].u32(36) == 4  # ExpDataSN
    assert file_bytes(image, 100 * BS, 64 * BS) == payload


def test_write_unsolicited_then_r2t(image):
    ini = ready(image, InitialR2T="No", ImmediateData="Yes", FirstBurstLength=8192)
    payload = os.urandom(32 * BS)  # 16 KiB: 4 KiB immediate, 4 KiB unsolicited, R2T rest
    itt, replies = ini.scsi(write10(0, 32), write=payload, immediate_len=4096, final=False)
    assert [r.opcode for r in replies] == [P.OP_R2T]
    assert replies[0].u32(40) == 8192 and replies[0].u32(44) == 8192
    assert ini.data_out(itt, P.RESERVED_TAG, 0, 4096, payload[4096:8192]) == []
    ttt = replies[0].u32(20)
    (rsp,) = ini.data_out(itt, ttt, 0, 8192, payload[8192:])
    assert rsp.opcode == P.OP_SCSI_RSP and rsp.bhs[3] == 0
    assert file_bytes(image, 0, 32 * BS) == payload


def test_bad_datasn_fails_the_write_and_writes_nothing(image):
    ini = ready(image, InitialR2T="Yes", ImmediateData="No")
    before = file_bytes(image, 0, 8 * BS)
    itt, (r2t,) = ini.scsi(write10(0, 8), write=os.urandom(8 * BS), immediate_len=0)
    (rsp,) = ini.data_out(itt, r2t.u32(20), 5, 0, os.urandom(8 * BS))
    assert rsp.opcode == P.OP_SCSI_RSP and rsp.bhs[3] == 0x02
    sense = rsp.data[2:]
    assert sense[2] & 0x0F == 0x0B and sense[12] == 0x4B  # ABORTED COMMAND, DATA PHASE
    assert file_bytes(image, 0, 8 * BS) == before
    _, (ok,) = ini.scsi(TUR)  # the connection still serves
    assert ok.bhs[3] == 0


def test_cmdsn_window(image):
    ini = ready(image)
    exp = ini.cmdsn
    # beyond MaxCmdSN: silently ignored (RFC 7143 4.2.2.1)
    _, replies = ini.scsi(TUR, cmdsn=exp + 1000)
    assert replies == []
    # ahead of ExpCmdSN but in the window: held until the gap is filled
    _, replies = ini.scsi(TUR, cmdsn=exp + 1)
    assert replies == []
    _, replies = ini.scsi(TUR, cmdsn=exp)
    assert len(replies) == 2 and all(r.bhs[3] == 0 for r in replies)
    assert replies[-1].u32(28) == exp + 2  # ExpCmdSN moved past both


def test_nop_out_echo_and_target_ping(image):
    ini = Initiator(make_group(image), timeouts=Timeouts(nop_interval_s=10, nop_timeout_s=30))
    ini.conn.tick(100.0)
    ini.login()
    b = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=0x77, f20=P.RESERVED_TAG, f24=ini.cmdsn)
    (r,) = ini.send(wire(b, b"ping-data"))
    assert r.opcode == P.OP_NOP_IN and r.itt == 0x77 and r.data == b"ping-data"
    ini.conn.tick(101.0)  # the NOP-Out was received: idle from here
    ini.conn.tick(111.0)
    assert ini.replies() == []
    ini.conn.tick(111.5)
    (ping,) = ini.replies()
    assert ping.opcode == P.OP_NOP_IN and ping.itt == P.RESERVED_TAG
    ttt = ping.u32(20)
    assert ini.conn.nop_ttt == ttt
    b = bhs(P.OP_NOP_OUT, 0x80, immediate=True, itt=P.RESERVED_TAG, f20=ttt, f24=ini.cmdsn)
    assert ini.send(wire(b)) == []
    assert ini.conn.nop_ttt is None


def test_abort_task_of_pending_write(image):
    ini = ready(image, InitialR2T="Yes", ImmediateData="No")
    before = file_bytes(image, 0, 8 * BS)
    itt, (r2t,) = ini.scsi(write10(0, 8), write=os.urandom(8 * BS), immediate_len=0)
    b = bhs(P.OP_TASK_MGMT_REQ, 0x80 | 1, immediate=True, itt=0x999, f20=itt, f24=ini.cmdsn,
            f32=ini.cmdsn - 1)
    (r,) = ini.send(wire(b))
    assert r.opcode == P.OP_TASK_MGMT_RSP and r.bhs[2] == 0
    assert ini.data_out(itt, r2t.u32(20), 0, 0, os.urandom(8 * BS))[0].opcode == P.OP_REJECT
    assert file_bytes(image, 0, 8 * BS) == before


def test_abort_of_finished_task_says_no_such_task(image):
    ini = ready(image)
    itt, _ = ini.scsi(TUR)
    b = bhs(P.OP_TASK_MGMT_REQ, 0x80 | 1, immediate=True, itt=0x999, f20=itt, f24=ini.cmdsn,
            f32=ini.cmdsn - 1)
    (r,) = ini.send(wire(b))
    assert r.bhs[2] == 1


def test_lun_reset_raises_unit_attention_on_every_nexus(image):
    group = make_group(image)
    a = Initiator(group)
    a.login()
    b = Initiator(group, isid=bytes.fromhex("400001370001"), name="iqn.2026-11.org.test:b")
    b.login()
    for ini in (a, b):
        ini.scsi(TUR)
        assert ini.scsi(TUR)[1][0].bhs[3] == 0
    tmf = bhs(P.OP_TASK_MGMT_REQ, 0x80 | 5, immediate=True, itt=0x55, f24=a.cmdsn)
    (r,) = a.send(wire(tmf))
    assert r.bhs[2] == 0
    # SAM-5 6.6: every I_T nexus gets the unit attention, the sender's too
    for ini in (a, b):
        _, (rsp,) = ini.scsi(TUR)
        assert rsp.bhs[3] == 0x02 and rsp.data[2 + 12] == 0x29
        assert ini.scsi(TUR)[1][0].bhs[3] == 0


def test_logout_closes(image):
    ini = ready(image)
    b = bhs(P.OP_LOGOUT_REQ, 0x80, immediate=True, itt=0x42, f24=ini.cmdsn)
    (r,) = ini.send(wire(b))
    assert r.opcode == P.OP_LOGOUT_RSP and r.bhs[2] == 0
    assert ini.conn.closing


def test_unknown_opcode_rejected_and_connection_lives(image):
    ini = ready(image)
    b = bhs(0x1C, 0x80, itt=5)
    (r,) = ini.send(wire(b))
    assert r.opcode == P.OP_REJECT and r.bhs[2] == P.REJECT_NOT_SUPPORTED
    assert r.data[:48] == bytes(b)
    assert not ini.conn.closing
    assert ini.scsi(TUR)[1][0].bhs[3] == 0


def test_oversized_segment_closes_connection(image):
    ini = ready(image, MaxRecvDataSegmentLength=8192)
    b = bhs(P.OP_SCSI_CMD, 0xA1, itt=9, f20=1 << 20, f24=ini.cmdsn)
    b[5:8] = (ini.conn.reader.max_data + 4).to_bytes(3, "big")
    ini.conn.receive_data(bytes(b))
    assert ini.conn.closing and "MaxRecvDataSegmentLength" in ini.conn.close_reason


def test_sendtargets_in_discovery(image):
    ini = Initiator(make_group(image), keys={"SessionType": "Discovery"})
    del ini.keys["TargetName"]
    ini.login()
    from netstore.iscsi.text import encode_text, parse_text

    b = bhs(P.OP_TEXT_REQ, 0x80, immediate=True, itt=3, f20=P.RESERVED_TAG, f24=ini.cmdsn)
    (r,) = ini.send(wire(b, encode_text([("SendTargets", "All")])))
    assert r.opcode == P.OP_TEXT_RSP
    pairs = parse_text(r.data, allow_duplicates=True)
    assert ("TargetName", "iqn.2026-11.org.netstore:test") in pairs
    assert ("TargetAddress", "127.0.0.1:3260,1") in pairs
    _, replies = ini.scsi(TUR)
    assert replies[0].opcode == P.OP_REJECT


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=0, max_size=200), max_size=6), st.data())
def test_garbage_after_login_never_raises_nor_writes(image, chunks, data):
    ini = ready(image)
    before = file_bytes(image, 0, 1 << 20)
    for c in chunks:
        # keep the garbage away from write opcodes carrying data that could be valid
        if c and c[0] & 0x3F in (P.OP_SCSI_CMD, P.OP_DATA_OUT):
            c = bytes([c[0] ^ 0x08]) + c[1:]
        ini.conn.receive_data(c)
        ini.conn.outbox.clear()
        if ini.conn.closing:
            break
    assert file_bytes(image, 0, 1 << 20) == before


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([P.OP_SCSI_CMD, P.OP_DATA_OUT, P.OP_TEXT_REQ, P.OP_TASK_MGMT_REQ,
                        P.OP_LOGOUT_REQ, P.OP_NOP_OUT, P.OP_SNACK]),
       st.binary(min_size=44, max_size=44), st.binary(max_size=64))
def test_random_header_fields_are_answered_or_refused(image, opcode, fields, payload):
    ini = ready(image)
    b = bytearray(48)
    b[0] = opcode
    b[1:48] = bytes([fields[0]]) + b"\0\0\0" + b"\0\0\0\0" + fields[4:44] + b"\0" * 0
    b = bytearray(bytes(b)[:48].ljust(48, b"\0"))
    b[4] = 0
    ini.conn.receive_data(wire(b, payload))
    for r in ini.replies():
        assert r.opcode in (P.OP_REJECT, P.OP_SCSI_RSP, P.OP_DATA_IN, P.OP_R2T, P.OP_NOP_IN,
                            P.OP_TEXT_RSP, P.OP_TASK_MGMT_RSP, P.OP_LOGOUT_RSP)
    struct.unpack(">I", b[16:20])
