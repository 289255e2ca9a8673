# Asymmetric logical unit access (SPC-4 "Asymmetric logical unit access"):
# the target port groups a logical unit is reached through and the access
# state of each (AccessState, TargetPortGroup, PortGroups), the one table of
# the commands each inaccessible state lets through and the sense it refuses
# the rest with (the standby, unavailable and transitioning states' lists),
# the REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36),
# and AsymmetricAccess, the logical unit's part that holds its current
# PortGroups and raises ASYMMETRIC ACCESS STATE CHANGED when they change.
# Implicit ALUA only (TPGS 01b): the states are set by the target's owner
# (set_port_groups), never by SET TARGET PORT GROUPS.  Pure: no I/O, no clock.
"""Target port groups, their access states, the commands each state allows, RTPG data."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .cdb import BE32
from .opcodes import (
    INQUIRY,
    LOG_SELECT,
    LOG_SENSE,
    MAINTENANCE_IN,
    MAINTENANCE_OUT,
    MODE_SELECT_6,
    MODE_SELECT_10,
    MODE_SENSE_6,
    MODE_SENSE_10,
    PERSISTENT_RESERVE_IN,
    PERSISTENT_RESERVE_OUT,
    READ_BUFFER,
    READ_CAPACITY_10,
    RECEIVE_DIAGNOSTIC_RESULTS,
    REPORT_LUNS,
    REQUEST_SENSE,
    SA_READ_CAPACITY_16,
    SA_REPORT_SUPPORTED_OPCODES,
    SA_REPORT_SUPPORTED_TMFS,
    SA_REPORT_TARGET_PORT_GROUPS,
    SA_SET_TARGET_PORT_GROUPS,
    SEND_DIAGNOSTIC,
    SERVICE_ACTION_IN_16,
    WRITE_BUFFER,
)
from .sense import (
    ASYMMETRIC_ACCESS_STATE_CHANGED,
    GOOD,
    LU_NOT_ACCESSIBLE_STANDBY,
    LU_NOT_ACCESSIBLE_TRANSITIONING,
    LU_NOT_ACCESSIBLE_UNAVAILABLE,
    Sense,
    build_sense,
    cdb_error,
)
from .unit import ScsiResponse, Unit

__all__ = ["AccessState", "AsymmetricAccess", "PortGroups", "TargetPortGroup", "refusal",
           "rtpg_data"]


class AccessState(IntEnum):
    """Primary target port asymmetric access states (SPC-4 table 40)."""

    ACTIVE_OPTIMIZED = 0x0
    ACTIVE_NON_OPTIMIZED = 0x1
    STANDBY = 0x2
    UNAVAILABLE = 0x3
    TRANSITIONING = 0xF


# The states in which every command runs (the unit is "accessible").
ACTIVE_STATES = frozenset({AccessState.ACTIVE_OPTIMIZED, AccessState.ACTIVE_NON_OPTIMIZED})
ALL_STATES = frozenset(AccessState)
# RTPG descriptor byte 1: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP (O_SUP and
# LBD_SUP stay 0: no offline secondary state, no LBA-dependent state).
_SUPPORTED_BIT = {
    AccessState.ACTIVE_OPTIMIZED: 0x01,
    AccessState.ACTIVE_NON_OPTIMIZED: 0x02,
    AccessState.STANDBY: 0x04,
    AccessState.UNAVAILABLE: 0x08,
    AccessState.TRANSITIONING: 0x80,
}


@dataclass(frozen=True)
class TargetPortGroup:
    """One target port group: its id (0..65535), access state, the relative
    target port identifiers (1..65535) of its ports, and PREF."""

    id: int
    state: AccessState
    relative_ports: tuple[int, ...]
    preferred: bool = False

    def __post_init__(self) -> None:
        """Check the fields fit REPORT TARGET PORT GROUPS.

        Raises:
            ValueError: an id or port out of range, no port or over 255, an
                unknown state.
        """
        object.__setattr__(self, "state", AccessState(self.state))
        object.__setattr__(self, "relative_ports", tuple(self.relative_ports))
        if not 0 <= self.id <= 0xFFFF:
            raise ValueError(f"target port group id {self.id} is not 0..65535")
        if not 1 <= len(self.relative_ports) <= 0xFF:
            raise ValueError(f"target port group {self.id} needs 1..255 ports")
        if any(not 1 <= p <= 0xFFFF for p in self.relative_ports):
            raise ValueError(f"a relative port of group {self.id} is not 1..65535")


@dataclass(frozen=True)
class PortGroups:
    """Every target port group of a logical unit (the same on every host
    exporting it) and which one is this host's (`own`).

    supported: the states a group may be in (the supported-state bits of
    REPORT TARGET PORT GROUPS). transition_time: IMPLICIT TRANSITION TIME,
    seconds a transition may take (0: unspecified), 0..255.
    """

    own: int
    groups: tuple[TargetPortGroup, ...]
    supported: frozenset[AccessState] = ALL_STATES
    transition_time: int = 0

    def __post_init__(self) -> None:
        """Check the groups make one consistent set.

        Raises:
            ValueError: duplicate group ids or relative ports, `own` not among
                the groups, a group in a state not `supported`, a transition
                time over 255.
        """
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "supported", frozenset(AccessState(s) for s in self.supported))
        ids = [g.id for g in self.groups]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate target port group ids in {ids}")
        if self.own not in ids:
            raise ValueError(f"own target port group {self.own} is not among {ids}")
        ports = [p for g in self.groups for p in g.relative_ports]
        if len(set(ports)) != len(ports):
            raise ValueError(f"a relative target port is in two groups: {ports}")
        for g in self.groups:
            if g.state not in self.supported:
                raise ValueError(f"group {g.id} is {g.state.name}, not a supported state")
        if not 0 <= self.transition_time <= 0xFF:
            raise ValueError("the implicit transition time is 0..255 seconds")

    @classmethod
    def single(cls, group: int = 1, port: int = 1) -> PortGroups:
        """One host: one preferred active/optimized group of one port, which
        never changes state (AO is the one supported state)."""
        return cls(group, (TargetPortGroup(group, AccessState.ACTIVE_OPTIMIZED, (port,), True),),
                   frozenset({AccessState.ACTIVE_OPTIMIZED}))

    @property
    def own_group(self) -> TargetPortGroup:
        """This host's target port group."""
        return next(g for g in self.groups if g.id == self.own)

    @property
    def state(self) -> AccessState:
        """The access state of this host's group: what the unit does here."""
        return self.own_group.state


# What each inaccessible state lets through, by operation code or (operation
# code, service action), and the sense it refuses everything else with.
# Commands named here that this target does not implement still get INVALID
# COMMAND OPERATION CODE; READ/WRITE BUFFER are listed for their echo buffer
# modes.  Standby lets through SPC-4's list and, as "the device server may
# support other commands" allows, READ CAPACITY (Linux sizes its standby
# paths with it, as LIO allows) and REPORT SUPPORTED OPERATION CODES / TASK
# MANAGEMENT FUNCTIONS: they describe the unit, not its medium.  TEST UNIT
# READY is refused: a multipath checker reads 02/04/0B as a standby path.
_GATES: dict[AccessState, tuple[frozenset[int | tuple[int, int]], Sense]] = {
    AccessState.STANDBY: (frozenset({
        INQUIRY, LOG_SELECT, LOG_SENSE, MODE_SELECT_6, MODE_SELECT_10, MODE_SENSE_6,
        MODE_SENSE_10, REPORT_LUNS, RECEIVE_DIAGNOSTIC_RESULTS, SEND_DIAGNOSTIC,
        (MAINTENANCE_IN, SA_REPORT_TARGET_PORT_GROUPS),
        (MAINTENANCE_OUT, SA_SET_TARGET_PORT_GROUPS), REQUEST_SENSE, PERSISTENT_RESERVE_IN,
        PERSISTENT_RESERVE_OUT, READ_BUFFER, WRITE_BUFFER,
        READ_CAPACITY_10, (SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16),
        (MAINTENANCE_IN, SA_REPORT_SUPPORTED_OPCODES), (MAINTENANCE_IN, SA_REPORT_SUPPORTED_TMFS),
    }), LU_NOT_ACCESSIBLE_STANDBY),
    AccessState.UNAVAILABLE: (frozenset({
        INQUIRY, REPORT_LUNS, (MAINTENANCE_IN, SA_REPORT_TARGET_PORT_GROUPS),
        (MAINTENANCE_OUT, SA_SET_TARGET_PORT_GROUPS), REQUEST_SENSE, READ_BUFFER, WRITE_BUFFER,
    }), LU_NOT_ACCESSIBLE_UNAVAILABLE),
    AccessState.TRANSITIONING: (frozenset({
        INQUIRY, REPORT_LUNS, (MAINTENANCE_IN, SA_REPORT_TARGET_PORT_GROUPS), REQUEST_SENSE,
        READ_BUFFER, WRITE_BUFFER,
    }), LU_NOT_ACCESSIBLE_TRANSITIONING),
}
# The operation codes whose service action decides (byte 1, bits 4..0).
_BY_SERVICE_ACTION = frozenset(k[0] for allowed, _ in _GATES.values() for k in allowed
                               if isinstance(k, tuple))
_REFUSAL_SENSE = {state: build_sense(sense) for state, (_, sense) in _GATES.items()}


def refusal(state: AccessState, cdb: bytes | memoryview) -> Sense | None:
    """The sense a unit whose own group is in `state` ends `cdb` with, or
    None: the command runs."""
    gate = _GATES.get(state)
    if gate is None:
        return None
    allowed, sense = gate
    op = cdb[0]
    if op in allowed or (op in _BY_SERVICE_ACTION and (op, cdb[1] & 0x1F) in allowed):
        return None
    return sense


# REPORT TARGET PORT GROUPS (SPC-4 6.36).
RTPG_LENGTH_ONLY = 0
RTPG_EXTENDED = 1
_EXTENDED_HEADER = 0x10  # FORMAT TYPE 001b
_PREF = 0x80
STATUS_NONE = 0x00  # STATUS CODE: no status available (not kept)
_DESCRIPTOR = struct.Struct(">BBHxBBB")
_PORT = struct.Struct(">xxH")


def rtpg_data(groups: PortGroups, *, extended: bool) -> bytes:
    """REPORT TARGET PORT GROUPS parameter data, whole: RETURN DATA LENGTH
    (every byte after itself, as Linux and sg3_utils read it in both
    formats), the extended header with IMPLICIT TRANSITION TIME if
    `extended`, then one descriptor per group with its ports."""
    sup = 0
    for s in groups.supported:
        sup |= _SUPPORTED_BIT[s]
    parts = []
    if extended:
        parts.append(struct.pack(">BBxx", _EXTENDED_HEADER, groups.transition_time))
    for g in groups.groups:
        parts.append(_DESCRIPTOR.pack((_PREF if g.preferred else 0) | g.state, sup, g.id,
                                      STATUS_NONE, 0, len(g.relative_ports)))
        parts.extend(_PORT.pack(p) for p in g.relative_ports)
    body = b"".join(parts)
    return BE32.pack(len(body)) + body


class AsymmetricAccess:
    """The logical unit's part for ALUA: its current PortGroups, the gate
    and REPORT TARGET PORT GROUPS. It keeps the unit's `accessible` (the
    hot path's one test) true exactly while the own group is active."""

    def __init__(self, unit: Unit) -> None:
        """Start as one host: PortGroups.single of the unit's identity's
        port group and relative port."""
        self._unit = unit
        self._port_group = unit.identity.port_group
        self._relative_port = unit.identity.relative_port
        self.groups = PortGroups.single(self._port_group, self._relative_port)
        unit.accessible = True

    def _check(self, groups: PortGroups) -> None:
        if groups.own != self._port_group:
            raise ValueError(f"own target port group {groups.own} is not the unit's "
                             f"port group {self._port_group} (LunIdentity.port_group)")
        if self._relative_port not in groups.own_group.relative_ports:
            raise ValueError(f"relative port {self._relative_port} (LunIdentity.relative_port) "
                             f"is not in own group {groups.own}")

    def set(self, groups: PortGroups) -> bool:
        """Take `groups`; if anything REPORT TARGET PORT GROUPS shows changed
        (a state above all), every nexus gets UA ASYMMETRIC ACCESS STATE
        CHANGED (SPC-4: after an implicit change, every I_T nexus).
        Returns whether it changed.

        Raises:
            ValueError: `groups` names another own group or port than the unit's.
        """
        self._check(groups)
        old = self.groups
        if groups == old:
            return False
        self.groups = groups
        self._unit.accessible = groups.state in ACTIVE_STATES
        self._unit.establish_unit_attention(ASYMMETRIC_ACCESS_STATE_CHANGED)
        return True

    def refusal(self, cdb: bytes | memoryview) -> bytes | None:
        """Sense data refusing `cdb` in the own group's state, or None."""
        state = self.groups.state
        if refusal(state, cdb) is None:
            return None
        return _REFUSAL_SENSE[state]

    def report_target_port_groups(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        """REPORT TARGET PORT GROUPS: every group, in either format."""
        fmt = cdb[1] >> 5
        if fmt not in (RTPG_LENGTH_ONLY, RTPG_EXTENDED):
            raise cdb_error(1, 7)
        alloc = BE32.unpack_from(cdb, 6)[0]
        data_in = rtpg_data(self.groups, extended=fmt == RTPG_EXTENDED)
        return ScsiResponse(GOOD, data_in[:alloc])
