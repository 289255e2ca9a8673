"""VM NICs of the registry on the daemon's switches (issue 5): each NIC gets a
port of its transport on its switch, created and removed with the NIC, and
two VMs' NICs talk through it (tools/vnic plays the VMs); a NIC's impairments
(issue 11) reach its port, and change while the VMs run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netstore.registry import Registry

pytestmark = pytest.mark.peers

VNIC = Path(__file__).resolve().parents[2] / "tools" / "vnic"


def ports(daemon) -> dict[str, dict]:
    out = daemon.cli("switch", "show", "sw0", "--ports", "--json")
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)["ports"]}


def wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_nics_get_switch_ports_and_vms_ping_each_other(netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "26000-26999")
    state = tmp_path / "netstore-state"
    with Registry.open(state) as reg:
        for vm in ("a", "b"):
            reg.machines.create(vm)
        nic_a = reg.machines.set_nic("a", 0, "sw0")
        nic_b = reg.machines.set_nic("b", 0, "sw0")
    daemon = netstore_daemon("")
    wait_for(lambda: {"a-nic0", "b-nic0"} <= set(ports(daemon)), "the NICs' ports appear")
    assert ports(daemon)["a-nic0"]["kind"] == "udp"
    listener = subprocess.Popen(
        [sys.executable, str(VNIC), "--local", nic_b.vm_addr, "--remote", nic_b.switch_addr,
         "--ip", "10.77.0.2/24", "--listen", "--duration", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        ping = subprocess.run(
            [sys.executable, str(VNIC), "--local", nic_a.vm_addr, "--remote", nic_a.switch_addr,
             "--ip", "10.77.0.1/24", "--ping", "10.77.0.2", "--count", "3", "--json",
             "--duration", "6"], capture_output=True, text=True, timeout=30)
        result = json.loads(ping.stdout.strip().splitlines()[-1])
        assert result["ping"]["received"] == 3, ping.stdout + ping.stderr
    finally:
        listener.kill()
        listener.wait()
    # a NIC added while the daemon runs gets its port within a second; removed, it goes
    with Registry.open(state) as reg:
        reg.machines.set_nic("a", 1, "sw0", transport="stream")
    wait_for(lambda: "a-nic1" in ports(daemon), "the new NIC's port appears")
    assert ports(daemon)["a-nic1"]["kind"] == "stream"
    with Registry.open(state) as reg:
        reg.machines.remove_nic("a", 1)
    wait_for(lambda: "a-nic1" not in ports(daemon), "the removed NIC's port goes")


def test_port_security_binds_the_nic_port_to_its_mac(netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "27000-27999")
    state = tmp_path / "netstore-state"
    with Registry.open(state) as reg:
        reg.machines.create("locked")
        nic = reg.machines.set_nic("locked", 0, "sw0", mac="52:54:00:aa:bb:01",
                                   port_security=True)
    assert nic.port_security
    daemon = netstore_daemon("")
    wait_for(lambda: "locked-nic0" in ports(daemon), "the NIC's port appears")
    assert ports(daemon)["locked-nic0"]["bound_mac"] == "52:54:00:aa:bb:01"
    # a guest spoofing another MAC on that port is dropped and counted
    spoof = subprocess.run(
        [sys.executable, str(VNIC), "--local", nic.vm_addr, "--remote", nic.switch_addr,
         "--mac", "52:54:00:66:66:66", "--ip", "10.78.0.1/24", "--ping", "10.78.0.2",
         "--count", "1", "--timeout", "0.3", "--json", "--duration", "3"],
        capture_output=True, text=True, timeout=30)
    assert spoof.returncode in (0, 1), spoof.stderr
    wait_for(lambda: ports(daemon)["locked-nic0"]["drops"].get("security", 0) > 0,
             "the spoofed frames are counted as security drops")


def _ping(nic, count: int, timeout: float = 1.0) -> dict:
    p = subprocess.run(
        [sys.executable, str(VNIC), "--local", nic.vm_addr, "--remote", nic.switch_addr,
         "--ip", "10.79.0.1/24", "--ping", "10.79.0.2", "--count", str(count),
         "--timeout", str(timeout), "--json", "--duration", "8"],
        capture_output=True, text=True, timeout=30)
    return json.loads(p.stdout.strip().splitlines()[-1])["ping"]


def test_nic_impairments_reach_the_switch_and_change_while_it_runs(netstore_daemon, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    state = tmp_path / "netstore-state"
    with Registry.open(state) as reg:
        for vm in ("a", "b"):
            reg.machines.create(vm)
        nic_a = reg.machines.set_nic("a", 0, "sw0", impair_in={"delay": "1ms"})
        nic_b = reg.machines.set_nic("b", 0, "sw0")
        reg.machines.start("a")
    daemon = netstore_daemon("")
    wait_for(lambda: {"a-nic0", "b-nic0"} <= set(ports(daemon)), "the NICs' ports appear")
    imp = ports(daemon)["a-nic0"]["impair"]
    assert imp["in"]["settings"] == {"delay": "1ms"} and imp["out"] is None
    listener = subprocess.Popen(
        [sys.executable, str(VNIC), "--local", nic_b.vm_addr, "--remote", nic_b.switch_addr,
         "--ip", "10.79.0.2/24", "--listen", "--duration", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        assert _ping(nic_a, 3)["received"] == 3
        # what b receives is lost: set from the command line while the VMs run
        out = daemon.cli("vm", "nic", "b", "--slot", "0", "--out", "--loss", "100%")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: (ports(daemon)["b-nic0"]["impair"]["out"] or {}).get("settings")
                 == {"loss": "100%"}, "b's port takes the loss")
        assert _ping(nic_a, 3, timeout=0.3)["received"] == 0
        assert ports(daemon)["b-nic0"]["impair"]["out"]["counters"]["loss"] >= 1
        out = daemon.cli("vm", "nic", "b", "--slot", "0", "--clear-impairments")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: ports(daemon)["b-nic0"]["impair"]["out"] is None,
                 "b's port is a perfect link again")
        assert _ping(nic_a, 3)["received"] == 3
    finally:
        listener.kill()
        listener.wait()
