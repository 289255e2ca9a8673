# NICs of VMs (semantics.md section 2): slot, MAC (unique across the
# registry, generated under QEMU's OUI when not given), the switch and VLAN it
# plugs into, port security, and how the VM's emulator reaches the switch
# (transport and the two ends' addresses; udp and stream ports are allocated
# registry-wide from nic_port_range()), and the impairments of its link
# (issue 11: netem's settings per direction of its switch port, stored as the
# JSON of Impairment.to_table(), NULL for a perfect link).
"""The NICs of VMs: MACs, switch ports, transports and their addresses."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from netstore.addresses import MAC_RE
from netstore.impairments import Impairment, ImpairmentError, parse_impairment
from netstore.registry.errors import (
    MachineRuleError,
    NicImpairmentError,
    NotFoundError,
    RegistryError,
)
from netstore.registry.layers import Layers
from netstore.registry.vm import Machine, get_machine

NIC_SLOTS = 8  # VirtualBox's 8 network adapters
TRANSPORTS = ("udp", "unixgram", "stream", "tap", "vde")
# The adapters a NIC may be (what the guest sees; VirtualBox's and VMware's
# models that QEMU emulates); the first is a new NIC's.
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "pcnet", "vmxnet3")
# IP ports handed to udp and stream NICs; NETSTORE_NIC_PORTS=LO-HI overrides.
# Below Linux's ephemeral range (32768-60999): an outgoing connection of
# anything on the host could hold a port taken from inside it.
NIC_PORT_RANGE = (20000, 29999)
NIC_PORTS_ENV = "NETSTORE_NIC_PORTS"
# QEMU's own OUI; a generated MAC is 52:54:00 and three random octets.
MAC_PREFIX = "52:54:00"
MAC_TRIES = 64
# The columns a Nic is read from, in its fields' order (_nic_of).
_NIC_COLUMNS = ("slot, mac, switch, vlan, transport, switch_addr, vm_addr, port_security, "
                "impair_in, impair_out, model")
# What set_nic takes for one direction of a NIC's link: None keeps it; a
# table of text settings ({"delay": "80ms"}) is merged over the NIC's current
# ones; an Impairment replaces them (Impairment(): a perfect link).
ImpairmentChange = Impairment | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Nic:
    """A NIC and where it meets its switch.  ``switch_addr`` is the switch
    port's end (udp/stream: host:port it listens on; unixgram: its socket
    path; tap: the device; vde: the switch's vde directory); ``vm_addr`` the
    VM's end (udp: host:port the VM binds; unixgram: its socket path; '' when
    the VM connects to switch_addr).  ``impair_in``/``impair_out`` impair what
    the VM sends / receives, as its switch port's two directions (None: a
    perfect link)."""

    slot: int
    mac: str
    switch: str
    vlan: int
    transport: str
    switch_addr: str
    vm_addr: str
    port_security: bool = False  # the switch port admits only this NIC's MAC
    impair_in: Impairment | None = None
    impair_out: Impairment | None = None
    model: str = "virtio"  # the adapter the guest sees (NIC_MODELS)

    def to_dict(self) -> dict[str, Any]:
        """Plain values; an impairment as its text settings (to_table()) or None."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("impair_in", "impair_out"):
            d[key] = d[key].to_table() if d[key] is not None else None
        return d


def _dump(imp: Impairment | None) -> str | None:
    """An impairment as stored: the JSON of its text settings; NULL for a perfect link."""
    if imp is None or not imp.active:
        return None
    return json.dumps(imp.to_table(), sort_keys=True)


def _load(text: str | None, where: str) -> Impairment | None:
    if text is None:
        return None
    try:
        return parse_impairment(json.loads(text))
    except (ValueError, TypeError) as e:  # an ImpairmentError, or JSON that is not
        raise RegistryError(f"{where}: the registry holds an impairment this netstore "
                            f"cannot read ({e}); set it again with netstore vm nic") from None


def _nic_of(row: tuple[Any, ...], vm: str) -> Nic:
    """A Nic from the _NIC_COLUMNS of a row of ``vm``'s NICs."""
    where = f"{vm} NIC {row[0]}"
    return Nic(*row[:7], bool(row[7]), _load(row[8], where + " in"), _load(row[9], where + " out"),
               row[10])


def nic_port_range() -> tuple[int, int]:
    """The range NIC ports are allocated from: NETSTORE_NIC_PORTS=LO-HI, else NIC_PORT_RANGE."""
    text = os.environ.get(NIC_PORTS_ENV)
    if not text:
        return NIC_PORT_RANGE
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
        raise MachineRuleError(
            f"{NIC_PORTS_ENV}={text!r}: expected LO-HI, two ports 1..65535 (20000-29999)"
        )
    return int(m.group(1)), int(m.group(2))


def normal_mac(text: str) -> str:
    """`text` as a NIC's MAC (lowercase, ':'-separated).

    Raises:
        MachineRuleError: malformed, multicast (first octet odd) or all zeros.
    """
    t = text.strip().lower()
    if not MAC_RE.fullmatch(t):
        raise MachineRuleError(f"MAC {text!r} is malformed (six hex octets: 52:54:00:12:34:56)")
    t = t.replace("-", ":")
    if int(t[:2], 16) & 1:
        raise MachineRuleError(
            f"MAC {t} is a multicast address (first octet odd); a NIC needs a unicast MAC"
        )
    if t == "00:00:00:00:00:00":
        raise MachineRuleError("MAC 00:00:00:00:00:00 is not a NIC's address")
    return t


class Nics:
    """The NICs of the registry's VMs (through ``reg.machines``).  Each
    method raising is a refusal that changed nothing."""

    def __init__(self, reg: Layers) -> None:
        self.reg = reg

    def nics(self, name: str) -> list[Nic]:
        """The VM's NICs by slot."""
        with self.reg.reading() as conn:
            vm = get_machine(conn, name)
            rows = conn.execute(f"SELECT {_NIC_COLUMNS} FROM nics "
                                "WHERE machine_id = ? ORDER BY slot", (vm.id,)).fetchall()
        return [_nic_of(r, vm.name) for r in rows]

    def _allocate_port(self, conn: sqlite3.Connection, nic_id: int, vm: Machine,
                       slot: int) -> int:
        lo, hi = nic_port_range()
        used = {r[0] for r in conn.execute(
            "SELECT port FROM nic_ports WHERE port BETWEEN ? AND ?", (lo, hi))}
        for port in range(lo, hi + 1):
            if port not in used:
                conn.execute("INSERT INTO nic_ports (port, nic_id) VALUES (?, ?)", (port, nic_id))
                return port
        raise MachineRuleError(
            f"no free port left in {lo}-{hi} for NIC {slot} of {vm.name}; widen the range "
            f"({NIC_PORTS_ENV}=LO-HI)"
        )

    def _addresses(self, conn: sqlite3.Connection, nic_id: int, vm: Machine, slot: int,
                   switch: str, transport: str) -> tuple[str, str]:
        sock = self.reg.state_dir / "sockets"
        if transport == "udp":
            a = self._allocate_port(conn, nic_id, vm, slot)
            b = self._allocate_port(conn, nic_id, vm, slot)
            return f"127.0.0.1:{a}", f"127.0.0.1:{b}"
        if transport == "stream":
            return f"127.0.0.1:{self._allocate_port(conn, nic_id, vm, slot)}", ""
        if transport == "unixgram":
            return str(sock / f"{vm.id}-{slot}-sw.sock"), str(sock / f"{vm.id}-{slot}-vm.sock")
        if transport == "tap":
            return f"nstap{vm.id}n{slot}", ""  # IFNAMSIZ: 15 characters at most
        return str(self.reg.state_dir / "vde" / switch), ""

    def _new_mac(self, conn: sqlite3.Connection) -> str:
        for _ in range(MAC_TRIES):
            mac = MAC_PREFIX + "".join(f":{random.randrange(256):02x}" for _ in range(3))
            if not conn.execute("SELECT 1 FROM nics WHERE mac = ?", (mac,)).fetchone():
                return mac
        raise MachineRuleError(f"no free MAC found under {MAC_PREFIX} after {MAC_TRIES} tries")

    def set_nic(self, name: str, slot: int, switch: str | None = None, *,
                mac: str | None = None, vlan: int | None = None,
                transport: str | None = None, port_security: bool | None = None,
                impair_in: ImpairmentChange = None,
                impair_out: ImpairmentChange = None, model: str | None = None) -> Nic:
        """Add the NIC in `slot`, or change it (what is not given is kept;
        a new NIC needs a switch and gets a generated MAC, VLAN 1, udp, a
        perfect link).  Its switch-side and VM-side addresses are allocated
        here (udp, stream: ports from nic_port_range(), unique registry-wide).
        ``impair_in``/``impair_out`` (see ImpairmentChange) may change while
        the VM runs: a running daemon applies them to the switch port.

        Raises:
            NicImpairmentError: an impairment setting it cannot take (its key named).
            MachineRuleError: slot outside 0..7, no switch for a new NIC, a
                malformed/multicast MAC or one another NIC has (named), VLAN
                outside 1..4094, unknown transport, impairments on a vde NIC.
        """
        if not 0 <= slot < NIC_SLOTS:
            raise MachineRuleError(f"NIC slot {slot} is outside 0..{NIC_SLOTS - 1}")
        if vlan is not None and not 1 <= vlan <= 4094:
            raise MachineRuleError(f"VLAN {vlan} is outside 1..4094")
        if transport is not None and transport not in TRANSPORTS:
            raise MachineRuleError(
                f"unknown transport {transport!r} (one of {', '.join(TRANSPORTS)})"
            )
        if model is not None and model not in NIC_MODELS:
            raise MachineRuleError(f"unknown NIC model {model!r} (one of {', '.join(NIC_MODELS)})")
        if switch is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", switch):
            raise MachineRuleError(f"{switch!r} is not a switch name")
        mac = normal_mac(mac) if mac is not None else None
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            if mac is not None:
                row = conn.execute(
                    "SELECT vm.name, n.slot FROM nics n JOIN machines vm ON vm.id = n.machine_id "
                    "WHERE n.mac = ? AND NOT (n.machine_id = ? AND n.slot = ?)",
                    (mac, vm.id, slot)).fetchone()
                if row:
                    raise MachineRuleError(
                        f"MAC {mac} is taken by NIC {row[1]} of VM {row[0]}; MACs are unique "
                        "across the registry"
                    )
            old = conn.execute("SELECT id, mac, vlan, transport, switch, impair_in, impair_out "
                               "FROM nics WHERE machine_id = ? AND slot = ?",
                               (vm.id, slot)).fetchone()
            where = f"{vm.name} NIC {slot}"
            impairs = {d: self._impairment(where, d, change, None if old is None else
                                           _load(old[5 + i], f"{where} {d}"))
                       for i, (d, change) in enumerate((("in", impair_in), ("out", impair_out)))}
            if old is None:
                if switch is None:
                    raise MachineRuleError(f"{vm.name} has no NIC in slot {slot}; a new NIC "
                                           "needs a switch to plug into")
                transport = transport or "udp"
                cur = conn.execute(
                    "INSERT INTO nics (machine_id, slot, mac, switch, vlan, transport, "
                    "switch_addr, vm_addr) VALUES (?, ?, ?, ?, ?, ?, '', '') RETURNING id",
                    (vm.id, slot, mac or self._new_mac(conn), switch, vlan or 1, transport))
                nic_id = cur.fetchall()[0][0]
                assert nic_id is not None
                redo = True
            else:
                nic_id = old[0]
                switch = switch or old[4]
                redo = (transport is not None and transport != old[3]) or \
                    (switch != old[4] and (transport or old[3]) == "vde")
                transport = transport or old[3]
                conn.execute("UPDATE nics SET mac = ?, switch = ?, vlan = ?, transport = ? "
                             "WHERE id = ?", (mac or old[1], switch, vlan or old[2], transport,
                                              nic_id))
            if port_security is not None:
                conn.execute("UPDATE nics SET port_security = ? WHERE id = ?",
                             (int(port_security), nic_id))
            if model is not None:
                conn.execute("UPDATE nics SET model = ? WHERE id = ?", (model, nic_id))
            if transport == "vde" and any(imp is not None and imp.active
                                          for imp in impairs.values()):
                raise MachineRuleError(
                    f"{where}: a vde NIC shares its switch's one VDE port with every VM's vde "
                    "NIC, so it cannot be impaired alone; use a udp, unixgram, stream or tap NIC")
            conn.execute("UPDATE nics SET impair_in = ?, impair_out = ? WHERE id = ?",
                         (_dump(impairs["in"]), _dump(impairs["out"]), nic_id))
            if redo:
                conn.execute("DELETE FROM nic_ports WHERE nic_id = ?", (nic_id,))
                sw_addr, vm_addr = self._addresses(conn, nic_id, vm, slot, switch, transport)
                conn.execute("UPDATE nics SET switch_addr = ?, vm_addr = ? WHERE id = ?",
                             (sw_addr, vm_addr, nic_id))
            row = conn.execute(f"SELECT {_NIC_COLUMNS} FROM nics WHERE id = ?",
                               (nic_id,)).fetchone()
        return _nic_of(row, vm.name)

    @staticmethod
    def _impairment(where: str, direction: str, change: ImpairmentChange,
                    current: Impairment | None) -> Impairment | None:
        """The impairment one direction of a NIC gets from `change` (ImpairmentChange)."""
        if change is None:
            return current
        if isinstance(change, Impairment):
            return change
        try:
            return parse_impairment(change, base=current)
        except ImpairmentError as e:
            raise NicImpairmentError(where, direction, e.key, e.expected, e.got) from None

    def remove_nic(self, name: str, slot: int) -> Nic:
        """Remove the NIC in `slot` (its ports are freed).  Raises NotFoundError."""
        with self.reg.transaction() as conn:
            vm = get_machine(conn, name)
            row = conn.execute(
                f"SELECT {_NIC_COLUMNS}, id FROM nics "
                "WHERE machine_id = ? AND slot = ?", (vm.id, slot)).fetchone()
            if row is None:
                raise NotFoundError(f"{name} has no NIC in slot {slot}")
            conn.execute("DELETE FROM nics WHERE id = ?", (row[-1],))
        return _nic_of(row[:-1], vm.name)

    # -- power -------------------------------------------------------------


__all__ = [
    "Nics",
    "Nic",
    "ImpairmentChange",
    "NIC_SLOTS",
    "NIC_PORT_RANGE",
    "NIC_PORTS_ENV",
    "TRANSPORTS",
    "MAC_PREFIX",
    "nic_port_range",
    "normal_mac",
]
