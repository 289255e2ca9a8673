# The switches of a shared registry's hosts, joined by VXLAN without listing
# every host by hand: each host registers the "ip:port" its vxlan ports bind,
# per switch; every other host adds them to the `remotes` of its own vxlan
# ports on the switch of the same name (head-end replication reaches them).
# Hosts that are down are left out; a remote the configuration lists already
# is not added twice.
"""VXLAN remotes from the hosts of a shared registry."""

from __future__ import annotations

import dataclasses

from netstore.switch.spec import SwitchSpec

from .multipath import HostGroup

VXLAN = "vxlan"


def own_vteps(switches: list[SwitchSpec]) -> tuple[tuple[str, str], ...]:
    """(switch, "ip:port") of every vxlan port of this host's configuration."""
    return tuple((sw.name, p.local) for sw in switches for p in sw.ports
                 if p.kind == VXLAN and p.local)


def with_host_remotes(spec: SwitchSpec, hosts: tuple[HostGroup, ...], me: str) -> SwitchSpec:
    """`spec` with the other up hosts' VTEPs of the same switch added to the
    remotes of each of its vxlan ports."""
    theirs = [addr for h in hosts if h.up and h.name != me
              for sw, addr in h.vteps if sw == spec.name]
    if not theirs:
        return spec
    ports = []
    for p in spec.ports:
        if p.kind == VXLAN:
            extra = tuple(a for a in dict.fromkeys(theirs) if a not in p.remotes and a != p.local)
            if extra:
                p = dataclasses.replace(p, remotes=(*p.remotes, *extra))
        ports.append(p)
    return dataclasses.replace(spec, ports=ports)


__all__ = ["own_vteps", "with_host_remotes"]
