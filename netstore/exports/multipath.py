# Multipath across the hosts of a shared registry (ALUA, SPC-4 5.15): every
# host exports each running VM's target, and each host is one target port
# group (its number in the registry's hosts table) of one relative port of
# the same number.  The rule of states lives here: the host that runs the VM
# owns the writes of its disks and is active/optimized (and preferred); the
# others are active/non-optimized for a disk several writers may share
# (shareable, readonly) and standby for one only the owner writes (normal,
# writethrough: semantics.md's "one running VM").  A machine's own layer
# (immutable, multiattach) lives on the host that runs it, so only that host
# exports it.  When the owner changes, each unit is opened afresh on its
# image (a standby host's cached image metadata may be stale), and the
# nexuses of the old one are told ASYMMETRIC ACCESS STATE CHANGED.
"""Target port groups and access states of VM units across hosts."""

from __future__ import annotations

from dataclasses import dataclass

from netstore.disk.media import LAYERED_TYPES
from netstore.scsi.alua import AccessState, PortGroups, TargetPortGroup
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.sense import ASYMMETRIC_ACCESS_STATE_CHANGED

# Disk types whose units several hosts may write at once.
SHARED_WRITE_TYPES = ("shareable", "readonly")


@dataclass(frozen=True, slots=True)
class HostGroup:
    """A host as multipath sees it: its name, port group number and whether it is up."""

    name: str
    group: int
    up: bool
    vteps: tuple[tuple[str, str], ...] = ()  # (switch, "ip:port"): exports/vteps.py


def port_groups(hosts: tuple[HostGroup, ...], me: str, owner: str | None,
                disk_type: str, *, isolated: bool = False) -> PortGroups | None:
    """The port groups of a unit of `disk_type` that `owner` runs, as host
    `me` exports it; None when `me` is not a host of the registry.
    `isolated`: `me` cannot reach the registry and fenced itself: its own
    group is unavailable (an initiator takes another path)."""
    mine = next((h for h in hosts if h.name == me), None)
    if mine is None:
        return None
    owner = owner or me
    groups = []
    for h in sorted(hosts, key=lambda h: h.group):
        if not h.up and h.name not in (me, owner):
            continue
        if h.name == me and isolated:
            state = AccessState.UNAVAILABLE
        elif h.name == owner:
            state = AccessState.ACTIVE_OPTIMIZED
        elif disk_type in SHARED_WRITE_TYPES:
            state = AccessState.ACTIVE_NON_OPTIMIZED
        else:
            state = AccessState.STANDBY
        groups.append(TargetPortGroup(h.group, state, (h.group,), h.name == owner))
    return PortGroups(mine.group, tuple(groups))


def exported_here(disk_type: str, me: str, owner: str | None) -> bool:
    """Whether host `me` exports a disk of `disk_type` of a VM `owner` runs."""
    return owner in (None, me) or disk_type not in LAYERED_TYPES


def take_over(old: LogicalUnit, new: LogicalUnit) -> None:
    """`new` replaces `old` for the same LUN: each nexus `old` knew is told
    ASYMMETRIC ACCESS STATE CHANGED (SPC-4: after an implicit transition,
    every I_T nexus), after the reset a unit opened afresh reports first."""
    new.establish_unit_attention(ASYMMETRIC_ACCESS_STATE_CHANGED, nexuses=old.known_nexuses)


__all__ = ["HostGroup", "port_groups", "exported_here", "take_over", "SHARED_WRITE_TYPES"]
