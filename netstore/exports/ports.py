# The switch ports of VM NICs: each NIC of the registry gets a port of its
# transport on its switch, at the address the registry allocated, bound to its
# MAC when port security is on, with the impairments of its link (in: what the
# VM sends, out: what it receives); the VDE transport shares one port per switch
# (never impaired: the registry refuses impairments on a vde NIC).
"""VM NICs -> the switch ports they plug into."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from netstore.switch.spec import PortSpec, SwitchSpec

from .watcher import RegistryView

# Every VM's vde_plug joins the switch's one VDE directory through this port
# (shared by several VMs, so it cannot be bound to one MAC).
VDE_PORT = "vm-vde"


def nic_port_config(vm: str, nic: Any) -> PortSpec:
    """The switch port a VM NIC plugs into, from the addresses the registry gave it."""
    name = f"{vm}-nic{nic.slot}"
    kind = nic.transport
    common = {"name": name, "kind": kind, "vlan": nic.vlan,
              "bound_mac": nic.mac if getattr(nic, "port_security", False) else None,
              "impair_in": getattr(nic, "impair_in", None),
              "impair_out": getattr(nic, "impair_out", None)}
    if kind in ("udp", "unixgram"):
        return PortSpec(local=nic.switch_addr, remote=nic.vm_addr or None, **common)
    if kind == "stream":
        return PortSpec(listen=nic.switch_addr, **common)
    if kind == "tap":
        return PortSpec(device=nic.switch_addr, **common)
    if kind == "vde":
        return PortSpec(path=nic.switch_addr, **dict(common, name=VDE_PORT, bound_mac=None,
                                                      impair_in=None, impair_out=None))
    raise ValueError(f"VM {vm} NIC {nic.slot}: transport {kind!r} unknown")


class NicPorts:
    """The ports of VM NICs per switch, kept in step with the registry."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("netstore.exports")
        self.ports: dict[str, list[PortSpec]] = {}  # switch -> NIC ports

    def with_nics(self, cfg: SwitchSpec) -> SwitchSpec:
        """The switch's configuration plus the ports of its VM NICs."""
        extra = self.ports.get(cfg.name)
        return dataclasses.replace(cfg, ports=[*cfg.ports, *extra]) if extra else cfg

    def set_registry(self, view: RegistryView, switches: set[str]) -> set[str]:
        """Take the NICs of `view`; returns the switches whose NIC ports changed.

        A NIC whose switch does not run (yet) is logged and waits for it.
        """
        wanted: dict[str, list[PortSpec]] = {}
        vde_dirs: set[tuple[str, str]] = set()
        for vm, nic in view.nics:
            if nic.switch not in switches:
                self.log.warning("VM %s NIC %d: no switch named %s; its port waits for one",
                                 vm, nic.slot, nic.switch)
                continue
            port = nic_port_config(vm, nic)
            if port.kind == "vde":
                # one VDE directory per switch; every VM plugs into it
                if (nic.switch, nic.switch_addr) in vde_dirs:
                    continue
                vde_dirs.add((nic.switch, nic.switch_addr))
            wanted.setdefault(nic.switch, []).append(port)
        changed = {name for name in set(wanted) | set(self.ports)
                   if wanted.get(name) != self.ports.get(name)}
        self.ports = wanted
        return changed
