# LUN numbers on the wire: the 8-byte LUN of SAM-5 4.7 (encode_lun) and the
# REPORT LUNS parameter data of SPC-4 6.33 (report_luns_data).
"""8-byte LUN encoding and REPORT LUNS data."""
from __future__ import annotations

import struct
from collections.abc import Iterable

from .cdb import BE32
from .limits import MAX_LUN, MIN_REPORT_LUNS_ALLOCATION
from .sense import cdb_error

# SELECT REPORT values of REPORT LUNS (SPC-4 table 163).
SELECT_ALL_LUNS = 0x00
SELECT_WELL_KNOWN = 0x01
SELECT_ALL_INCLUDING_WELL_KNOWN = 0x02


def encode_lun(lun: int) -> bytes:
    """8-byte LUN (SAM-5 4.7): peripheral device addressing below 256,
    flat space addressing up to MAX_LUN."""
    if lun < 0x100:
        return struct.pack(">BB6x", 0, lun)
    if lun <= MAX_LUN:
        return struct.pack(">BB6x", 0x40 | (lun >> 8), lun & 0xFF)
    raise ValueError(f"LUN {lun} above {MAX_LUN}")


def report_luns_data(luns: Iterable[int], cdb: bytes | memoryview) -> bytes:
    """REPORT LUNS parameter data (SPC-4 6.33) for the LUN numbers `luns`.

    Raises:
        ScsiError: bad SELECT REPORT or allocation length below 16.
    """
    select = cdb[2]
    alloc = BE32.unpack_from(cdb, 6)[0]
    if select not in (SELECT_ALL_LUNS, SELECT_WELL_KNOWN, SELECT_ALL_INCLUDING_WELL_KNOWN):
        raise cdb_error(2, 7)
    if alloc < MIN_REPORT_LUNS_ALLOCATION:
        raise cdb_error(6, 7)
    # No well-known logical units exist here.
    listed = [] if select == SELECT_WELL_KNOWN else sorted(luns)
    body = b"".join(encode_lun(n) for n in listed)
    return (struct.pack(">I4x", len(body)) + body)[:alloc]
