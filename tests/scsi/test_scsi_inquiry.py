# INQUIRY: standard data and VPD pages, field by field (SPC-4 6.6, 7.8; SBC-3 6.5).
from __future__ import annotations

import struct

from tests.scsi.scsi_cdb import NEXUS, check, good, inquiry
from tests.scsi.units import NAA, TARGET


def test_standard_inquiry_fields(lu):
    d = good(lu.execute(NEXUS, inquiry(alloc=255), None))
    assert len(d) == 96
    assert d[0] == 0x00  # PQ 0, direct access block device
    assert d[1] & 0x80 == 0  # RMB: not removable
    assert d[2] == 0x06  # SPC-4
    assert d[3] & 0x0F == 2  # response data format
    assert d[3] & 0x10  # HiSup
    assert d[4] == 91  # additional length
    assert d[7] & 0x02  # CmdQue
    assert d[8:16] == b"NETSTORE"
    assert d[16:32] == b"VDISK".ljust(16)
    assert d[32:36] == b"0001"
    descriptors = struct.unpack_from(">8H", d, 58)
    assert descriptors[:4] == (0x00A0, 0x0960, 0x0460, 0x04C0)
    assert d[74:96] == bytes(22)


def test_inquiry_allocation_length_truncates(lu):
    assert len(good(lu.execute(NEXUS, inquiry(alloc=36), None))) == 36
    assert good(lu.execute(NEXUS, inquiry(alloc=0), None)) == b""
    assert len(good(lu.execute(NEXUS, inquiry(alloc=5), None))) == 5


def test_page_code_without_evpd_is_invalid(lu):
    s = check(lu.execute(NEXUS, inquiry(0, 0x80), None), 5, 0x24)
    assert s.sksv and s.cd and s.field == 2


def test_unknown_vpd_page(lu):
    s = check(lu.execute(NEXUS, inquiry(1, 0x42), None), 5, 0x24)
    assert s.field == 2


def test_cmddt_refused(lu):
    s = check(lu.execute(NEXUS, inquiry(2, 0), None), 5, 0x24)
    assert (s.field, s.bpv, s.bit) == (1, True, 1)


def vpd(lu, page: int) -> bytes:
    d = good(lu.execute(NEXUS, inquiry(1, page, 0xFFFF), None))
    assert d[0] == 0x00 and d[1] == page
    assert struct.unpack_from(">H", d, 2)[0] == len(d) - 4
    return d


def test_vpd_00_lists_pages(lu):
    d = vpd(lu, 0x00)
    assert list(d[4:]) == [0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2]
    for page in d[4:]:
        vpd(lu, page)


def test_vpd_80_serial(lu):
    assert vpd(lu, 0x80)[4:] == b"SER0001"


def parse_designators(d: bytes) -> list[tuple[int, int, int, int, int, bytes]]:
    out, pos = [], 4
    while pos < len(d):
        length = d[pos + 3]
        out.append((d[pos] >> 4, d[pos] & 0x0F, d[pos + 1] >> 7, (d[pos + 1] >> 4) & 3,
                    d[pos + 1] & 0x0F, d[pos + 4:pos + 4 + length]))
        pos += 4 + length
    assert pos == len(d)
    return out


def test_vpd_83_designators(lu):
    ds = parse_designators(vpd(lu, 0x83))
    by_type = {(assoc, dtype): (proto, cs, piv, val) for proto, cs, piv, assoc, dtype, val in ds}
    # NAA, binary, logical unit association
    assert by_type[(0, 3)] == (0, 1, 0, NAA)
    assert NAA[0] >> 4 in (5, 6)
    # T10 vendor ID, ASCII: vendor padded to 8 then serial
    assert by_type[(0, 1)][1] == 2
    assert by_type[(0, 1)][3] == b"NETSTORESER0001"
    # relative target port 1, iSCSI, PIV
    assert by_type[(1, 4)] == (5, 1, 1, b"\x00\x00\x00\x01")
    # target port group 1
    assert by_type[(1, 5)] == (5, 1, 1, b"\x00\x00\x00\x01")
    # SCSI name string: UTF-8, null terminated, padded to 4
    proto, cs, piv, name = by_type[(1, 8)]
    assert (proto, cs, piv) == (5, 3, 1)
    assert len(name) % 4 == 0
    assert name.rstrip(b"\0") == f"{TARGET},t,0x0001".encode()
    assert name[len(TARGET) + 9] == 0


def test_vpd_86_extended(lu):
    d = vpd(lu, 0x86)
    assert len(d) == 64
    assert d[5] & 0x01  # SIMPSUP
    assert d[6] & 0x01  # V_SUP: volatile cache
    assert d[7] & 0x01  # LUICLR


def test_vpd_b0_block_limits(lu):
    d = vpd(lu, 0xB0)
    assert len(d) == 64
    gran, max_len, opt_len = struct.unpack_from(">HII", d, 6)
    assert gran == 8  # 4 KiB of 512-byte blocks
    assert max_len == 8 * 1024 * 1024 // 512
    assert opt_len <= max_len
    assert d[5] == 255  # MAXIMUM COMPARE AND WRITE LENGTH
    assert struct.unpack_from(">II", d, 20) == (0, 0)  # no UNMAP


def test_vpd_b1_non_rotating(lu):
    d = vpd(lu, 0xB1)
    assert len(d) == 64
    assert struct.unpack_from(">H", d, 4)[0] == 1


def test_vpd_b2_no_provisioning(lu):
    d = vpd(lu, 0xB2)
    assert d[4:] == bytes(4)


def test_inquiry_not_blocked_by_unit_attention(fresh_lu):
    good(fresh_lu.execute(NEXUS, inquiry(), None))
    # the UA is still there for the next command
    check(fresh_lu.execute(NEXUS, bytes(6), None), 6, 0x29, 0x00)
    good(fresh_lu.execute(NEXUS, bytes(6), None))
