# The command tables (netstore.scsi.commands): one row per command carries
# its facts, and each device type's set is what its units dispatch and report.
from __future__ import annotations

from netstore.scsi.commands import (
    CDDVD,
    COMMANDS,
    DISK,
    FAST_PATH_OPCODES,
    PR_ALLOWED,
    PR_CONFLICT,
    PR_READ,
    reservation_class,
    spc2_class,
)


def test_fast_path_is_plain_read_and_write_10_and_16():
    assert FAST_PATH_OPCODES == frozenset({0x28, 0x88, 0x2A, 0x8A})


def test_rows_are_unique_per_opcode_and_service_action():
    keys = [(c.opcode, c.service_action) for c in COMMANDS]
    assert len(keys) == len(set(keys))
    for c in COMMANDS:
        assert c.usage[0] == c.opcode and c.handler


def test_device_sets():
    disk = {c.name for c in DISK.present(thin=False)}
    thin = {c.name for c in DISK.present(thin=True)}
    cd = {c.name for c in CDDVD.present(thin=False)}
    assert thin - disk == {"UNMAP", "SANITIZE BLOCK ERASE"}
    assert "READ TOC/PMA/ATIP" in cd and "READ TOC/PMA/ATIP" not in thin
    assert "EXTENDED COPY(LID1)" in disk and "EXTENDED COPY(LID1)" not in cd


def test_reservation_classes():
    assert reservation_class(bytes((0x9E, 0x10)) + bytes(14)) == PR_ALLOWED  # READ CAPACITY(16)
    assert reservation_class(bytes((0x9E, 0x12)) + bytes(14)) == PR_READ  # GET LBA STATUS
    assert reservation_class(bytes((0x9E, 0x1F)) + bytes(14)) == PR_READ  # unknown SA
    assert reservation_class(bytes((0x2A,)) + bytes(9)) == PR_CONFLICT
    assert reservation_class(bytes((0xC5,)) + bytes(5)) == PR_CONFLICT  # unknown opcode
    assert reservation_class(bytes((0x4D,)) + bytes(9)) == PR_ALLOWED  # LOG SENSE
    assert spc2_class(bytes((0x12,)) + bytes(5)) == PR_ALLOWED
    assert spc2_class(bytes((0x28,)) + bytes(9)) == PR_CONFLICT


def test_names_other_packages_import():
    from netstore.scsi import luns
    from netstore.scsi.lun import encode_lun
    from netstore.scsi.sense import CHECK_CONDITION, GOOD, TASK_SET_FULL

    assert encode_lun is luns.encode_lun
    assert encode_lun(5) == bytes((0, 5, 0, 0, 0, 0, 0, 0))
    assert encode_lun(0x1234)[:2] == bytes((0x52, 0x34))
    assert (GOOD, CHECK_CONDITION, TASK_SET_FULL) == (0x00, 0x02, 0x28)


def test_data_direction():
    by_name = {c.name: c for c in COMMANDS}
    assert by_name["READ(10)"].direction == "in"
    assert by_name["WRITE(16)"].direction == "out"
    assert by_name["TEST UNIT READY"].direction == "none"
    assert by_name["PERSISTENT RESERVE IN READ KEYS"].direction == "in"
