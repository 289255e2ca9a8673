# Fixtures for the SCSI tests: a logical unit on a temporary raw image, its
# UNIT ATTENTION for the test nexus already consumed (the helpers they use are
# in tests/scsi/units.py).
from __future__ import annotations

import pytest

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, ScsiTarget
from tests.scsi.scsi_cdb import NEXUS
from tests.scsi.units import TARGET, identity, make_image, ready


@pytest.fixture
def image(tmp_path) -> str:
    return make_image(tmp_path / "disk.img")


@pytest.fixture
def lu(image):
    unit = LogicalUnit(RawImage(image), identity())
    ready(unit, NEXUS)
    yield unit
    unit.close()


@pytest.fixture
def fresh_lu(image):
    """A logical unit no nexus has talked to yet."""
    unit = LogicalUnit(RawImage(image), identity())
    yield unit
    unit.close()


@pytest.fixture
def ro_lu(image):
    unit = LogicalUnit(RawImage(image, read_only=True), identity())
    ready(unit, NEXUS)
    yield unit
    unit.close()


@pytest.fixture
def target(image, tmp_path):
    lu0 = LogicalUnit(RawImage(image), identity())
    lu3 = LogicalUnit(RawImage(make_image(tmp_path / "b.img", 64)), identity())
    t = ScsiTarget(TARGET, {0: lu0, 3: lu3})
    yield t
    t.close()
