# netstore/config/switches.py - the [[switches]] tables: switch and port
# entries read into the switch's own schema (switch/spec.py), checked against
# the switch's limits (switch/limits.py), mirror and name rules included; a
# port's impaired directions, link state and flap, read by netstore.impairments.
"""Loader of the ``[[switches]]`` section: SwitchConfig and SwitchPortConfig."""

from __future__ import annotations

import ipaddress
from typing import Any

from netstore.addresses import MAC_RE as _MAC_RE
from netstore.addresses import is_socket_path, normal_portal
from netstore.config.model import SwitchConfig, SwitchPortConfig
from netstore.config.reader import _describe, _name, _Reader
from netstore.impairments import (
    DIRECTIONS,
    Flap,
    Impairment,
    ImpairmentError,
    parse_flap,
    parse_impairment,
)
from netstore.switch.limits import (
    DEFAULT_MAC_AGING_S,
    DEFAULT_MAC_TABLE_SIZE,
    DEFAULT_MTU,
    IFNAMSIZ,
    MAC_TABLE_SIZE_MAX,
    MTU_MAX,
    MTU_MIN,
    PORT_KINDS,
    STORM_PPS_MAX,
    VLAN_MAX,
    VLAN_MIN,
)
from netstore.switch.vxlan import OUTER_OVERHEAD, VNI_MAX, VXLAN_PORT


def _switch(r: _Reader, value: Any, key: str) -> SwitchConfig:
    t = r.table(value, key)
    r.keys(t, key, ("name", "mac_aging_s", "mac_table_size", "capture", "seed", "ports"))
    if "name" not in t:
        raise r.fail(f"{key}.name", "the switch's name", "nothing")
    name = _name(r, t["name"], f"{key}.name")
    # From here on errors name the switch, as interface.md shows: sw0.ports[1].kind
    key = name
    aging = r.positive_number(t.get("mac_aging_s", DEFAULT_MAC_AGING_S), f"{key}.mac_aging_s")
    size = r.integer(t.get("mac_table_size", DEFAULT_MAC_TABLE_SIZE), f"{key}.mac_table_size",
                     1, MAC_TABLE_SIZE_MAX)
    capture = str(r.path(t["capture"], f"{key}.capture")) if "capture" in t else None
    seed = r.integer(t["seed"], f"{key}.seed", 0, SEED_MAX) if "seed" in t else None
    ports = r.array(t.get("ports", []), f"{key}.ports", lambda v, k: _port(r, v, k))
    r.unique_names(ports, f"{key}.ports")
    _check_mirrors(r, key, ports)
    return SwitchConfig(
        name=name, mac_aging_s=aging, mac_table_size=size, capture=capture, seed=seed,
        ports=ports,
    )


# Keys each port kind takes besides the common ones (_COMMON_PORT_KEYS).
_PORT_KEYS: dict[str, tuple[str, ...]] = {
    "udp": ("local", "remote"),
    "unixgram": ("local", "remote"),
    "stream": ("listen", "connect"),
    "tap": ("device",),
    "vde": ("path",),
    "vxlan": ("local", "vni", "vnis", "remotes"),
}
# Kinds no VM NIC uses: the switch's own uplinks (PORT_KINDS lists the NIC ones).
UPLINK_KINDS = ("vxlan",)
_COMMON_PORT_KEYS = (
    "name", "kind", "vlan", "trunk", "native", "mtu",
    "mirror_to", "max_macs", "bound_mac", "storm_pps",
    *DIRECTIONS, "link", "flap",
)  # fmt: skip
LINK_STATES = ("up", "down")
SEED_MAX = 2**63 - 1


def _port(r: _Reader, value: Any, key: str) -> SwitchPortConfig:
    t = r.table(value, key)
    all_keys = _COMMON_PORT_KEYS + tuple(k for ks in _PORT_KEYS.values() for k in ks)
    r.keys(t, key, dict.fromkeys(all_keys))
    if "name" not in t:
        raise r.fail(f"{key}.name", "the port's name", "nothing")
    name = _name(r, t["name"], f"{key}.name")
    kind = t.get("kind")
    if kind not in PORT_KINDS + UPLINK_KINDS:
        raise r.fail(
            f"{key}.kind",
            "one of " + ", ".join(PORT_KINDS + UPLINK_KINDS),
            _describe(kind) if "kind" in t else "nothing",
        )
    own = _PORT_KEYS[kind]
    for k in t:
        if k not in _COMMON_PORT_KEYS and k not in own:
            raise r.fail(
                f"{key}.{k}",
                f'only {", ".join(_COMMON_PORT_KEYS + own)} for kind "{kind}"',
                f"the key {k} (it belongs to another kind)",
            )
    values: dict[str, Any] = {}
    if kind == "udp":
        values["local"] = _udp_addr(r, t.get("local"), f"{key}.local", required=True)
        if "remote" in t:
            values["remote"] = _udp_addr(r, t["remote"], f"{key}.remote", required=True)
    elif kind == "unixgram":
        if "local" not in t:
            raise r.fail(f"{key}.local", "a unix socket path", "nothing")
        values["local"] = str(r.path(t["local"], f"{key}.local"))
        if "remote" in t:
            values["remote"] = str(r.path(t["remote"], f"{key}.remote"))
    elif kind == "stream":
        if ("listen" in t) == ("connect" in t):
            raise r.fail(
                f"{key}.listen",
                'exactly one of listen or connect ("host:port" or a path)',
                "both" if "listen" in t else "neither",
            )
        which = "listen" if "listen" in t else "connect"
        values[which] = _stream_addr(r, t[which], f"{key}.{which}")
    elif kind == "tap":
        if "device" not in t:
            raise r.fail(f"{key}.device", "a TAP device name like tap0", "nothing")
        dev = r.string(t["device"], f"{key}.device", what="a TAP device name")
        if len(dev.encode()) >= IFNAMSIZ or "/" in dev or any(c.isspace() for c in dev):
            raise r.fail(
                f"{key}.device",
                f"an interface name of at most {IFNAMSIZ - 1} bytes without '/' or spaces",
                _describe(dev),
            )
        values["device"] = dev
    elif kind == "vxlan":
        values.update(_vxlan(r, t, key))
    else:  # vde
        if "path" not in t:
            raise r.fail(f"{key}.path", "the VDE control directory path", "nothing")
        values["path"] = str(r.path(t["path"], f"{key}.path"))
    vlan: int | None = 1
    trunk = native = None
    if "vnis" in values:  # the map says which VLANs the port carries, tagged
        trunk = [v for v, _ in values["vnis"]]
        vlan = None
    elif "trunk" in t:
        if "vlan" in t:
            raise r.fail(f"{key}.vlan", "either vlan (access port) or trunk, not both", "both")
        trunk = r.array(
            t["trunk"], f"{key}.trunk", lambda v, k: r.integer(v, k, VLAN_MIN, VLAN_MAX)
        )
        if not trunk:
            raise r.fail(f"{key}.trunk", "at least one VLAN", "an empty array")
        if len(set(trunk)) != len(trunk):
            raise r.fail(f"{key}.trunk", "each VLAN once", f"{trunk}")
        vlan = None
        if "native" in t:
            native = r.integer(t["native"], f"{key}.native", VLAN_MIN, VLAN_MAX)
    else:
        if "native" in t:
            raise r.fail(
                f"{key}.native",
                "native only on a trunk port (set trunk = [...])",
                _describe(t["native"]),
            )
        if "vlan" in t:
            vlan = r.integer(t["vlan"], f"{key}.vlan", VLAN_MIN, VLAN_MAX)
    if kind == "vxlan":  # the underlay's path MTU; the frames' MTU is 50 bytes less
        mtu = DEFAULT_MTU
        if "mtu" in t:
            values["path_mtu"] = r.integer(t["mtu"], f"{key}.mtu", MTU_MIN + OUTER_OVERHEAD,
                                           MTU_MAX)
    else:
        mtu = r.integer(t.get("mtu", DEFAULT_MTU), f"{key}.mtu", MTU_MIN, MTU_MAX)
    if "mirror_to" in t:
        values["mirror_to"] = _name(r, t["mirror_to"], f"{key}.mirror_to")
        if values["mirror_to"] == name:
            raise r.fail(f"{key}.mirror_to", "another port of the switch (not the port itself)",
                         _describe(name))
    if "max_macs" in t:
        values["max_macs"] = r.integer(t["max_macs"], f"{key}.max_macs", 1, 1 << 24)
    if "bound_mac" in t:
        values["bound_mac"] = _unicast_mac(r, t["bound_mac"], f"{key}.bound_mac")
    if "storm_pps" in t:
        values["storm_pps"] = r.integer(t["storm_pps"], f"{key}.storm_pps", 1, STORM_PPS_MAX)
    for direction in DIRECTIONS:
        if direction in t:
            values[f"impair_{direction}"] = _impairment(r, t[direction], f"{key}.{direction}")
    if "link" in t:
        if t["link"] not in LINK_STATES:
            raise r.fail(f"{key}.link", '"up" or "down"', _describe(t["link"]))
        values["link"] = t["link"]
    if "flap" in t:
        values["flap"] = _flap(r, t["flap"], f"{key}.flap")
    return SwitchPortConfig(
        name=name, kind=kind, vlan=vlan, trunk=trunk, native=native, mtu=mtu, **values
    )


def _impairment(r: _Reader, value: Any, key: str) -> Impairment | None:
    """One direction of a port's link (``in``/``out`` table); None when the
    table asks for nothing (a perfect link)."""
    t = r.table(value, key)
    try:
        imp = parse_impairment(t)
    except ImpairmentError as e:
        raise r.fail(f"{key}.{e.key}" if e.key else key, e.expected, _one_line(e.got)) from None
    return imp if imp.active else None


def _flap(r: _Reader, value: Any, key: str) -> Flap:
    try:
        return parse_flap(value, key)
    except ImpairmentError as e:
        raise r.fail(e.key, e.expected, _one_line(e.got)) from None


def _one_line(got: str) -> str:
    """An ImpairmentError's value (already one line, JSON-quoted) kept short."""
    return got if len(got) <= 80 else got[:76] + '..."'


def _unicast_mac(r: _Reader, value: Any, key: str) -> str:
    """A VM NIC's MAC as lowercase ``aa:bb:cc:dd:ee:ff`` (``-`` separators taken too)."""
    what = 'a unicast MAC address like "52:54:00:12:34:56"'
    text = r.string(value, key, what=what)
    if not _MAC_RE.fullmatch(text):
        raise r.fail(key, what, _describe(text))
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise r.fail(key, what + " (not multicast, broadcast or all zeros)", _describe(text))
    return mac


def _check_mirrors(r: _Reader, switch: str, ports: list[SwitchPortConfig]) -> None:
    """mirror_to names a port of the same switch, one that mirrors nothing itself.

    A mirror destination is dedicated to the copies (as Open vSwitch's
    output_port): what arrives on it is dropped, so its own mirror_to could
    never carry anything.
    """
    index = {p.name: i for i, p in enumerate(ports)}
    for i, p in enumerate(ports):
        if p.mirror_to is None:
            continue
        if p.mirror_to not in index:
            others = ", ".join(n for n in index if n != p.name) or "none"
            raise r.fail(f"{switch}.ports[{i}].mirror_to",
                         f"the name of another port of {switch} ({others})",
                         _describe(p.mirror_to))
        j = index[p.mirror_to]
        if ports[j].kind == "vde":
            raise r.fail(f"{switch}.ports[{i}].mirror_to",
                         "a port, not a VDE directory (its clients come and go)",
                         _describe(p.mirror_to))
        if ports[j].mirror_to is not None:
            raise r.fail(f"{switch}.ports[{j}].mirror_to",
                         f'no mirror_to on a mirror destination (port "{ports[j].name}" gets '
                         f'the copies of port "{p.name}")', _describe(ports[j].mirror_to))


def _vxlan(r: _Reader, t: dict[str, Any], key: str) -> dict[str, Any]:
    """local, remotes and vni (access port) or vnis (VLAN -> VNI, a trunk)."""
    values: dict[str, Any] = {
        "local": _vtep_addr(r, t.get("local"), f"{key}.local", what="the local underlay address"),
    }
    if ("vni" in t) == ("vnis" in t):
        raise r.fail(f"{key}.vni", f"exactly one of vni (0..{VNI_MAX}) or vnis (a table "
                     "VLAN = VNI, for a trunk)", "both" if "vni" in t else "neither")
    if "vni" in t:
        if "trunk" in t or "native" in t:
            k = "trunk" if "trunk" in t else "native"
            raise r.fail(f"{key}.{k}", "no trunk or native with vni (an access port on vlan; "
                         "map VLANs to VNIs with vnis = {10 = 5010, ...})", _describe(t[k]))
        values["vni"] = r.integer(t["vni"], f"{key}.vni", 0, VNI_MAX)
    else:
        for k in ("vlan", "trunk", "native"):
            if k in t:
                raise r.fail(f"{key}.{k}", "no vlan, trunk or native with vnis (its VLANs are "
                             "the VLANs it maps)", _describe(t[k]))
        table = r.table(t["vnis"], f"{key}.vnis")
        if not table:
            raise r.fail(f"{key}.vnis", "at least one VLAN = VNI", "an empty table")
        pairs: list[tuple[int, int]] = []
        for text, vni in table.items():
            k = f"{key}.vnis.{text}"
            if not text.isascii() or not text.isdigit() or not VLAN_MIN <= int(text) <= VLAN_MAX:
                raise r.fail(k, f"a VLAN {VLAN_MIN}..{VLAN_MAX} as the key", _describe(text))
            pairs.append((int(text), r.integer(vni, k, 0, VNI_MAX)))
        vnis = [v for _, v in pairs]
        if len(set(vnis)) != len(vnis):
            dup = next(v for v in vnis if vnis.count(v) > 1)
            raise r.fail(f"{key}.vnis", "each VNI for one VLAN only", f"VNI {dup} twice")
        values["vnis"] = tuple(sorted(pairs))
    remotes = r.array(t.get("remotes", []), f"{key}.remotes",
                      lambda v, k: _vtep_addr(r, v, k, what="a remote VTEP"))
    for i, addr in enumerate(remotes):
        if addr in remotes[:i]:
            raise r.fail(f"{key}.remotes[{i}]", "each VTEP once", _describe(addr))
    values["remotes"] = tuple(remotes)
    return values


def _vtep_addr(r: _Reader, value: Any, key: str, *, what: str) -> str:
    """An IPv4 ``"ip"`` or ``"ip:port"`` (port 4789 when absent), as ``"ip:port"``."""
    expected = f'{what}: "IPv4" or "IPv4:port" (port {VXLAN_PORT} when absent)'
    if value is None:
        raise r.fail(key, expected, "nothing")
    text = r.string(value, key, what=expected)
    host, sep, port = text.partition(":")
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise r.fail(key, expected, _describe(text)) from None
    if sep and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise r.fail(key, expected + " with a port in 1..65535", _describe(text))
    if ip.is_multicast:
        raise r.fail(key, expected + " that is not multicast (flooding is head-end "
                     "replication to each remote)", _describe(text))
    return f"{ip}:{int(port) if sep else VXLAN_PORT}"


def _udp_addr(r: _Reader, value: Any, key: str, *, required: bool) -> str:
    if value is None:
        raise r.fail(key, '"host:port"', "nothing")
    text = r.string(value, key, what='"host:port"')
    try:
        return normal_portal(text)
    except ValueError as e:
        raise r.fail(key, f'"host:port" ({e})', _describe(text)) from None


def _stream_addr(r: _Reader, value: Any, key: str) -> str:
    text = r.string(value, key, what='"host:port" or a unix socket path')
    if is_socket_path(text):
        return str(r.path(text, key))
    try:
        return normal_portal(text)
    except ValueError as e:
        raise r.fail(key, f'"host:port" or a unix socket path ({e})', _describe(text)) from None
