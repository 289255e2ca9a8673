# tests/switch/test_vxlan_core.py - the pure VXLAN core (netstore/switch/vxlan.py):
# the header codec against RFC 7348's layout, the outer source port, the VTEP
# table's learning and aging, and a segment's decisions (decapsulate and
# learn, encapsulate to the learnt VTEP or every remote, the path MTU), with
# hypothesis feeding malformed packets that must be refused and counted.
"""Tests of the VXLAN header codec, VTEP table and per-port decisions."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.switch.vxlan import (
    ENCAP_LEN,
    HEADER_LEN,
    SPORT_MAX,
    SPORT_MIN,
    VNI_MAX,
    VtepTable,
    VxlanError,
    VxlanSegment,
    decode_header,
    encode_header,
    source_port,
    udp_header,
)

A = bytes.fromhex("020000000a0a")
B = bytes.fromhex("020000000b0b")
BCAST = b"\xff" * 6
R1, R2 = ("198.51.100.2", 4789), ("198.51.100.3", 4789)


def frame(dst: bytes, src: bytes, size: int = 60, ethertype: bytes = b"\x08\x06") -> bytes:
    return dst + src + ethertype + bytes(size - 14)


def segment(**kw) -> VxlanSegment:
    args = dict(tagged=False, remotes=[R1, R2], path_mtu=1500, aging_s=300.0, size=16)
    args.update(kw)
    return VxlanSegment({1: 5010}, **args)


def test_header_is_rfc7348_layout() -> None:
    h = encode_header(0xABCDEF)
    assert h == bytes([0x08, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0])
    assert decode_header(h + frame(A, B)) == 0xABCDEF
    with pytest.raises(ValueError):
        encode_header(VNI_MAX + 1)


@given(st.integers(0, VNI_MAX), st.binary(min_size=14, max_size=200))
def test_header_round_trip(vni: int, inner: bytes) -> None:
    assert decode_header(encode_header(vni) + inner) == vni


def test_reserved_bits_are_ignored_and_i_flag_required() -> None:
    noisy = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 7, 0xFF]) + frame(A, B)
    assert decode_header(noisy) == 7
    with pytest.raises(VxlanError) as e:
        decode_header(bytes([0xF7, 0, 0, 0, 0, 0, 7, 0]) + frame(A, B))
    assert e.value.cause == "vxlan_flags"
    with pytest.raises(VxlanError) as e:
        decode_header(encode_header(7) + bytes(13))
    assert e.value.cause == "vxlan_runt"


def test_udp_header_has_zero_checksum() -> None:
    assert udp_header(50000, 4789, 100) == struct.pack("!HHHH", 50000, 4789, 108, 0)


@given(st.binary(max_size=120))
def test_source_port_in_range_and_stable(data: bytes) -> None:
    p = source_port(data)
    assert SPORT_MIN <= p <= SPORT_MAX
    assert source_port(data) == p


def test_source_port_follows_the_inner_flow() -> None:
    def udp4(sport: int) -> bytes:
        ip = bytes([0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2])
        return A + B + b"\x08\x00" + ip + struct.pack("!HHHH", sport, 53, 8, 0)
    ports = {source_port(udp4(s)) for s in range(1000, 1064)}
    assert len(ports) > 32  # flows spread over the range
    assert source_port(udp4(1000)) == source_port(udp4(1000) + b"payload")


def test_table_learns_ages_and_caps() -> None:
    t = VtepTable(aging_s=10, size=2)
    t.learn(1, A, R1, now=0)
    assert t.lookup(1, A, now=5) == R1
    assert t.lookup(2, A, now=5) is None  # per VNI
    t.learn(1, A, R2, now=6)  # moved to another VTEP
    assert t.lookup(1, A, now=7) == R2
    assert t.lookup(1, A, now=16) is None  # aged
    t.learn(1, A, R1, now=20)
    t.learn(1, B, R1, now=21)
    t.learn(2, B, R2, now=22)  # full: the oldest goes
    assert len(t) == 2 and t.lookup(1, A, now=22) is None
    assert t.expire(now=31.5) == 1 and len(t) == 1
    assert [e[:3] for e in t.entries(now=31.5)] == [(2, B, R2)]


def test_decapsulate_learns_the_sending_vtep_at_its_listening_port() -> None:
    seg = segment(remotes=[("198.51.100.2", 8472)])
    got = seg.decapsulate(encode_header(5010) + frame(BCAST, A), ("198.51.100.2", 51234), 0)
    assert got == frame(BCAST, A)
    assert seg.table.lookup(5010, A, 1) == ("198.51.100.2", 8472)
    # a VTEP that is not a remote: our own port number (one dstport, as Linux)
    seg.decapsulate(encode_header(5010) + frame(BCAST, B), ("198.51.100.9", 60000), 0)
    assert seg.table.lookup(5010, B, 1) == ("198.51.100.9", 4789)
    # group sources are never learnt
    seg.decapsulate(encode_header(5010) + frame(A, BCAST), ("198.51.100.9", 60000), 0)
    assert len(seg.table) == 2


def test_unknown_vni_and_clear_flag_are_dropped_and_counted() -> None:
    seg = segment()
    assert seg.decapsulate(encode_header(42) + frame(A, B), R1, 0) is None
    assert seg.decapsulate(b"\x00" * 8 + frame(A, B), R1, 0) is None
    assert seg.drops == {"vxlan_vni": 1, "vxlan_flags": 1}
    assert len(seg.table) == 0


def test_known_unicast_to_its_vtep_others_to_every_remote() -> None:
    seg = segment()
    seg.decapsulate(encode_header(5010) + frame(BCAST, A), R2, 0)
    sport, payload, vteps = seg.encapsulate(frame(A, B), 1)
    assert vteps == (R2,) and payload == encode_header(5010) + frame(A, B)
    assert SPORT_MIN <= sport <= SPORT_MAX
    assert seg.encapsulate(frame(B, A), 1)[2] == (R1, R2)  # unknown unicast
    assert seg.encapsulate(frame(BCAST, A), 1)[2] == (R1, R2)  # broadcast
    assert seg.encapsulate(frame(A, B), 400)[2] == (R1, R2)  # aged: flooded again


def test_no_remote_and_unknown_destination_is_counted() -> None:
    seg = segment(remotes=[])
    assert seg.encapsulate(frame(BCAST, A), 0) == (0, b"", ())
    assert seg.drops["no_vtep"] == 1


def test_path_mtu_drops_what_would_not_fit() -> None:
    seg = segment(path_mtu=1500)
    assert seg.inner_mtu == 1450
    fits = 1500 - ENCAP_LEN  # an inner IP packet of 1450 bytes plus its Ethernet header
    assert fits == 1464
    assert seg.encapsulate(frame(BCAST, A, size=fits), 0)[2]
    assert seg.encapsulate(frame(BCAST, A, size=fits + 1), 0) == (0, b"", ())
    assert seg.drops["path_mtu"] == 1


def test_trunk_maps_vlans_to_vnis_both_ways() -> None:
    seg = VxlanSegment({10: 5010, 20: 5020}, tagged=True, remotes=[R1])
    tagged = A + B + b"\x81\x00" + struct.pack("!H", 0x2000 | 20) + b"\x08\x06" + bytes(46)
    _, payload, vteps = seg.encapsulate(tagged, 0)
    assert payload[:HEADER_LEN] == encode_header(5020)
    assert payload[HEADER_LEN:] == A + B + b"\x08\x06" + bytes(46)  # the tag became the VNI
    back = seg.decapsulate(encode_header(5010) + frame(B, A), R1, 0)
    assert back == B + A + b"\x81\x00\x00\x0a" + b"\x08\x06" + bytes(46)
    assert seg.encapsulate(frame(BCAST, A), 0) == (0, b"", ())  # untagged: no VNI
    assert seg.encapsulate(A + B + b"\x81\x00\x00\x1e" + bytes(46), 0) == (0, b"", ())  # VLAN 30
    assert seg.drops["vlan"] == 2
    inner_tagged = encode_header(5010) + A + B + b"\x81\x00\x00\x0a" + bytes(46)
    assert seg.decapsulate(inner_tagged, R1, 0) is None
    assert seg.drops["vxlan_tagged"] == 1


@settings(max_examples=300)
@given(st.binary(max_size=80), st.sampled_from([R1, R2, ("192.0.2.7", 1)]),
       st.floats(0, 1e6))
def test_any_packet_is_taken_or_refused_and_counted(data: bytes, src, now: float) -> None:
    seg = segment()
    got = seg.decapsulate(data, src, now)
    if got is None:
        assert sum(seg.drops.values()) == 1
    else:
        assert got == data[HEADER_LEN:] and len(got) >= 14
        assert data[0] & 0x08 and int.from_bytes(data[4:7], "big") == 5010


@settings(max_examples=200)
@given(st.binary(min_size=14, max_size=1600), st.booleans())
def test_any_frame_is_sent_whole_or_counted(data: bytes, tagged: bool) -> None:
    seg = VxlanSegment({10: 5010} if tagged else {1: 5010}, tagged=tagged, remotes=[R1])
    sport, payload, vteps = seg.encapsulate(data, 0)
    if vteps:
        assert SPORT_MIN <= sport <= SPORT_MAX
        assert decode_header(payload) == 5010 and len(payload) + 28 <= seg.path_mtu
    else:
        assert sum(seg.drops.values()) == 1
