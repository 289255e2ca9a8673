# CDB builders and sense decoding shared by the SCSI tests, written from the
# SPC-4/SBC-3 CDB layouts independently of the code under test.
from __future__ import annotations

import struct
from typing import NamedTuple

NEXUS = "iqn.1994-05.com.example:a,0x023d00000001"
OTHER = "iqn.1994-05.com.example:b,0x023d00000002"


def cdb6(op: int, b1: int = 0, b2: int = 0, b3: int = 0, b4: int = 0, ctl: int = 0) -> bytes:
    return bytes((op, b1, b2, b3, b4, ctl))


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def rw6(op: int, lba: int, n: int) -> bytes:
    return struct.pack(">BBHBB", op, (lba >> 16) & 0x1F, lba & 0xFFFF, n, 0)


def rw10(op: int, lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, b1, lba, 0, n, 0)


def rw12(op: int, lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, b1, lba, n, 0, 0)


def rw16(op: int, lba: int, n: int, b1: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, b1, lba, n, 0, 0)


def read_capacity16(alloc: int = 32) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0)


def mode_sense6(page: int, pc: int = 0, dbd: bool = False, alloc: int = 255,
                subpage: int = 0) -> bytes:
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0))


def mode_sense10(page: int, pc: int = 0, dbd: bool = False, llbaa: bool = False,
                 alloc: int = 1024) -> bytes:
    b1 = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return struct.pack(">BBBB3xHB", 0x5A, b1, (pc << 6) | page, 0, alloc, 0)


def mode_select6(plen: int, pf: bool = True, sp: bool = False) -> bytes:
    return bytes((0x15, (0x10 if pf else 0) | (1 if sp else 0), 0, 0, plen, 0))


def mode_select10(plen: int, pf: bool = True) -> bytes:
    return struct.pack(">BB5xHB", 0x55, 0x10 if pf else 0, plen, 0)


def report_luns(select: int = 0, alloc: int = 4096) -> bytes:
    return struct.pack(">BxB3xIxx", 0xA0, select, alloc)


def rsoc(option: int = 0, op: int = 0, sa: int = 0, rctd: bool = False,
         alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIxx", 0xA3, 0x0C, (0x80 if rctd else 0) | option, op, sa, alloc)


def sync_cache10(lba: int = 0, n: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x35, 0, lba, 0, n, 0)


def sync_cache16(lba: int = 0, n: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x91, 0, lba, n, 0, 0)


class Sense(NamedTuple):
    valid: bool
    key: int
    info: int
    asc: int
    ascq: int
    sksv: bool
    cd: bool
    bpv: bool
    bit: int
    field: int


def decode_sense(s: bytes) -> Sense:
    """Decode 18-byte fixed-format sense data, checking its framing."""
    assert len(s) == 18, s
    assert s[0] & 0x7F == 0x70
    assert s[7] == 10
    return Sense(
        valid=bool(s[0] & 0x80), key=s[2] & 0x0F, info=struct.unpack_from(">I", s, 3)[0],
        asc=s[12], ascq=s[13], sksv=bool(s[15] & 0x80), cd=bool(s[15] & 0x40),
        bpv=bool(s[15] & 0x08), bit=s[15] & 0x07, field=struct.unpack_from(">H", s, 16)[0],
    )


def check(resp, key: int, asc: int, ascq: int = 0) -> Sense:
    """Assert CHECK CONDITION with the given sense and return it decoded."""
    assert resp.status == 0x02, resp
    assert resp.data == b""
    s = decode_sense(resp.sense)
    assert (s.key, s.asc, s.ascq) == (key, asc, ascq), s
    return s


def good(resp) -> bytes:
    """Assert GOOD and return the Data-In bytes."""
    assert resp.status == 0x00, (resp, decode_sense(resp.sense) if resp.sense else None)
    assert resp.sense == b""
    return bytes(resp.data)
