# tests/switch/test_core_props.py - properties of the forwarding core over
# random port layouts and random frames (well-formed, tagged, and plain random
# bytes): it never raises, never sends a frame back out of its ingress port,
# never lets a frame change VLAN, and only changes frames by a tag.
"""Hypothesis properties of netstore.switch.core.Switch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.switch.core import PortSettings, Switch
from netstore.switch.frames import max_frame_len, strip_tag, tci

VLANS = (1, 2, 3)
MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(4)] + [b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01"]


@st.composite
def port_layouts(draw: st.DrawFn) -> list[PortSettings]:
    n = draw(st.integers(2, 5))
    ports = []
    for i in range(n):
        name = f"p{i}"
        mtu = draw(st.sampled_from((68, 1500, 9000)))
        if draw(st.booleans()):
            ports.append(PortSettings(name, vlan=draw(st.sampled_from(VLANS)), mtu=mtu))
        else:
            trunk = draw(st.frozensets(st.sampled_from(VLANS), min_size=1))
            native = draw(st.none() | st.sampled_from(VLANS))
            ports.append(PortSettings(name, vlan=None, trunk=trunk, native=native, mtu=mtu))
    return ports


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=100))
    dst = draw(st.sampled_from(MACS))
    src = draw(st.sampled_from(MACS))
    head = dst + src
    tag = draw(st.none() | st.integers(0, 4))
    if tag is not None:
        prio = draw(st.integers(0, 15)) << 12
        head += b"\x81\x00" + (prio | tag).to_bytes(2, "big")
    body = b"\x08\x00" + draw(st.binary(max_size=40)) + b"\0" * draw(st.sampled_from((0, 60, 1500)))
    return head + body


def vlan_at(port: PortSettings, frame: bytes) -> int | None:
    """The VLAN a frame belongs to on ``port``, worked out independently of the core."""
    t = tci(frame)
    if t is None or t & 0xFFF == 0:
        return port.vlan if port.trunk is None else port.native
    return t & 0xFFF


@settings(max_examples=300, deadline=None)
@given(port_layouts(), st.lists(st.tuples(st.integers(0, 4), frames()), max_size=40), st.data())
def test_random_frames_never_raise_bounce_or_cross_vlans(ports, arrivals, data) -> None:
    sw = Switch("sw", now=0.0, table_size=4)
    for p in ports:
        sw.add_port(p)
    by_name = {p.name: p for p in ports}
    for i, frame in arrivals:
        sw.now += data.draw(st.sampled_from((0.0, 0.5, 400.0)))
        ingress = ports[i % len(ports)]
        out = sw.receive(ingress.name, frame)
        if not out:
            continue
        vin = vlan_at(ingress, frame)
        inner = strip_tag(frame) if tci(frame) is not None else frame
        for name, f in out:
            assert name != ingress.name
            egress = by_name[name]
            assert vlan_at(egress, f) == vin
            assert egress.carries(vin)
            assert (strip_tag(f) if tci(f) is not None else f) == inner
            assert len(f) <= max_frame_len(egress.mtu, tagged=tci(f) is not None)
            if tci(f) is not None and tci(frame) is not None:
                assert tci(f) & 0xF000 == tci(frame) & 0xF000  # priority kept
        assert len(sw.table) <= 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=64)), max_size=50))
def test_random_bytes_with_every_feature_on(arrivals) -> None:
    sw = Switch("sw", table_size=8)
    sw.add_port(PortSettings("a", max_macs=2, storm_pps=5, mirror_to="m"))
    sw.add_port(PortSettings("b", bound_mac=bytes([2, 0, 0, 0, 0, 1])))
    sw.add_port(PortSettings("c", vlan=None, trunk=frozenset({1, 2}), native=1, mtu=68))
    sw.add_port(PortSettings("m"))
    for i, frame in arrivals:
        name = "abc"[i]
        for out, _ in sw.receive(name, frame):
            assert out != name
