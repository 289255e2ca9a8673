# tests/registry/test_nic_impairments.py - the impairments of a VM NIC's link
# (issue 11) in the registry: set per direction, merged over what the NIC
# has, cleared, kept across reopening; bad values refused naming the key and
# changing nothing; a database of the previous schema version migrated with
# its NICs perfect links.
"""Impairments of VM NICs in the registry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from netstore.impairments import GeModel, Impairment
from netstore.registry import (
    DB_NAME,
    MIGRATIONS,
    MachineRuleError,
    NicImpairmentError,
    Registry,
    schema_version,
)


def test_set_merge_clear_and_reopen(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.machines.create("web")
        n = reg.machines.set_nic("web", 0, "sw0")
        assert n.impair_in is None and n.impair_out is None
        n = reg.machines.set_nic("web", 0, "sw0", impair_out={"delay": "80ms", "loss": "1%"})
        assert n.impair_out == Impairment(delay=0.08, loss=0.01) and n.impair_in is None
        # what is not given is kept: the switch, and the other settings of the direction
        n = reg.machines.set_nic("web", 0, impair_out={"jitter": "5ms"},
                                 impair_in={"rate": "10mbit", "gemodel": "1%,30%"})
        assert n.switch == "sw0"
        assert n.impair_out == Impairment(delay=0.08, jitter=0.005, loss=0.01)
        assert n.impair_in == Impairment(rate=10_000_000, gemodel=GeModel(p=0.01, r=0.3))
        assert n.to_dict()["impair_out"] == {"delay": "80ms", "jitter": "5ms", "loss": "1%"}
        assert reg.machines.info("web")["nics"][0]["impair_in"] == {
            "gemodel": {"p": "1%", "r": "30%", "bad_loss": "100%", "good_loss": "0%"},
            "rate": "10mbit"}
    with Registry.open(tmp_path) as reg:
        (n,) = reg.machines.nics("web")
        assert n.impair_out == Impairment(delay=0.08, jitter=0.005, loss=0.01)
        assert n.impair_in.rate == 10_000_000
        # an Impairment replaces; a perfect one clears (stored as NULL)
        n = reg.machines.set_nic("web", 0, impair_out=Impairment(loss=0.5), impair_in=Impairment())
        assert n.impair_out == Impairment(loss=0.5) and n.impair_in is None
        assert reg._conn.execute("SELECT impair_in, impair_out FROM nics").fetchone() == (
            None, '{"loss": "50%"}')
        # other changes keep the impairments
        n = reg.machines.set_nic("web", 0, "sw1", vlan=7, transport="stream")
        assert n.impair_out == Impairment(loss=0.5)
        assert reg.machines.remove_nic("web", 0).impair_out == Impairment(loss=0.5)


def test_a_running_vm_may_change_its_impairments(reg: Registry) -> None:
    reg.machines.create("web")
    reg.machines.set_nic("web", 0, "sw0")
    reg.machines.start("web")
    g = reg.generation()
    n = reg.machines.set_nic("web", 0, impair_in={"duplicate": "2%"})
    assert n.impair_in == Impairment(duplicate=0.02)
    assert reg.generation() == g + 1  # the daemon's watcher sees the change


@pytest.mark.parametrize(("table", "message"), [
    ({"loss": "120%"}, 'loss: expected a percentage from "0%" to "100%", got "120%"'),
    ({"delay": "80"}, 'delay: expected a time like "80ms", "500us" or "1s", got "80"'),
    ({"rate": "10mb"}, "rate: expected a rate like"),
    ({"reorder": "5%"}, "reorder: expected a delay as well"),
    ({"lose": "1%"}, "lose: expected one of the keys"),
    ({"gemodel": "0%"}, "gemodel.p: expected more than 0%"),
])
def test_bad_values_are_refused_naming_the_key(reg: Registry, table: dict[str, str],
                                               message: str) -> None:
    reg.machines.create("web")
    reg.machines.set_nic("web", 0, "sw0", impair_in={"delay": "1ms"})
    g = reg.generation()
    with pytest.raises(NicImpairmentError) as e:
        reg.machines.set_nic("web", 0, "sw1", vlan=9, impair_in={"loss": "1%"}, impair_out=table)
    assert str(e.value).startswith(f"web NIC 0, impairment out: {message}")
    assert e.value.direction == "out" and e.value.key == message.split(":")[0]
    assert isinstance(e.value, MachineRuleError)  # a refusal like a bad VLAN
    (n,) = reg.machines.nics("web")  # nothing changed
    assert (n.switch, n.vlan, n.impair_in, n.impair_out) == ("sw0", 1, Impairment(delay=0.001),
                                                              None)
    assert reg.generation() == g


def test_a_merge_is_checked_whole(reg: Registry) -> None:
    reg.machines.create("web")
    reg.machines.set_nic("web", 0, "sw0", impair_out={"delay": "10ms", "reorder": "5%"})
    with pytest.raises(NicImpairmentError, match="reorder: expected a delay as well"):
        reg.machines.set_nic("web", 0, impair_out={"delay": 0})


def test_a_new_nic_needs_a_switch_and_vde_nics_are_not_impaired(reg: Registry) -> None:
    reg.machines.create("web")
    with pytest.raises(MachineRuleError, match="web has no NIC in slot 0; a new NIC needs a "
                       "switch"):
        reg.machines.set_nic("web", 0, impair_out={"loss": "1%"})
    with pytest.raises(MachineRuleError, match="web NIC 0: a vde NIC shares its switch's one "
                       "VDE port"):
        reg.machines.set_nic("web", 0, "sw0", transport="vde", impair_out={"loss": "1%"})
    reg.machines.set_nic("web", 0, "sw0", impair_out={"loss": "1%"})
    with pytest.raises(MachineRuleError, match="vde NIC"):
        reg.machines.set_nic("web", 0, transport="vde")
    n = reg.machines.set_nic("web", 0, transport="vde", impair_out=Impairment())
    assert n.transport == "vde" and n.impair_out is None


def test_previous_version_database_is_migrated_nics_kept_perfect(tmp_path: Path) -> None:
    old = [m.__name__ for m in MIGRATIONS].index("_v5_nic_impairments")
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    conn.execute("BEGIN")
    for m in MIGRATIONS[:old]:
        m(conn)
    conn.execute(f"PRAGMA user_version = {old}")
    conn.execute("INSERT INTO machines (uuid, name, ostype, cpus, memory_mb, chipset, created) "
                 "VALUES ('u1', 'old', 'Other', 1, 256, 'piix3', '2026-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO nics (machine_id, slot, mac, switch, vlan, transport, switch_addr,"
                 " vm_addr, port_security) VALUES (1, 0, '52:54:00:00:00:01', 'sw0', 5, 'udp',"
                 " '127.0.0.1:40000', '127.0.0.1:40001', 1)")
    conn.execute("COMMIT")
    conn.close()
    with Registry.open(tmp_path) as reg:
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        (n,) = reg.machines.nics("old")
        assert (n.mac, n.vlan, n.port_security, n.impair_in, n.impair_out) == (
            "52:54:00:00:00:01", 5, True, None, None)
        n = reg.machines.set_nic("old", 0, impair_in={"delay": "20ms", "jitter": "2ms",
                                                       "distribution": "normal"})
        assert n.impair_in == Impairment(delay=0.02, jitter=0.002, distribution="normal")
