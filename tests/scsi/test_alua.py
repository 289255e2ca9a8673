# Asymmetric logical unit access (netstore/scsi/alua.py), checked against
# SPC-4 read independently of the code: REPORT TARGET PORT GROUPS parsed
# field by field for 1..3 groups in both formats and any allocation length,
# the commands each inaccessible state lets through and the sense it
# refuses the rest with, ASYMMETRIC ACCESS STATE CHANGED once per nexus, the
# single-host default answering byte for byte as before, and the paths that
# skip execute()'s dispatch (merged writes, EXTENDED COPY) refused too.
"""Tests for target port groups, access states and REPORT TARGET PORT GROUPS."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, LunIdentity, ScsiTarget
from netstore.scsi.alua import AccessState, PortGroups, TargetPortGroup
from netstore.scsi.together import plain_write
from tests.scsi.scsi_cdb import (
    NEXUS,
    OTHER,
    check,
    good,
    inquiry,
    mode_sense6,
    read_capacity16,
    report_luns,
    rsoc,
    rw10,
    rw16,
    sync_cache10,
)
from tests.scsi.test_scsi_xcopy import NAA2, b2b, cscd, plist, xcopy_cdb
from tests.scsi.units import NAA, TARGET, make_image, ready

AO, AN, S, U, T = (AccessState.ACTIVE_OPTIMIZED, AccessState.ACTIVE_NON_OPTIMIZED,
                   AccessState.STANDBY, AccessState.UNAVAILABLE, AccessState.TRANSITIONING)
BS = 512
NOT_READY, UNIT_ATTENTION = 0x2, 0x6


def rtpg(fmt: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BB4xIBB", 0xA3, (fmt << 5) | 0x0A, alloc, 0, 0)


def tur() -> bytes:
    return bytes(6)


def request_sense(alloc: int = 18) -> bytes:
    return bytes((0x03, 0, 0, 0, alloc, 0))


def pr_in_read_keys() -> bytes:
    return struct.pack(">BB5xHB", 0x5E, 0x00, 1024, 0)


def unit(path, group: int = 1, port: int = 1) -> LogicalUnit:
    return LogicalUnit(RawImage(path), LunIdentity(serial="SER0001", naa=NAA, target_name=TARGET,
                                                   port_group=group, relative_port=port))


def three_hosts(own: int, states: tuple[AccessState, AccessState, AccessState]) -> PortGroups:
    """Hosts 1, 2, 3, each one group of one port numbered as the host."""
    return PortGroups(own, tuple(TargetPortGroup(h, s, (h,), preferred=s == AO)
                                 for h, s in zip((1, 2, 3), states, strict=True)))


# ----------------------------------------------- an independent RTPG parser

SUPPORTED_BITS = {0x01: AO, 0x02: AN, 0x04: S, 0x08: U, 0x80: T}


def parse_rtpg(data: bytes, extended: bool) -> tuple[int | None, list[dict]]:
    """SPC-4 6.36: (IMPLICIT TRANSITION TIME or None, descriptors)."""
    (length,) = struct.unpack_from(">I", data)
    assert length == len(data) - 4
    pos, time = 4, None
    if extended:
        assert data[4] >> 4 & 0x7 == 1  # FORMAT TYPE 001b
        time = data[5]
        pos = 8
    groups = []
    while pos < len(data):
        b0, b1, gid, _, status, _, count = struct.unpack_from(">BBHBBBB", data, pos)
        pos += 8
        ports = tuple(struct.unpack_from(">H", data, pos + 4 * i + 2)[0] for i in range(count))
        pos += 4 * count
        groups.append({"pref": bool(b0 & 0x80), "state": AccessState(b0 & 0x0F), "id": gid,
                       "supported": {s for bit, s in SUPPORTED_BITS.items() if b1 & bit},
                       "status": status, "ports": ports})
    assert pos == len(data)
    return time, groups


# ---------------------------------------------------- the single-host default


def test_the_single_host_default_answers_as_it_always_did(lu):
    assert lu.access.groups == PortGroups.single() and lu.accessible
    d = good(lu.execute(NEXUS, rtpg(), None))
    assert d == struct.pack(">IBBHxBBB", 12, 0x80, 0x01, 1, 0, 0, 1) + struct.pack(">xxH", 1)
    ext = good(lu.execute(NEXUS, rtpg(1), None))
    assert ext == struct.pack(">IBBxx", 16, 0x10, 0) + d[4:]
    assert good(lu.execute(NEXUS, inquiry(), None))[5] & 0x30 == 0x10  # TPGS: implicit only
    vpd83 = good(lu.execute(NEXUS, inquiry(1, 0x83), None))
    assert b"\x51\x94\x00\x04\x00\x00\x00\x01" in vpd83  # relative target port 1
    assert b"\x51\x95\x00\x04\x00\x00\x00\x01" in vpd83  # target port group 1


def test_vpd_83_names_the_own_group_and_port(tmp_path):
    lu = unit(make_image(tmp_path / "d.img"), group=2, port=2)
    lu.set_port_groups(three_hosts(2, (AO, S, S)))
    ready(lu, NEXUS)
    vpd83 = good(lu.execute(NEXUS, inquiry(1, 0x83), None))
    assert b"\x51\x94\x00\x04\x00\x00\x00\x02" in vpd83
    assert b"\x51\x95\x00\x04\x00\x00\x00\x02" in vpd83
    lu.close()


# ------------------------------------------------ RTPG for 1, 2 and 3 groups


@pytest.fixture(scope="module")
def shared_image(tmp_path_factory) -> str:
    return make_image(tmp_path_factory.mktemp("alua") / "d.img")


groups_st = st.lists(
    st.tuples(st.sampled_from(sorted(AccessState)), st.booleans(),
              st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=4, unique=True)),
    min_size=1, max_size=3,
).filter(lambda gs: len({p for g in gs for p in g[2]}) == sum(len(g[2]) for g in gs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gs=groups_st, ids=st.lists(st.integers(0, 0xFFFF), min_size=3, max_size=3, unique=True),
       own=st.integers(0, 2), time=st.integers(0, 255), alloc=st.integers(0, 200))
def test_rtpg_reports_every_group_in_both_formats(shared_image, gs, ids, own, time, alloc):
    own %= len(gs)
    pg = PortGroups(ids[own], tuple(TargetPortGroup(ids[i], state, tuple(ports), pref)
                                    for i, (state, pref, ports) in enumerate(gs)),
                    transition_time=time)
    lu = unit(shared_image, group=ids[own], port=gs[own][2][0])
    lu.set_port_groups(pg)
    ready(lu, NEXUS)
    for fmt in (0, 1):
        data = good(lu.execute(NEXUS, rtpg(fmt), None))
        got_time, got = parse_rtpg(data, extended=bool(fmt))
        assert got_time == (time if fmt else None)
        assert [(g["id"], g["state"], g["pref"], g["ports"]) for g in got] == [
            (g.id, g.state, g.preferred, g.relative_ports) for g in pg.groups]
        assert all(g["supported"] == {AO, AN, S, U, T} and g["status"] == 0 for g in got)
        # a small allocation length cuts the same data
        assert good(lu.execute(NEXUS, rtpg(fmt, alloc), None)) == data[:alloc]
    lu.backend.close()


def test_rtpg_of_three_hosts_byte_for_byte(tmp_path):
    lu = unit(make_image(tmp_path / "d.img"), group=3, port=3)
    lu.set_port_groups(three_hosts(3, (AO, AN, S)))
    ready(lu, NEXUS)
    desc = b"".join(struct.pack(">BBHxBBBxxH", pref | state, 0x8F, h, 0, 0, 1, h)
                    for h, state, pref in ((1, 0, 0x80), (2, 1, 0), (3, 2, 0)))
    assert good(lu.execute(NEXUS, rtpg(0), None)) == struct.pack(">I", 36) + desc
    assert good(lu.execute(NEXUS, rtpg(1), None)) == struct.pack(">IBBxx", 40, 0x10, 0) + desc
    check(lu.execute(NEXUS, rtpg(2), None), 0x5, 0x24)  # no such format
    lu.close()


# ------------------------------------------------------- the gate per state

# What each state lets through, as SPC-4 lists it (by CDB), and what it
# refuses: the asymmetric access states' lists, written from the standard.
ALLOWED_IN = {
    "INQUIRY": (inquiry(), {S, U, T}),
    "REPORT LUNS": (report_luns(), {S, U, T}),
    "REPORT TARGET PORT GROUPS": (rtpg(), {S, U, T}),
    "REQUEST SENSE": (request_sense(), {S, U, T}),
    "MODE SENSE(6)": (mode_sense6(0x3F), {S}),
    "PERSISTENT RESERVE IN": (pr_in_read_keys(), {S}),
    "READ CAPACITY(16)": (read_capacity16(), {S}),
    "REPORT SUPPORTED OPERATION CODES": (rsoc(), {S}),
    "TEST UNIT READY": (tur(), set()),
    "READ(10)": (rw10(0x28, 0, 1), set()),
    "READ(16)": (rw16(0x88, 0, 1), set()),
    "WRITE(10)": (rw10(0x2A, 0, 1), set()),
    "WRITE(16)": (rw16(0x8A, 0, 1), set()),
    "SYNCHRONIZE CACHE(10)": (sync_cache10(), set()),
}
REFUSED_WITH = {S: 0x0B, U: 0x0C, T: 0x0A}


@pytest.mark.parametrize("state", [S, U, T], ids=["standby", "unavailable", "transitioning"])
@pytest.mark.parametrize("name", sorted(ALLOWED_IN))
def test_an_inaccessible_state_lets_through_only_what_spc4_lists(tmp_path, state, name):
    lu = unit(make_image(tmp_path / "d.img"))
    lu.set_port_groups(three_hosts(1, (state, AO, AN)))
    assert not lu.accessible
    ready(lu, NEXUS)
    cdb, allowed = ALLOWED_IN[name]
    data = bytes(BS) if cdb[0] in (0x2A, 0x8A) else None
    r = lu.execute(NEXUS, cdb, data)
    if state in allowed:
        good(r)
    else:
        check(r, NOT_READY, 0x04, REFUSED_WITH[state])
    lu.close()


def test_standby_refuses_reads_and_writes_and_leaves_the_medium_alone(tmp_path):
    path = make_image(tmp_path / "d.img", fill=b"\x5a" * BS)
    lu = unit(path)
    lu.set_port_groups(three_hosts(1, (S, AO, S)))
    ready(lu, NEXUS)
    check(lu.execute(NEXUS, rw10(0x2A, 0, 1), b"\xff" * BS), NOT_READY, 0x04, 0x0B)
    check(lu.execute(NEXUS, rw10(0x28, 0, 1), None), NOT_READY, 0x04, 0x0B)
    # the merged-write path (together.py) does not take it either
    assert plain_write(lu, NEXUS, rw10(0x2A, 0, 1), b"\xff" * BS) is None
    lu.close()
    with open(path, "rb") as f:
        assert f.read(BS) == b"\x5a" * BS


@pytest.mark.parametrize("state", [AO, AN])
def test_active_states_run_everything(tmp_path, state):
    lu = unit(make_image(tmp_path / "d.img"))
    lu.set_port_groups(three_hosts(1, (state, S, S)))
    assert lu.accessible
    ready(lu, NEXUS)
    lu.execute(NEXUS, tur(), None)  # the state change's unit attention
    good(lu.execute(NEXUS, rw10(0x2A, 0, 1), b"\x11" * BS))
    assert good(lu.execute(NEXUS, rw10(0x28, 0, 1), None)) == b"\x11" * BS
    good(lu.execute(NEXUS, tur(), None))
    assert plain_write(lu, NEXUS, rw10(0x2A, 0, 1), b"\x22" * BS) is not None
    lu.close()


# --------------------------------------- ASYMMETRIC ACCESS STATE CHANGED


def changed(r) -> bool:
    return r.status == 0x02 and r.sense[2] & 0x0F == UNIT_ATTENTION and r.sense[12:14] == b"\x2a\x06"


def test_a_state_change_raises_the_unit_attention_once_per_nexus(tmp_path):
    lu = unit(make_image(tmp_path / "d.img"))
    lu.set_port_groups(three_hosts(1, (AO, S, S)))  # before any nexus: only POWER ON
    ready(lu, NEXUS)
    ready(lu, OTHER)
    assert lu.set_port_groups(three_hosts(1, (S, AO, S)))
    for nexus in (NEXUS, OTHER):
        assert changed(lu.execute(nexus, tur(), None))
        check(lu.execute(nexus, tur(), None), NOT_READY, 0x04, 0x0B)  # once, then the state
    assert not lu.set_port_groups(three_hosts(1, (S, AO, S)))  # the same again: nothing to tell
    check(lu.execute(NEXUS, tur(), None), NOT_READY, 0x04, 0x0B)
    # another host's group changing is news too
    lu.set_port_groups(three_hosts(1, (S, S, AO)))
    assert changed(lu.execute(OTHER, tur(), None))
    # INQUIRY passes a pending unit attention by; REQUEST SENSE reports it
    assert good(lu.execute(NEXUS, inquiry(), None))
    sense = good(lu.execute(NEXUS, request_sense(), None))
    assert sense[2] & 0x0F == UNIT_ATTENTION and sense[12:14] == b"\x2a\x06"
    lu.close()


def test_the_unit_attention_comes_before_the_refusal(tmp_path):
    lu = unit(make_image(tmp_path / "d.img"))
    ready(lu, NEXUS)
    lu.set_port_groups(three_hosts(1, (U, AO, S)))
    assert changed(lu.execute(NEXUS, rw10(0x28, 0, 1), None))
    check(lu.execute(NEXUS, rw10(0x28, 0, 1), None), NOT_READY, 0x04, 0x0C)
    lu.close()


# --------------------------------------------------------- what is refused


def test_port_groups_must_name_the_units_own_group_and_port(tmp_path):
    lu = unit(make_image(tmp_path / "d.img"), group=2, port=2)
    with pytest.raises(ValueError, match="port group"):
        lu.set_port_groups(three_hosts(1, (AO, S, S)))
    with pytest.raises(ValueError, match="relative port"):
        lu.set_port_groups(PortGroups(2, (TargetPortGroup(2, AO, (7,)),)))
    assert lu.access.groups == PortGroups.single(2, 2)
    lu.close()


@pytest.mark.parametrize("make", [
    lambda: PortGroups(1, (TargetPortGroup(1, AO, (1,)), TargetPortGroup(1, S, (2,)))),
    lambda: PortGroups(4, (TargetPortGroup(1, AO, (1,)),)),
    lambda: PortGroups(1, (TargetPortGroup(1, AO, (1,)), TargetPortGroup(2, S, (1,)))),
    lambda: PortGroups(1, (TargetPortGroup(1, S, (1,)),), frozenset({AO})),
    lambda: PortGroups(1, (TargetPortGroup(1, AO, (1,)),), transition_time=256),
    lambda: TargetPortGroup(1, AO, ()),
    lambda: TargetPortGroup(1, AO, (0,)),
    lambda: TargetPortGroup(0x10000, AO, (1,)),
    lambda: TargetPortGroup(1, 7, (1,)),
], ids=["duplicate group", "own missing", "port twice", "unsupported state", "time",
        "no port", "port 0", "group id", "state 7"])
def test_inconsistent_port_groups_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_an_extended_copy_into_a_standby_unit_does_not_reach_it(tmp_path):
    src = unit(make_image(tmp_path / "a.img", fill=b"\x77" * BS))
    dst = LogicalUnit(RawImage(make_image(tmp_path / "b.img")),
                      LunIdentity(serial="SER0002", naa=NAA2, target_name=TARGET))
    dst.set_port_groups(three_hosts(1, (S, AO, S)))
    t = ScsiTarget(TARGET, {0: src, 1: dst})
    for lun in (0, 1):
        t.execute(NEXUS, lun, tur(), None)
    p = plist([cscd(NAA), cscd(NAA2)], [b2b(0, 1, 1, 0, 0)])
    r = t.execute(NEXUS, 0, xcopy_cdb(len(p)), p)
    assert r.status == 0x02 and r.sense[2] & 0x0F == 0xA  # COPY ABORTED
    assert r.sense[12:14] == b"\x0d\x02"  # COPY TARGET DEVICE NOT REACHABLE
    t.close()
    with open(tmp_path / "b.img", "rb") as f:
        assert f.read(BS) == bytes(BS)
