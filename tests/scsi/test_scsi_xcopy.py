# EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: block-to-block copies
# within a logical unit and between two logical units of one target, the
# parameter list checks, held copy status and reservations of the copy's
# destination. Parameter lists are built here from SPC-4 6.4.
from __future__ import annotations

import struct

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, LunIdentity, ScsiTarget
from tests.scsi.scsi_cdb import NEXUS, OTHER, decode_sense, rw16
from tests.scsi.units import identity, make_image, ready

NAA2 = bytes.fromhex("6001405f3c2b1a0a")


def xcopy_cdb(plen: int) -> bytes:
    return struct.pack(">BB8xIBB", 0x83, 0x00, plen, 0, 0)


def rcr_cdb(sa: int, list_id: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BBB7xIBB", 0x84, sa, list_id, alloc, 0, 0)


def cscd(naa: bytes, block_size: int = 512) -> bytes:
    d = bytearray(32)
    d[0] = 0xE4
    d[4], d[5], d[7] = 0x01, 0x03, len(naa)  # binary, LU association, NAA
    d[8:8 + len(naa)] = naa
    d[29:32] = block_size.to_bytes(3, "big")
    return bytes(d)


def b2b(src: int, dst: int, blocks: int, src_lba: int, dst_lba: int) -> bytes:
    return struct.pack(">BBHHHxxHQQ", 0x02, 0, 24, src, dst, blocks, src_lba, dst_lba)


def plist(targets: list[bytes], segments: list[bytes], list_id: int = 1, usage: int = 0) -> bytes:
    t, s = b"".join(targets), b"".join(segments)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(t), len(s), 0) + t + s


def run_copy(lu, p: bytes, nexus: str = NEXUS):
    return lu.execute(nexus, xcopy_cdb(len(p)), p)


def test_copy_within_one_unit(lu):
    lu.execute(NEXUS, rw16(0x8A, 0, 8), b"A" * 4096)
    r = run_copy(lu, plist([cscd(identity().naa)], [b2b(0, 0, 8, 0, 100)]))
    assert r.status == 0, decode_sense(r.sense)
    assert bytes(lu.execute(NEXUS, rw16(0x88, 100, 8), None).data) == b"A" * 4096


def test_overlapping_copy_moves_each_block_once(lu):
    data = b"".join(bytes([i]) * 512 for i in range(16))
    lu.execute(NEXUS, rw16(0x8A, 0, 16), data)
    assert run_copy(lu, plist([cscd(identity().naa)], [b2b(0, 0, 16, 0, 4)])).status == 0
    assert bytes(lu.execute(NEXUS, rw16(0x88, 4, 16), None).data) == data


def test_copy_between_units_of_a_target(tmp_path):
    a = LogicalUnit(RawImage(make_image(tmp_path / "a.img")), identity())
    b = LogicalUnit(RawImage(make_image(tmp_path / "b.img")),
                    LunIdentity(serial="SER0002", naa=NAA2, target_name="t"))
    target = ScsiTarget("t", {0: a, 1: b})
    for lun in (0, 1):
        target.execute(NEXUS, lun, bytes(6), None)
    target.execute(NEXUS, 0, rw16(0x8A, 10, 4), b"Z" * 2048)
    p = plist([cscd(identity().naa), cscd(NAA2)], [b2b(0, 1, 4, 10, 20)])
    r = target.execute(NEXUS, 0, xcopy_cdb(len(p)), p)
    assert r.status == 0
    assert bytes(target.execute(NEXUS, 1, rw16(0x88, 20, 4), None).data) == b"Z" * 2048
    # A unit of another target is not reachable.
    p = plist([cscd(identity().naa), cscd(bytes(8))], [b2b(0, 1, 4, 10, 20)])
    r = target.execute(NEXUS, 0, xcopy_cdb(len(p)), p)
    s = decode_sense(r.sense)
    assert (s.key, s.asc, s.ascq) == (0x0A, 0x08, 0x04)
    target.close()


def test_parameter_list_checks(lu):
    me = cscd(identity().naa)
    good = plist([me], [b2b(0, 0, 8, 0, 100)])
    assert run_copy(lu, b"").status == 0  # length 0: nothing to do
    r = lu.execute(NEXUS, xcopy_cdb(16 + 31), good[:47])
    assert decode_sense(r.sense).asc == 0x1A  # truncated descriptor
    cases = [
        (plist([me] * 9, [b2b(0, 0, 8, 0, 100)]), (0x26, 0x06)),
        (plist([me], [b2b(0, 0, 1, 0, 100)] * 17), (0x26, 0x08)),
        (plist([bytes([0xE0]) + me[1:]], [b2b(0, 0, 8, 0, 100)]), (0x26, 0x07)),
        (plist([me], [struct.pack(">BBH16x", 0x03, 0, 16)]), (0x26, 0x09)),
    ]
    for p, (asc, ascq) in cases:
        s = decode_sense(run_copy(lu, p).sense)
        assert (s.key, s.asc, s.ascq) == (0x05, asc, ascq)
    # Beyond the end of the destination, and a destination index not given.
    for seg in (b2b(0, 0, 8, 0, lu.backend.num_blocks - 1), b2b(0, 1, 8, 0, 0)):
        s = decode_sense(run_copy(lu, plist([me], [seg])).sense)
        assert s.key == 0x0A


def test_receive_copy_results(lu):
    r = lu.execute(NEXUS, rcr_cdb(0x03), None)
    d = bytes(r.data)
    assert struct.unpack_from(">HHI", d, 8) == (8, 16, 1024)
    assert list(d[44:44 + d[43]]) == [0x02, 0xE4]
    # Nothing held for list 1 yet.
    assert decode_sense(lu.execute(NEXUS, rcr_cdb(0x00, 1), None).sense).asc == 0x24
    p = plist([cscd(identity().naa)], [b2b(0, 0, 8, 0, 100)], list_id=1, usage=0)
    assert run_copy(lu, p).status == 0
    d = bytes(lu.execute(NEXUS, rcr_cdb(0x00, 1), None).data)
    assert d[4] & 0x7F == 0x01 and struct.unpack_from(">H", d, 5)[0] == 1
    assert struct.unpack_from(">I", d, 8)[0] == 8 * 512
    # Delivered once; another nexus never sees it.
    assert run_copy(lu, p).status == 0
    assert lu.execute(OTHER, rcr_cdb(0x00, 1), None).status == 0x02
    # LIST ID USAGE 10b: not held.
    lu.nexus_gone(NEXUS)
    ready(lu, NEXUS)
    assert run_copy(lu, plist([cscd(identity().naa)], [b2b(0, 0, 8, 0, 100)], 2, 2)).status == 0
    assert lu.execute(NEXUS, rcr_cdb(0x00, 2), None).status == 0x02


def test_copy_honours_a_reservation_of_the_destination(lu):
    ready(lu, OTHER)
    prout = struct.pack(">BBBxxIBB", 0x5F, 0x00, 0, 24, 0, 0)
    lu.execute(OTHER, prout, struct.pack(">QQ8x", 0, 0xAB))  # register
    lu.execute(OTHER, struct.pack(">BBBxxIBB", 0x5F, 0x01, 0x01, 24, 0, 0),
               struct.pack(">QQ8x", 0xAB, 0))  # reserve, write exclusive
    p = plist([cscd(identity().naa)], [b2b(0, 0, 8, 0, 100)])
    assert run_copy(lu, p).status == 0x18
    assert run_copy(lu, p, OTHER).status == 0


def test_copy_stays_in_the_view_that_received_it(tmp_path):
    # Per-initiator views share LU 0 and each has its own LU 1, named by one
    # NAA (private units of one medium): A's copy must land in A's LU 1 even
    # after B's view was built.
    shared = LogicalUnit(RawImage(make_image(tmp_path / "shared.img")), identity())
    units = {
        who: LogicalUnit(RawImage(make_image(tmp_path / f"{who}.img")),
                         LunIdentity(serial="SER0002", naa=NAA2, target_name="t"))
        for who in "AB"
    }
    view_a = ScsiTarget("t", {0: shared, 1: units["A"]})
    view_b = ScsiTarget("t", {0: shared, 1: units["B"]})
    for view, nexus in ((view_a, NEXUS), (view_b, OTHER)):
        for lun in (0, 1):
            view.execute(nexus, lun, bytes(6), None)
    view_a.execute(NEXUS, 0, rw16(0x8A, 10, 4), b"Q" * 2048)
    p = plist([cscd(identity().naa), cscd(NAA2)], [b2b(0, 1, 4, 10, 20)])
    r = view_a.execute(NEXUS, 0, xcopy_cdb(len(p)), p)
    assert r.status == 0, decode_sense(r.sense)
    assert bytes(view_a.execute(NEXUS, 1, rw16(0x88, 20, 4), None).data) == b"Q" * 2048
    assert bytes(view_b.execute(OTHER, 1, rw16(0x88, 20, 4), None).data) == bytes(2048)
    # The shared unit used alone still copies within itself.
    view_b.execute(OTHER, 0, rw16(0x8A, 30, 1), b"R" * 512)
    p = plist([cscd(identity().naa), cscd(NAA2)], [b2b(0, 1, 1, 30, 40)])
    assert view_b.execute(OTHER, 0, xcopy_cdb(len(p)), p).status == 0
    assert bytes(view_b.execute(OTHER, 1, rw16(0x88, 40, 1), None).data) == b"R" * 512
    assert bytes(view_a.execute(NEXUS, 1, rw16(0x88, 40, 1), None).data) == bytes(512)
    for unit in (shared, *units.values()):
        unit.close()
