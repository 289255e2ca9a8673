# Properties: no CDB makes the logical unit raise or answer malformed; random
# write/read sequences read back what a model bytearray holds.
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, ScsiTarget
from netstore.scsi.commands import COMMANDS
from netstore.scsi.sense import VALID_STATUSES
from tests.scsi.scsi_cdb import NEXUS, decode_sense, rw10, rw16
from tests.scsi.units import identity

BS = 512
BLOCKS = 64
KNOWN_OPS = sorted({c.opcode for c in COMMANDS}) + [0x00, 0x42, 0x7F, 0xFF]


def fresh_target(tmp_path_factory, read_only=False):
    p = tmp_path_factory.mktemp("prop") / "d.img"
    p.write_bytes(bytes(BLOCKS * BS))
    lu = LogicalUnit(RawImage(str(p), read_only=read_only), identity())
    return ScsiTarget("t", {0: lu}), str(p)


cdbs = st.builds(
    lambda op, rest: bytes((op,)) + rest,
    st.sampled_from(KNOWN_OPS) | st.integers(0, 255),
    st.binary(min_size=0, max_size=31),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cdb=cdbs, data=st.none() | st.binary(max_size=4096), lun=st.sampled_from([0, 0, 0, 5]))
def test_random_cdbs_never_raise(tmp_path_factory, cdb, data, lun):
    target, path = fresh_target(tmp_path_factory)
    try:
        for _ in range(2):  # first answer may be the power-on UA
            r = target.execute(NEXUS, lun, cdb, data)
            assert r.status in VALID_STATUSES
            if r.status == 0x02:
                s = decode_sense(r.sense)
                assert r.data == b""
                assert s.key != 0x04, s  # never an internal failure
                assert 1 <= s.key <= 0x0E
            else:
                assert r.sense == b""
                assert isinstance(r.data, (bytes, memoryview))
    finally:
        target.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(
    st.tuples(st.booleans(), st.integers(0, BLOCKS + 2), st.integers(0, 6),
              st.integers(0, 255), st.booleans()),
    max_size=25,
))
def test_write_read_matches_model(tmp_path_factory, ops):
    target, path = fresh_target(tmp_path_factory)
    model = bytearray(BLOCKS * BS)
    target.execute(NEXUS, 0, bytes(6), None)
    try:
        for is_write, lba, n, fill, sixteen in ops:
            builder = rw16 if sixteen else rw10
            in_range = lba + n <= BLOCKS
            if is_write:
                payload = bytes([fill]) * (n * BS)
                r = target.execute(NEXUS, 0, builder(0x8A if sixteen else 0x2A, lba, n), payload)
                if in_range:
                    assert r.status == 0
                    model[lba * BS:(lba + n) * BS] = payload
                else:
                    assert r.status == 2 and r.sense[12] == 0x21
            else:
                r = target.execute(NEXUS, 0, builder(0x88 if sixteen else 0x28, lba, n), None)
                if in_range:
                    assert r.status == 0
                    assert bytes(r.data) == bytes(model[lba * BS:(lba + n) * BS])
                else:
                    assert r.status == 2 and r.sense[12] == 0x21
        with open(path, "rb") as f:
            assert f.read() == bytes(model)
    finally:
        target.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cdb=cdbs, data=st.binary(max_size=2048))
def test_readonly_never_changes_image(tmp_path_factory, cdb, data):
    target, path = fresh_target(tmp_path_factory, read_only=True)
    try:
        target.execute(NEXUS, 0, cdb, data)
        target.execute(NEXUS, 0, cdb, data)
        with open(path, "rb") as f:
            assert f.read() == bytes(BLOCKS * BS)
    finally:
        target.close()


def test_sense_information_field_layout():
    from netstore.scsi.sense import LBA_OUT_OF_RANGE, build_sense

    s = build_sense(LBA_OUT_OF_RANGE, information=0x01020304, field=(9, 3))
    assert s[0] == 0xF0 and s[2] == 5 and struct.unpack_from(">I", s, 3)[0] == 0x01020304
    assert s[7] == 10 and (s[12], s[13]) == (0x21, 0)
    assert s[15] == 0x80 | 0x40 | 0x08 | 3 and struct.unpack_from(">H", s, 16)[0] == 9
