"""The PDU codec: framing, digests, lengths that lie, garbage."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.iscsi import pdu as P
from netstore.scsi.lun import encode_lun


def make_pdu(opcode: int, data: bytes = b"", ahs: bytes = b"", *, hd: bool = False,
             dd: bool = False, itt: int = 7) -> bytes:
    """An initiator PDU as it would be on the wire."""
    bhs = bytearray(48)
    bhs[0] = opcode
    bhs[1] = 0x80
    bhs[4] = len(ahs) // 4
    bhs[5:8] = len(data).to_bytes(3, "big")
    struct.pack_into(">I", bhs, 16, itt)
    head = bytes(bhs) + ahs
    out = head + (P.digest_bytes(head) if hd else b"")
    if data:
        padded = data + b"\0" * (-len(data) % 4)
        out += padded + (P.digest_bytes(padded) if dd else b"")
    return out


def test_crc32c_known_vector():
    # RFC 3720 B.4: 32 bytes of zeros have CRC32C 0x8a9136aa, sent LSB first.
    assert P.crc32c(bytes(32)) == 0x8A9136AA
    assert P.digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")


def test_split_feed_reassembles_every_pdu():
    stream = make_pdu(P.OP_NOP_OUT, b"hello") + make_pdu(P.OP_SCSI_CMD, itt=9)
    r = P.PduReader()
    got = []
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
        while (p := r.next()) is not None:
            got.append(p)
    assert [p.opcode for p in got] == [P.OP_NOP_OUT, P.OP_SCSI_CMD]
    assert got[0].data == b"hello" and got[1].itt == 9
    assert r.buffered == 0


def test_digests_checked():
    r = P.PduReader(max_data=8192)
    r.header_digest = r.data_digest = True
    good = make_pdu(P.OP_NOP_OUT, b"abcdef", hd=True, dd=True)
    r.feed(good)
    assert r.next().data == b"abcdef"
    bad_data = bytearray(good)
    bad_data[-1] ^= 1
    r.feed(bad_data + good)
    with pytest.raises(P.DataDigestError):
        r.next()
    assert r.next().data == b"abcdef"  # still in sync after a data digest error
    bad_head = bytearray(good)
    bad_head[20] ^= 1
    r.feed(bad_head)
    with pytest.raises(P.ProtocolError, match="header digest"):
        r.next()


def test_data_segment_above_limit_refused():
    r = P.PduReader(max_data=4096)
    r.feed(make_pdu(P.OP_SCSI_CMD, bytes(4100)))
    with pytest.raises(P.ProtocolError, match="MaxRecvDataSegmentLength 4096"):
        r.next()


def test_login_limit_applies_before_negotiation():
    r = P.PduReader(max_data=1 << 20)
    r.feed(make_pdu(P.OP_LOGIN_REQ, bytes(9000)))
    with pytest.raises(P.ProtocolError):
        r.next()


@given(st.lists(st.tuples(st.sampled_from(sorted(P.INITIATOR_OPCODES)),
                          st.binary(max_size=300), st.integers(0, 3)), max_size=8),
       st.booleans(), st.booleans(), st.integers(1, 97))
@settings(max_examples=200)
def test_roundtrip_any_chunking(pdus, hd, dd, chunk):
    stream = b"".join(make_pdu(op, data, bytes(4 * a), hd=hd, dd=dd) for op, data, a in pdus)
    r = P.PduReader(max_data=8192)
    r.header_digest, r.data_digest = hd, dd
    got = []
    for i in range(0, len(stream), chunk):
        r.feed(stream[i:i + chunk])
        while (p := r.next()) is not None:
            got.append(p)
    assert [(p.opcode, p.data, len(p.ahs)) for p in got] == [(op, d, 4 * a) for op, d, a in pdus]


@given(st.binary(max_size=2000), st.booleans(), st.booleans())
@settings(max_examples=300)
def test_garbage_only_raises_protocol_errors(blob, hd, dd):
    r = P.PduReader(max_data=1024)
    r.header_digest, r.data_digest = hd, dd
    r.feed(blob)
    for _ in range(100):
        try:
            if r.next() is None:
                break
        except P.DataDigestError:
            continue
        except P.ProtocolError:
            break


@given(st.binary(max_size=5000), st.booleans(), st.booleans())
def test_frame_pads_and_digests(data, hd, dd):
    bufs = P.frame(bytearray(48), data, header_digest=hd, data_digest=dd)
    wire = b"".join(bytes(b) for b in bufs)
    assert len(wire) % 4 == 0
    r = P.PduReader(max_data=8192)
    r.header_digest, r.data_digest = hd, dd
    # the target's frames parse with the same rules the initiator uses
    wire = bytearray(wire)
    r.feed(wire)
    assert r.next().data == data


def test_lun_encoding():
    for lun in (0, 1, 255, 256, 16383):
        assert P.decode_lun(encode_lun(lun)) == lun
