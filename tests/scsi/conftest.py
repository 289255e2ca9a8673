# Fixtures for the SCSI tests: a logical unit on a temporary raw image, its
# UNIT ATTENTION for the test nexus already consumed.
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from scsi_cdb import NEXUS  # noqa: E402

from netstore.scsi import LogicalUnit, LunIdentity, RawFileBackend, ScsiTarget  # noqa: E402

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


@pytest.fixture
def image(tmp_path) -> str:
    return make_image(tmp_path / "disk.img")


@pytest.fixture
def lu(image):
    unit = LogicalUnit(RawFileBackend(image), identity())
    ready(unit, NEXUS)
    yield unit
    unit.close()


@pytest.fixture
def fresh_lu(image):
    """A logical unit no nexus has talked to yet."""
    unit = LogicalUnit(RawFileBackend(image), identity())
    yield unit
    unit.close()


@pytest.fixture
def ro_lu(image):
    unit = LogicalUnit(RawFileBackend(image, read_only=True), identity())
    ready(unit, NEXUS)
    yield unit
    unit.close()


@pytest.fixture
def target(image, tmp_path):
    lu0 = LogicalUnit(RawFileBackend(image), identity())
    lu3 = LogicalUnit(RawFileBackend(make_image(tmp_path / "b.img", 64)), identity())
    t = ScsiTarget(TARGET, {0: lu0, 3: lu3})
    yield t
    t.close()


def ready(unit, nexus: str) -> None:
    """Consume the power-on unit attention for `nexus`."""
    r = unit.execute(nexus, bytes(6), None)
    assert r.status == 0x02 and r.sense[12] == 0x29
