# tests/scsi/units.py - what the SCSI tests build logical units from: the
# identity of the test unit, a zero-filled raw image of a given size, and
# consuming the power-on UNIT ATTENTION for a nexus. The fixtures built on it
# are in tests/scsi/conftest.py.
"""Logical units on temporary raw images for the SCSI tests."""

from __future__ import annotations

from netstore.scsi import LunIdentity

BLOCKS = 2048  # 1 MiB of 512-byte blocks
NAA = bytes.fromhex("6001405f3c2b1a09")
TARGET = "iqn.2026-11.org.netstore:vm.test"


def identity() -> LunIdentity:
    return LunIdentity(serial="SER0001", naa=NAA, target_name=TARGET)


def make_image(path, blocks: int = BLOCKS, block_size: int = 512, fill: bytes = b"") -> str:
    data = bytearray(blocks * block_size)
    if fill:
        data[: len(fill)] = fill
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def ready(unit, nexus: str) -> None:
    """Consume the power-on unit attention for `nexus`."""
    r = unit.execute(nexus, bytes(6), None)
    assert r.status == 0x02 and r.sense[12] == 0x29
