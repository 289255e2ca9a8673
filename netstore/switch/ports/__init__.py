# netstore/switch/ports - one module per way a VM NIC reaches the switch.
"""Port kinds of the learning switch: udp, unixgram, stream, tap, vde; vxlan uplinks."""

from __future__ import annotations

from typing import Any

from netstore.switch.ports.base import Port, PortHost
from netstore.switch.ports.stream import StreamPort
from netstore.switch.ports.tap import TapPort
from netstore.switch.ports.udp import UdpPort
from netstore.switch.ports.unixgram import UnixgramPort
from netstore.switch.ports.vde import VdePort
from netstore.switch.ports.vxlan import VxlanPort

__all__ = ["PORT_CLASSES", "UPLINK_CLASSES", "Port", "PortHost", "make_port"]

# One class per kind of limits.PORT_KINDS (the kinds a configuration may name).
PORT_CLASSES: dict[str, type[Port]] = {
    cls.kind: cls for cls in (UdpPort, UnixgramPort, StreamPort, TapPort, VdePort)
}
# Kinds no VM NIC uses: the switch's own uplinks.
UPLINK_CLASSES: dict[str, type[Port]] = {VxlanPort.kind: VxlanPort}


def make_port(config: Any, settings: Any, host: PortHost, log: Any = None) -> Port:
    """The port a ``SwitchPortConfig`` describes (not yet opened)."""
    kind = config.kind
    if kind in ("udp", "unixgram"):
        kw = {"local": config.local, "remote": config.remote}
    elif kind == "stream":
        kw = {"listen": config.listen, "connect": config.connect}
    elif kind == "tap":
        kw = {"device": config.device}
    elif kind == "vde":
        kw = {"path": config.path}
    elif kind == "vxlan":
        table = getattr(host, "switch", None)  # the VTEP table ages as the MAC table
        kw = {"local": config.local, "vni": config.vni, "vnis": config.vnis,
              "remotes": config.remotes, "path_mtu": config.path_mtu}
        if table is not None:
            kw.update(aging_s=table.aging_s, table_size=table.table_size)
        return VxlanPort(config.name, settings, host, log=log, **kw)
    else:
        raise ValueError(f"unknown port kind {kind!r}")
    return PORT_CLASSES[kind](config.name, settings, host, log=log, **kw)
