# tests/test_cli_vm.py - `netstore vm ...` and `netstore host report` as a
# user runs them: subprocesses on a state directory in tmp_path.  Refusals
# are one line and exit 1, warnings go to stderr with exit 0, usage errors
# exit 2; issue 5 acceptance 3 (a normal disk in two VMs) by hand.
"""The netstore vm and host commands."""

from __future__ import annotations

import os

import pytest

from tests.harness import Cli


@pytest.fixture
def cli(tmp_path):  # type: ignore[no-untyped-def]
    return Cli(tmp_path)


def test_acceptance_3_normal_disk_in_two_vms(cli: Cli) -> None:
    cli.ok("disk", "create", "base.qcow2", "--size", "16M")
    for vm in ("web1", "web2"):
        cli.ok("vm", "create", vm, "--memory", "256")
        cli.ok("vm", "controller", vm, "--add", "sata0", "--bus", "sata")
        out = cli.ok("vm", "attach", vm, "--controller", "sata0", "--port", "0",
                     "--disk", "base.qcow2")
        assert out == f"{vm}: base.qcow2 (normal hdd) attached at sata0:0:0\n"
    assert cli.ok("vm", "start", "web1") == "web1: running\n"
    err = cli.refused("vm", "start", "web2")
    assert err == ("netstore: disk base.qcow2 is attached to running VM web1; normal disks run "
                   "in one VM at a time\n")
    assert cli.json("vm", "info", "web2")["power"] == "poweroff"
    cli.ok("vm", "stop", "web1")
    cli.ok("vm", "start", "web2")
    listing = cli.ok("vm", "list")
    assert "web1" in listing and "poweroff" in listing and "running" in listing


def test_create_modify_info_json(cli: Cli) -> None:
    cores = os.cpu_count() or 1
    p = cli.run("vm", "create", "big", "--cpus", str(cores + 1))
    if cores + 1 <= 32:
        assert p.returncode == 0 and p.stderr == (
            f"netstore: warning: big: {cores + 1} vCPUs is more than this host's {cores} cores; "
            "oversubscribed vCPUs run slower\n")
    err = cli.refused("vm", "create", "huge", "--cpus", "33")
    assert err == "netstore: huge: 33 vCPUs is more than 32, the most a VM has\n"
    cli.ok("vm", "create", "vm1", "--memory", "1024", "--ostype", "Debian_64")
    d = cli.json("vm", "modify", "vm1", "--cpu-cap", "50", "--memory-range", "512:2048",
                 "--pagefusion", "on", "--cpuhotplug", "on")
    assert (d["cpu_cap"], d["memory_min_mb"], d["memory_mb"], d["page_fusion"]) == \
        (50, 512, 2048, True)
    assert d["plugged_cpus"] == [0]
    err = cli.refused("vm", "modify", "vm1", "--unplugcpu", "0")
    assert err == "netstore: vCPU 0 of vm1 can never be unplugged\n"
    err = cli.refused("vm", "modify", "vm1", "--balloon", "100")
    assert err == "netstore: vm1 is powered off; a balloon is set only while the VM runs\n"
    cli.ok("vm", "start", "vm1")
    assert cli.json("vm", "modify", "vm1", "--balloon", "1024")["balloon_mb"] == 1024
    err = cli.refused("vm", "modify", "vm1", "--pagefusion", "off")
    assert "page fusion can be changed only while it is powered off" in err
    report = cli.json("host", "report")
    assert report["vcpus"] == 1 and report["memory_committed_mb"] == 2048
    assert report["balloons_mb"] == 1024 and report["host_cores"] == cores
    text = cli.ok("host", "report")
    assert "vCPUs:" in text and "memory:" in text and "vm1" in text
    info = cli.ok("vm", "info", "vm1")
    for word in ("vm1", "running", "512..2048 MB", "50 %", "Debian_64"):
        assert word in info
    assert cli.run("vm", "modify", "vm1").returncode == 2  # nothing to change
    assert cli.run("vm", "create").returncode == 2
    args = cli.ok("vm", "qemu-args", "vm1")
    assert "-name vm1" in args and "-smp cpus=1,maxcpus=" in args


def test_controllers_attach_nics_snapshots_remove(cli: Cli) -> None:
    cli.ok("vm", "create", "vm")
    cli.ok("disk", "create", "d", "--size", "4M")
    out = cli.ok("vm", "controller", "vm", "--add", "ide0", "--bus", "ide", "--chipset", "ich6")
    assert out == "vm: controller ide0 (ide, ICH6)\n"
    err = cli.refused("vm", "controller", "vm", "--add", "scsi0", "--bus", "scsi",
                      "--chipset", "AHCI")
    assert err == ("netstore: SCSI controllers have no chipset 'AHCI' (one of LsiLogic, "
                   "BusLogic)\n")
    err = cli.refused("vm", "attach", "vm", "--controller", "ide0", "--port", "2", "--disk", "d")
    assert err == ("netstore: ide0 port 2 device 0 is beyond the bus limit: IDE has 2 ports x 2 "
                   "devices (4 devices): ports 0..1, devices 0..1\n")
    cli.ok("vm", "attach", "vm", "--controller", "ide0", "--port", "1", "--device", "1",
           "--disk", "d")
    assert cli.json("disk", "info", "d")["used_by"] == [
        {"machine": "vm", "via": "attached at ide0:1:1"}]
    err = cli.refused("disk", "remove", "d")
    assert err == ("netstore: d is used by machine vm (attached at ide0:1:1); a medium in use "
                   "cannot be removed\n")
    nic = cli.json("vm", "nic", "vm", "--slot", "0", "--switch", "sw0", "--vlan", "10")
    assert nic["mac"].startswith("52:54:00:") and nic["transport"] == "udp"
    assert nic["switch_addr"].startswith("127.0.0.1:") and nic["vm_addr"].startswith("127.0.0.1:")
    err = cli.refused("vm", "nic", "vm", "--slot", "1", "--switch", "sw0", "--mac", nic["mac"])
    assert err == (f"netstore: MAC {nic['mac']} is taken by NIC 0 of VM vm; MACs are unique "
                   "across the registry\n")
    err = cli.refused("vm", "nic", "vm", "--slot", "1", "--switch", "sw0", "--mac",
                      "33:33:00:00:00:01")
    assert "multicast address" in err
    assert cli.run("vm", "nic", "vm", "--slot", "1", "--switch", "sw0",
                   "--transport", "ipx").returncode == 2
    out = cli.ok("vm", "snapshot", "vm", "take", "s1")
    assert out == "vm: snapshot s1 taken (d)\n"
    assert "* s1" in cli.ok("vm", "snapshot", "vm", "list")
    cli.ok("vm", "snapshot", "vm", "restore", "s1")
    err = cli.refused("vm", "remove", "vm")
    assert err.startswith("netstore: vm has snapshots (s1); delete them first")
    cli.ok("vm", "snapshot", "vm", "delete", "s1")
    cli.ok("vm", "detach", "vm", "--controller", "ide0", "--port", "1", "--device", "1")
    assert cli.ok("vm", "remove", "vm") == "removed VM vm\n"
    assert cli.ok("vm", "list") == "no VMs registered (netstore vm create NAME)\n"
    cli.ok("disk", "remove", "d", "--delete")
    err = cli.refused("vm", "start", "nope")
    assert err == "netstore: no VM 'nope' is registered (see: netstore vm list)\n"
