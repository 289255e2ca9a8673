# Removable media: PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT with LOEJ,
# NOT READY / MEDIUM NOT PRESENT while ejected, UA 28/00 after a load; and
# the CD/DVD unit (MMC): device type 05h, 2048-byte blocks, read-only, TOC,
# configuration, event status, disc information, mode page 2Ah.
from __future__ import annotations

import struct

import pytest

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, ScsiTarget
from netstore.scsi.mmc import OpticalUnit
from tests.scsi.scsi_cdb import NEXUS, OTHER, cdb6, check, good, inquiry, mode_sense10, rw10
from tests.scsi.units import identity, make_image, ready

EJECT = cdb6(0x1B, 0, 0, 0, 0x02)
LOAD = cdb6(0x1B, 0, 0, 0, 0x03)
TUR = bytes(6)
PREVENT = cdb6(0x1E, 0, 0, 0, 1)
ALLOW = cdb6(0x1E, 0, 0, 0, 0)


@pytest.fixture
def rlu(image):
    unit = LogicalUnit(RawImage(image), identity(), removable=True)
    ready(unit, NEXUS)
    ready(unit, OTHER)
    yield unit
    unit.close()


@pytest.fixture
def dvd(tmp_path):
    path = make_image(tmp_path / "disc.iso", blocks=512, block_size=2048, fill=b"CD001")
    unit = OpticalUnit(RawImage(path, read_only=True, block_size=2048), identity())
    ready(unit, NEXUS)
    yield unit
    unit.close()


def test_rmb_bit(rlu, lu):
    assert good(rlu.execute(NEXUS, inquiry(), None))[1] & 0x80
    assert not good(lu.execute(NEXUS, inquiry(), None))[1] & 0x80


def test_eject_load_and_no_medium(rlu):
    good(rlu.execute(NEXUS, EJECT, None))
    check(rlu.execute(NEXUS, TUR, None), 2, 0x3A)
    check(rlu.execute(NEXUS, rw10(0x28, 0, 1), None), 2, 0x3A)
    check(rlu.execute(NEXUS, rw10(0x2A, 0, 1), bytes(512)), 2, 0x3A)
    check(rlu.execute(NEXUS, struct.pack(">BB8x", 0x25, 0), None), 2, 0x3A)
    good(rlu.execute(NEXUS, inquiry(), None))  # still answers
    good(rlu.execute(NEXUS, LOAD, None))
    good(rlu.execute(NEXUS, TUR, None))  # the loader gets no UA
    check(rlu.execute(OTHER, TUR, None), 6, 0x28)
    good(rlu.execute(OTHER, TUR, None))


def test_prevention_blocks_eject_for_every_nexus(rlu):
    good(rlu.execute(NEXUS, PREVENT, None))
    check(rlu.execute(NEXUS, EJECT, None), 5, 0x53, 0x02)
    check(rlu.execute(OTHER, EJECT, None), 5, 0x53, 0x02)
    check(rlu.execute(OTHER, LOAD, None), 5, 0x53, 0x02)
    good(rlu.execute(NEXUS, TUR, None))
    good(rlu.execute(NEXUS, ALLOW, None))
    good(rlu.execute(OTHER, EJECT, None))
    good(rlu.execute(OTHER, LOAD, None))


@pytest.mark.parametrize("end", ["reset", "nexus_gone"])
def test_prevention_ends_with_reset_and_nexus_loss(rlu, end):
    good(rlu.execute(NEXUS, PREVENT, None))
    if end == "reset":
        rlu.reset(OTHER)
    else:
        rlu.nexus_gone(NEXUS)
    rlu.execute(NEXUS, TUR, None)  # consume a unit attention
    good(rlu.execute(OTHER, EJECT, None))


def test_non_removable_ignores_loej(lu):
    good(lu.execute(NEXUS, EJECT, None))
    good(lu.execute(NEXUS, TUR, None))


def test_dvd_identity_and_capacity(dvd):
    inq = good(dvd.execute(NEXUS, inquiry(), None))
    assert inq[0] == 0x05 and inq[1] & 0x80
    cap = good(dvd.execute(NEXUS, struct.pack(">BB8x", 0x25, 0), None))
    assert struct.unpack(">II", cap) == (511, 2048)
    assert good(dvd.execute(NEXUS, rw10(0x28, 0, 1), None))[:5] == b"CD001"
    check(dvd.execute(NEXUS, rw10(0x2A, 0, 1), bytes(2048)), 7, 0x27)


def test_dvd_toc_and_disc_information(dvd):
    toc = good(dvd.execute(NEXUS, struct.pack(">BBBxxxBHB", 0x43, 0, 0, 0, 100, 0), None))
    assert struct.unpack_from(">HBB", toc) == (18, 1, 1)
    assert toc[6] == 1 and toc[14] == 0xAA
    assert struct.unpack_from(">I", toc, 16)[0] == 512
    msf = good(dvd.execute(NEXUS, struct.pack(">BBBxxxBHB", 0x43, 2, 0, 0, 100, 0), None))
    assert msf[8:12] == bytes((0, 0, 2, 0))  # LBA 0 is 00:02:00
    di = good(dvd.execute(NEXUS, struct.pack(">B6xHB", 0x51, 34, 0), None))
    assert len(di) == 34 and di[2] & 0x03 == 2


def test_dvd_configuration_and_events(dvd):
    cfg = good(dvd.execute(NEXUS, struct.pack(">BBHxxxHB", 0x46, 0, 0, 512, 0), None))
    assert struct.unpack_from(">H", cfg, 6)[0] == 0x0008  # small disc: CD-ROM
    assert struct.unpack_from(">H", cfg, 8)[0] == 0x0000  # profile list first
    gesn = struct.pack(">BBxxBxxHB", 0x4A, 1, 0x10, 8, 0)
    ev = good(dvd.execute(NEXUS, gesn, None))
    assert ev[2] == 4 and ev[5] & 0x02  # media class, medium present
    good(dvd.execute(NEXUS, EJECT, None))
    ev = good(dvd.execute(NEXUS, gesn, None))
    assert ev[4] == 3 and not ev[5] & 0x02  # media removal, no medium
    cfg = good(dvd.execute(NEXUS, struct.pack(">BBHxxxHB", 0x46, 0, 0, 512, 0), None))
    assert struct.unpack_from(">H", cfg, 6)[0] == 0
    good(dvd.execute(NEXUS, LOAD, None))
    assert good(dvd.execute(NEXUS, gesn, None))[4] == 2  # new media


def test_dvd_mode_page_2a(dvd):
    d = good(dvd.execute(NEXUS, mode_sense10(0x2A, dbd=True), None))
    assert d[8] == 0x2A and d[14] & 0x08  # eject supported
    good(dvd.execute(NEXUS, PREVENT, None))
    d = good(dvd.execute(NEXUS, mode_sense10(0x2A, dbd=True), None))
    assert d[14] & 0x02  # locked


def test_disk_has_no_mmc_commands(lu):
    check(lu.execute(NEXUS, struct.pack(">BBBxxxBHB", 0x43, 0, 0, 0, 100, 0), None), 5, 0x20)


def test_dvd_in_a_target(tmp_path):
    path = make_image(tmp_path / "d.iso", blocks=16, block_size=2048)
    unit = OpticalUnit(RawImage(path, read_only=True, block_size=2048), identity())
    t = ScsiTarget("iqn.2026-11.org.netstore:t", {0: unit})
    assert t.execute(NEXUS, 0, inquiry(), None).data[0] == 5
    t.close()


def test_dvd_needs_read_only_2048(image):
    with pytest.raises(ValueError):
        OpticalUnit(RawImage(image), identity())
