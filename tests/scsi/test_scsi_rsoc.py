# REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT
# FUNCTIONS (SPC-4 6.35, 6.36).
from __future__ import annotations

import struct

from tests.scsi.scsi_cdb import NEXUS, check, good, rsoc


def all_descriptors(d: bytes, rctd: bool):
    n = struct.unpack_from(">I", d)[0]
    assert n == len(d) - 4
    size = 20 if rctd else 8
    assert n % size == 0
    out = []
    for pos in range(4, len(d), size):
        op, sa, flags, cdb_len = struct.unpack_from(">BxHxBH", d, pos)
        assert bool(flags & 0x02) == rctd
        if rctd:
            dlen, = struct.unpack_from(">H", d, pos + 8)
            assert dlen == 0x0A
        out.append((op, sa, bool(flags & 0x01), cdb_len))
    return out


def test_all_commands(lu):
    descs = all_descriptors(good(lu.execute(NEXUS, rsoc(0), None)), False)
    ops = {(op, sa if servactv else None): n for op, sa, servactv, n in descs}
    assert ops[(0x28, None)] == 10
    assert ops[(0x88, None)] == 16
    assert ops[(0x12, None)] == 6
    assert ops[(0x9E, 0x10)] == 16
    assert ops[(0xA3, 0x0C)] == 12
    assert ops[(0xA3, 0x0D)] == 12
    assert (0xA0, None) in ops and (0x5A, None) in ops
    assert len(descs) == len(ops)
    with_timeouts = all_descriptors(good(lu.execute(NEXUS, rsoc(0, rctd=True), None)), True)
    assert [d[:3] for d in with_timeouts] == [d[:3] for d in descs]


def test_every_reported_command_is_implemented(lu):
    """Each reported opcode answers something other than INVALID OPERATION CODE."""
    for op, sa, servactv, n in all_descriptors(good(lu.execute(NEXUS, rsoc(0), None)), False):
        cdb = bytearray(max(n, 16))
        cdb[0] = op
        if servactv:
            cdb[1] = sa
        r = lu.execute(NEXUS, bytes(cdb), None)
        assert r.status in (0, 2, 4)  # GOOD, CHECK CONDITION, CONDITION MET
        if r.status == 2:
            assert (r.sense[2], r.sense[12]) != (5, 0x20), hex(op)


def test_one_command(lu):
    for op, sa, servactv, n in all_descriptors(good(lu.execute(NEXUS, rsoc(0), None)), False):
        if servactv:
            check(lu.execute(NEXUS, rsoc(1, op, sa), None), 5, 0x24)
            d = good(lu.execute(NEXUS, rsoc(2, op, sa), None))
        else:
            check(lu.execute(NEXUS, rsoc(2, op, sa), None), 5, 0x24)
            d = good(lu.execute(NEXUS, rsoc(1, op), None))
        assert d[1] & 0x07 == 0x03  # supported, standard-conformant
        cdb_len = struct.unpack_from(">H", d, 2)[0]
        assert cdb_len == n and len(d) == 4 + n
        usage = d[4:]
        assert usage[0] == op
        if servactv:
            assert usage[1] & 0x1F == sa
        d3 = good(lu.execute(NEXUS, rsoc(3, op, sa), None))
        assert d3 == d


def test_one_command_usage_bits(lu):
    d = good(lu.execute(NEXUS, rsoc(1, 0x28, rctd=True), None))
    assert d[1] & 0x80  # CTDP
    assert d[4:14] == bytes((0x28, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x00))
    assert struct.unpack_from(">H", d, 14)[0] == 0x0A
    nominal, recommended = struct.unpack_from(">II", d, 18)
    assert recommended > 0 and len(d) == 4 + 10 + 12


def test_unsupported_opcode_reported_as_such(lu):
    d = good(lu.execute(NEXUS, rsoc(1, 0x42), None))
    assert d[1] & 0x07 == 0x01 and struct.unpack_from(">H", d, 2)[0] == 0
    d = good(lu.execute(NEXUS, rsoc(2, 0x9E, 0x1F), None))
    assert d[1] & 0x07 == 0x01


def test_bad_reporting_option(lu):
    s = check(lu.execute(NEXUS, rsoc(5), None), 5, 0x24)
    assert s.field == 2


def test_allocation_length(lu):
    assert len(good(lu.execute(NEXUS, rsoc(0, alloc=10), None))) == 10


def test_report_tmfs(lu):
    cdb = struct.pack(">BBBxxxIxx", 0xA3, 0x0D, 0, 4)
    d = good(lu.execute(NEXUS, cdb, None))
    assert len(d) == 4
    assert d[0] == 0b11011010  # ATS ATSS -- CTSS LURS -- TRS --
    assert d[1] == 0  # no QUERY TASK, QUERY TASK SET, I_T NEXUS RESET
    cdb = struct.pack(">BBBxxxIxx", 0xA3, 0x0D, 0x80, 16)
    d = good(lu.execute(NEXUS, cdb, None))
    assert len(d) == 16 and d[3] == 0x0C and d[0] == 0xDA


def test_unknown_maintenance_in_service_action(lu):
    cdb = struct.pack(">BBBxxxIxx", 0xA3, 0x05, 0, 64)  # REPORT IDENTIFYING INFORMATION
    s = check(lu.execute(NEXUS, cdb, None), 5, 0x24)
    assert s.field == 1
