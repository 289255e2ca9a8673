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
    assert cli.ok("vm", "start", "web1", "--type", "external") == "web1: running\n"
    err = cli.refused("vm", "start", "web2", "--type", "external")
    assert err == ("netstore: disk base.qcow2 is attached to running VM web1; normal disks run "
                   "in one VM at a time\n")
    assert cli.json("vm", "info", "web2")["power"] == "poweroff"
    cli.ok("vm", "stop", "web1")
    cli.ok("vm", "start", "web2", "--type", "external")
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
    cli.ok("vm", "start", "vm1", "--type", "external")
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
    err = cli.refused("vm", "start", "nope", "--type", "external")
    assert err == "netstore: no VM 'nope' is registered (see: netstore vm list)\n"


def test_nic_impairments(cli: Cli) -> None:
    cli.ok("vm", "create", "web")
    # neither --in nor --out: both directions, as a link's two ends
    nic = cli.json("vm", "nic", "web", "--slot", "0", "--switch", "sw0", "--delay", "80ms",
                   "--loss", "1%")
    assert nic["impair_in"] == nic["impair_out"] == {"delay": "80ms", "loss": "1%"}
    # merged over the NIC's settings; an existing NIC keeps its switch
    out = cli.ok("vm", "nic", "web", "--slot", "0", "--out", "--jitter", "5ms",
                 "--distribution", "normal", "--rate", "10mbit", "--overhead", "14")
    assert out.endswith("; impaired in: delay 80ms loss 1%, out: delay 80ms jitter 5ms "
                        "distribution normal loss 1% rate 10mbit overhead 14\n"), out
    nic = cli.json("vm", "nic", "web", "--slot", "0", "--in", "--loss", "0",
                   "--gemodel", "1%,30%", "--duplicate", "2%", "--corrupt", "0.1%",
                   "--reorder", "25%", "--gap", "5", "--limit", "100",
                   "--delay-correlation", "0", "--loss-correlation", "0")
    assert nic["switch"] == "sw0"
    assert nic["impair_in"] == {
        "delay": "80ms", "gemodel": {"p": "1%", "r": "30%", "bad_loss": "100%",
                                     "good_loss": "0%"},
        "duplicate": "2%", "corrupt": "0.1%", "reorder": "25%", "gap": 5, "limit": 100}
    info = cli.json("vm", "info", "web")["nics"][0]
    assert info["impair_in"] == nic["impair_in"]
    assert info["impair_out"]["rate"] == "10mbit"
    text = cli.ok("vm", "info", "web")
    assert "impaired in (VM sends)" in text and "impaired out (VM receives)" in text
    assert "delay 80ms duplicate 2% corrupt 0.1% reorder 25% gap 5 limit 100 " \
           "gemodel 1%,30%,100%,0%" in text
    assert "delay 80ms jitter 5ms distribution normal loss 1% rate 10mbit overhead 14" in text
    # bad values: exit 2, one line naming the flag; nothing changed
    for args, message in (
            (("--loss", "120%"), '--loss: expected a percentage from "0%" to "100%", got '
                                 '"120%"'),
            (("--delay", "80"), '--delay: expected a time like "80ms", "500us" or "1s", got '
                                '"80"'),
            (("--out", "--gemodel", "0%"), '--gemodel p: expected more than 0%, got "0%"'),
            (("--limit", "many"), '--limit: expected an integer in 1..1000000, got "many"'),
            (("--out", "--loss", "1%", "--gemodel", "1%"),
             "--gemodel: expected either loss (random) or gemodel, not both"),
            (("--clear-impairments", "--reorder", "5%"), "--reorder: expected a delay as well")):
        p = cli.run("vm", "nic", "web", "--slot", "0", *args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith(f"netstore: {message}"), (args, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stdout == ""
    assert cli.json("vm", "info", "web")["nics"][0]["impair_in"] == nic["impair_in"]
    assert cli.run("vm", "nic", "web", "--slot", "0", "--in").returncode == 2  # nothing to set
    # a running VM's NIC may change its impairments; clearing one direction
    cli.ok("vm", "start", "web", "--type", "external")
    nic = cli.json("vm", "nic", "web", "--slot", "0", "--in", "--clear-impairments")
    assert nic["impair_in"] is None and nic["impair_out"]["delay"] == "80ms"
    nic = cli.json("vm", "nic", "web", "--slot", "0", "--clear-impairments", "--rate", "1mbit")
    assert nic["impair_in"] == nic["impair_out"] == {"rate": "1mbit"}
    out = cli.ok("vm", "nic", "web", "--slot", "0", "--clear-impairments")
    assert "impaired" not in out
    assert "impaired" not in cli.ok("vm", "nic", "web", "--slot", "0", "--vlan", "5")
    # a new NIC needs a switch; a vde NIC cannot be impaired alone
    err = cli.refused("vm", "nic", "web", "--slot", "1", "--loss", "1%")
    assert err == "netstore: web has no NIC in slot 1; a new NIC needs a switch to plug into\n"
    err = cli.refused("vm", "nic", "web", "--slot", "1", "--switch", "sw0", "--transport",
                      "vde", "--loss", "1%")
    assert "a vde NIC shares its switch's one VDE port" in err
