# netstore/switch/spec.py - the switch's own configuration schema: what one
# switch and each of its ports are asked to be, as frozen values. The config
# loader builds these from a file (and re-exports them as SwitchConfig /
# SwitchPortConfig); the switch service runs them.
"""SwitchSpec and PortSpec: a learning switch and its ports, as configured."""

from __future__ import annotations

from dataclasses import dataclass, field

from netstore.impairments import Flap, Impairment
from netstore.switch.limits import DEFAULT_MAC_AGING_S, DEFAULT_MAC_TABLE_SIZE, DEFAULT_MTU

__all__ = ["PortSpec", "SwitchSpec"]


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One ``[[switches.ports]]`` entry; which fields are set depends on ``kind``.

    udp: ``local`` (and optional ``remote``) as (host, port) text ``"h:p"``;
    unixgram: ``local``/``remote`` are socket paths; stream: ``listen`` or
    ``connect`` (``"h:p"`` or a path); tap: ``device``; vde: ``path``.
    A port is an access port on ``vlan`` or, with ``trunk``, a trunk whose
    untagged frames belong to ``native``. Any kind may take ``mirror_to`` (a
    port of the same switch that gets copies of this port's frames),
    ``max_macs`` and ``bound_mac`` (port security: at most N source MACs, or
    only this one, as ``52:54:00:12:34:56``) and ``storm_pps`` (broadcast and
    multicast frames per second taken in).
    ``impair_in``/``impair_out`` impair what the peer sends / receives (None:
    a perfect link); ``link`` is the port's administrative state ("up" or
    "down"); ``flap`` takes it down on a schedule.
    vxlan: ``local`` is the ``"ip:port"`` bound, ``remotes`` the VTEPs
    (``"ip:port"``) floods go to, and either ``vni`` (an access port on
    ``vlan``) or ``vnis`` ((VLAN, VNI) pairs; ``trunk`` lists their VLANs);
    ``path_mtu`` is the underlay's (None: asked of the kernel).
    """

    name: str
    kind: str
    local: str | None = None
    remote: str | None = None
    vlan: int | None = 1
    trunk: list[int] | None = None
    native: int | None = None
    device: str | None = None
    listen: str | None = None
    connect: str | None = None
    path: str | None = None
    mtu: int = DEFAULT_MTU
    mirror_to: str | None = None
    max_macs: int | None = None
    bound_mac: str | None = None
    storm_pps: int | None = None
    impair_in: Impairment | None = None
    impair_out: Impairment | None = None
    link: str = "up"
    flap: Flap | None = None
    vni: int | None = None
    vnis: tuple[tuple[int, int], ...] | None = None
    remotes: tuple[str, ...] = ()
    path_mtu: int | None = None


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    """One ``[[switches]]`` entry: a learning switch and its ports; ``seed``
    makes every random decision of its impaired links repeat run after run."""

    name: str
    mac_aging_s: float = DEFAULT_MAC_AGING_S
    mac_table_size: int = DEFAULT_MAC_TABLE_SIZE
    capture: str | None = None
    seed: int | None = None
    ports: list[PortSpec] = field(default_factory=list)
