# ALUA through the iSCSI target core (the same Connection, fast path and
# task sets the daemon runs), driven by the in-memory initiator of
# tests/iscsi: a batch of plain READs and WRITEs to a standby unit is
# answered by the fast path with the unit attention, then 02/04/0B, and no
# byte reaches the image; REPORT TARGET PORT GROUPS and INQUIRY answer; once
# the group is active/optimized again the same batch is written.  Over TCP,
# libiscsi's iscsi-inq and iscsi-readcapacity16 (there is no RTPG test in
# iscsi-test-cu) work on an active/non-optimized unit, and a standby unit
# fails libiscsi's login-time TEST UNIT READY with 02/04/0B.
"""Tests for ALUA over iSCSI: the fast path meets the access state gate."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
import trio

from netstore.iscsi import pdu as P
from netstore.iscsi.connection import Connection
from netstore.scsi.alua import AccessState, PortGroups, TargetPortGroup
from tests.iscsi.initiator import TARGET, Initiator, bhs, make_group, read10, write10

BLOCK = 512
AO, S = AccessState.ACTIVE_OPTIMIZED, AccessState.STANDBY


def hosts(own_state: AccessState, other_state: AccessState) -> PortGroups:
    """This host (group 1, port 1, as make_group's units name themselves) and host 2."""
    return PortGroups(1, (TargetPortGroup(1, own_state, (1,), own_state == AO),
                          TargetPortGroup(2, other_state, (2,), other_state == AO)))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(1 << 20))
    return str(path)


@pytest.fixture
def general_path_calls(monkeypatch):
    """ITTs of the SCSI commands the general dispatch saw (not the fast path)."""
    seen: list[int] = []
    dispatch = Connection._dispatch

    def spy(self, pdu):
        if pdu.opcode == P.OP_SCSI_CMD:
            seen.append(pdu.u32(16))
        return dispatch(self, pdu)

    monkeypatch.setattr(Connection, "_dispatch", spy)
    return seen


def batch(ini: Initiator, cmds: list[tuple[bytes, int, bytes | None]]) -> bytes:
    """One receive holding SCSI Command PDUs (a read length or write data each)."""
    raw = []
    for cdb, read, data in cmds:
        flags = 0x81 | (0x40 if read else 0) | (0x20 if data else 0)
        b = bhs(P.OP_SCSI_CMD, flags, itt=ini.next_itt(), f20=read or len(data or b""),
                f24=ini.cmdsn)
        b[32:32 + len(cdb)] = cdb
        ini.cmdsn += 1
        raw.append(ini.frame(b, data or b""))
    return b"".join(raw)


def sense_of(r) -> tuple[int, int, int]:
    """(key, ASC, ASCQ) of a SCSI Response carrying CHECK CONDITION."""
    assert r.opcode == P.OP_SCSI_RSP and r.bhs[3] == 0x02, r
    (n,) = struct.unpack_from(">H", r.data)
    s = r.data[2:2 + n]
    return s[2] & 0x0F, s[12], s[13]


def test_a_standby_unit_refuses_the_fast_path_and_answers_rtpg(image, general_path_calls):
    g = make_group(image)
    lu = g.exported[TARGET].scsi.unit(0)
    ini = Initiator(g)
    ini.login()
    ini.scsi(bytes(6))  # the power-on unit attention
    with open(image, "rb") as f:
        before = f.read()
    lu.set_port_groups(hosts(S, AO))
    general_path_calls.clear()
    data = [os.urandom(4096) for _ in range(4)]
    cmds = [(write10(8 * i, 8), 0, d) for i, d in enumerate(data)]
    cmds += [(read10(0, 8), 4096, None), (read10(8, 8), 4096, None)]
    replies = ini.send(batch(ini, cmds))
    assert general_path_calls == []  # the fast path took every one of them
    assert [sense_of(r) for r in replies] == [(0x6, 0x2A, 0x06)] + [(0x2, 0x04, 0x0B)] * 5
    with open(image, "rb") as f:
        assert f.read() == before
    # REPORT TARGET PORT GROUPS: both hosts, host 2 preferred and active/optimized
    cdb = struct.pack(">BB4xIBB", 0xA3, 0x0A, 1024, 0, 0)
    _, (r,) = ini.scsi(cdb, read=1024)
    assert r.opcode == P.OP_DATA_IN
    assert r.data == struct.pack(">I", 24) + b"".join(
        struct.pack(">BBHxBBBxxH", b0, 0x8F, h, 0, 0, 1, h) for h, b0 in ((1, 0x02), (2, 0x80)))
    # INQUIRY answers, TEST UNIT READY says standby
    _, (r,) = ini.scsi(bytes((0x12, 0, 0, 0, 96, 0)), read=96)
    assert r.opcode == P.OP_DATA_IN and r.data[5] & 0x30 == 0x10
    _, (r,) = ini.scsi(bytes(6))
    assert sense_of(r) == (0x2, 0x04, 0x0B)
    # active/optimized again: told once, then the same batch is written
    lu.set_port_groups(hosts(AO, S))
    _, (r,) = ini.scsi(bytes(6))
    assert sense_of(r) == (0x6, 0x2A, 0x06)
    replies = ini.send(batch(ini, cmds[:4]))
    assert [(r.opcode, r.bhs[3]) for r in replies] == [(P.OP_SCSI_RSP, 0)] * 4
    with open(image, "rb") as f:
        assert f.read(4 * 4096) == b"".join(data)
    lu.close()


# ------------------------------------- over TCP, with libiscsi's own tools


def _tool(*args: str) -> list[str]:
    return ["timeout", "20", *args]


@pytest.mark.peers
@pytest.mark.skipif(not all(shutil.which(t) for t in ("iscsi-inq", "iscsi-readcapacity16")),
                    reason="libiscsi's iscsi-inq / iscsi-readcapacity16 are not installed")
async def test_libiscsi_over_tcp_meets_each_state(image):
    from tests.iscsi.client import IQN
    from tests.iscsi.test_server import config, start

    async def run(*args: str) -> tuple[int, str]:
        p = await trio.run_process(["timeout", "20", *args], capture_stdout=True,
                                   capture_stderr=True, check=False)
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")

    async with trio.open_nursery() as n:
        svc, port = await start(n, config(image))
        lu = svc.group.exported[IQN].scsi.unit(0)
        url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
        # active/non-optimized: everything runs; VPD 83h names group 1, port 1
        lu.set_port_groups(hosts(AccessState.ACTIVE_NON_OPTIMIZED, AO))
        rc, out = await run("iscsi-inq", "-e", "1", "-c", "131", url)
        assert rc == 0, out
        assert "(5) TARGET_PORT_GROUP" in out and "(4) RELATIVE_TARGET_PORT" in out, out
        rc, out = await run("iscsi-readcapacity16", url)
        assert rc == 0, out
        # standby: libiscsi's login ends with TEST UNIT READY, which SPC-4
        # refuses in standby (multipath checkers read 02/04/0B as a standby path)
        lu.set_port_groups(hosts(S, AO))
        rc, out = await run("iscsi-inq", url)
        assert rc != 0 and "NOT READY" in out and "0x040b" in out, out
        n.cancel_scope.cancel()
