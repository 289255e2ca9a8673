"""VM NICs become switch ports: every transport the registry lets a NIC use
is a port kind the switch runs, at the address the registry allocated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from netstore.exports.ports import VDE_PORT, NicPorts, nic_port_config
from netstore.exports.watcher import RegistryView, read_view
from netstore.impairments import Impairment
from netstore.registry import Registry
from netstore.registry.nics import TRANSPORTS
from netstore.switch.limits import PORT_KINDS

ADDR = {"udp": "127.0.0.1:40100", "unixgram": "/tmp/ns-test.sock", "stream": "127.0.0.1:40101",
        "tap": "nstap0", "vde": "/tmp/ns-test.vde"}


def nic(transport: str, slot: int = 0, **kw) -> SimpleNamespace:
    return SimpleNamespace(slot=slot, transport=transport, vlan=7, mac="52:54:00:12:34:56",
                           port_security=True, switch="sw0", switch_addr=ADDR[transport],
                           vm_addr=None, **kw)


def test_the_registry_and_the_switch_know_the_same_transports():
    assert set(TRANSPORTS) == set(PORT_KINDS)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_transport_gives_a_port_of_its_kind(transport):
    port = nic_port_config("web", nic(transport))
    assert port.kind == transport and port.vlan == 7
    where = {"udp": port.local, "unixgram": port.local, "stream": port.listen,
             "tap": port.device, "vde": port.path}[transport]
    assert where == ADDR[transport]
    if transport == "vde":  # one port for every VM of the switch: bound to no MAC
        assert port.name == VDE_PORT and port.bound_mac is None
    else:
        assert port.name == "web-nic0" and port.bound_mac == "52:54:00:12:34:56"


def test_nics_of_a_missing_switch_wait_and_vde_shares_one_port():
    ports = NicPorts()
    view = RegistryView(generation=1, running=(), nics=(
        ("a", nic("vde")), ("b", nic("vde", slot=1)), ("c", nic("udp")),
        ("d", SimpleNamespace(**{**vars(nic("udp")), "switch": "nowhere"}))))
    assert ports.set_registry(view, {"sw0"}) == {"sw0"}
    assert [p.name for p in ports.ports["sw0"]] == [VDE_PORT, "c-nic0"]
    assert "nowhere" not in ports.ports
    # the same view again changes nothing
    assert ports.set_registry(view, {"sw0"}) == set()


def test_a_nics_impairments_reach_its_port_and_an_impairment_change_is_a_change():
    out = Impairment(delay=0.08, loss=0.01)
    port = nic_port_config("web", nic("udp", impair_in=None, impair_out=out))
    assert (port.impair_in, port.impair_out) == (None, out)
    port = nic_port_config("web", nic("tap", impair_in=Impairment(rate=10_000_000),
                                      impair_out=None))
    assert port.impair_in == Impairment(rate=10_000_000) and port.impair_out is None
    # the shared VDE port is never impaired (the registry refuses it too)
    port = nic_port_config("web", nic("vde", impair_in=out, impair_out=out))
    assert port.impair_in is None and port.impair_out is None
    ports = NicPorts()
    view = RegistryView(generation=1, running=(), nics=(("web", nic("udp", impair_out=out)),))
    assert ports.set_registry(view, {"sw0"}) == {"sw0"}
    # only the impairment changes: the switch gets the port's new spec
    slower = Impairment(delay=0.2, loss=0.01)
    view = RegistryView(generation=2, running=(), nics=(("web", nic("udp", impair_out=slower)),))
    assert ports.set_registry(view, {"sw0"}) == {"sw0"}
    (spec,) = ports.ports["sw0"]
    assert spec.impair_out == slower and spec.name == "web-nic0"


def test_registry_nics_carry_their_impairments_to_the_port(tmp_path):
    with Registry.open(tmp_path) as reg:
        reg.machines.create("web")
        reg.machines.set_nic("web", 1, "sw0", transport="stream",
                             impair_in={"duplicate": "1%"}, impair_out={"rate": "20mbit"})
    view = read_view(tmp_path)
    (vm, n), = view.nics
    port = nic_port_config(vm, n)
    assert port.name == "web-nic1" and port.listen == n.switch_addr
    assert port.impair_in == Impairment(duplicate=0.01)
    assert port.impair_out == Impairment(rate=20_000_000)
