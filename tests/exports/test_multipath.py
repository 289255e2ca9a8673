# tests/exports/test_multipath.py - the rule of ALUA states across hosts: the
# VM's host active/optimized and preferred, the others active/non-optimized
# for disks several may write and standby for the others, down hosts left
# out, an isolated host unavailable; a unit opened afresh tells the old one's
# nexuses ASYMMETRIC ACCESS STATE CHANGED.
"""Port groups of VM units across hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from netstore.disk.raw import RawImage
from netstore.exports.identity import lun_identity
from netstore.exports.multipath import HostGroup, exported_here, port_groups, take_over
from netstore.scsi.alua import AccessState as S
from netstore.scsi.lun import LogicalUnit

HOSTS = (HostGroup("host1", 1, True), HostGroup("host2", 2, True), HostGroup("host3", 3, False))


def states(pg) -> list[tuple[int, S, bool]]:  # type: ignore[no-untyped-def]
    return [(g.id, g.state, g.preferred) for g in pg.groups]


@pytest.mark.parametrize(("disk", "other"), [("normal", S.STANDBY), ("writethrough", S.STANDBY),
                                             ("shareable", S.ACTIVE_NON_OPTIMIZED),
                                             ("readonly", S.ACTIVE_NON_OPTIMIZED)])
def test_owner_optimized_others_by_disk_type_down_hosts_left_out(disk: str, other: S) -> None:
    for me in ("host1", "host2"):
        pg = port_groups(HOSTS, me, "host1", disk)
        assert pg is not None and pg.own == (1 if me == "host1" else 2)
        assert states(pg) == [(1, S.ACTIVE_OPTIMIZED, True), (2, other, False)]


def test_not_a_host_isolated_and_local_layers() -> None:
    assert port_groups(HOSTS, "host9", "host1", "normal") is None
    pg = port_groups(HOSTS, "host1", "host1", "normal", isolated=True)
    assert states(pg) == [(1, S.UNAVAILABLE, True), (2, S.STANDBY, False)]
    assert not exported_here("immutable", "host2", "host1")
    assert exported_here("immutable", "host1", "host1") and exported_here("normal", "host2", "host1")


def _sense(r) -> tuple[int, int, int] | None:  # type: ignore[no-untyped-def]
    """(key, ASC, ASCQ) of a CHECK CONDITION response, None for GOOD."""
    if r.status == 0:
        return None
    return r.sense[2] & 0x0F, r.sense[12], r.sense[13]


def test_a_unit_opened_afresh_tells_the_old_ones_nexuses(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(bytes(1 << 20))
    ident = lun_identity("iqn.2026-11.org.netstore:vm.x", str(img))
    tur = bytes(6)
    seen, unseen = "iqn.2026-11.org.example:a,i,0x1", "iqn.2026-11.org.example:b,i,0x2"
    old = LogicalUnit(RawImage(str(img)), ident)
    while _sense(old.execute(seen, tur, None)) is not None:
        pass  # its power-on attention taken: the nexus is known and clear
    new = LogicalUnit(RawImage(str(img)), ident)
    take_over(old, new)
    # a fresh unit: its power-on reset first, then the change of access state
    assert _sense(new.execute(seen, tur, None)) == (6, 0x29, 0x00)
    assert _sense(new.execute(seen, tur, None)) == (6, 0x2A, 0x06)
    assert _sense(new.execute(seen, tur, None)) is None
    assert _sense(new.execute(unseen, tur, None)) == (6, 0x29, 0x00)  # nothing else for it
    assert _sense(new.execute(unseen, tur, None)) is None
    old.close()
    new.close()
