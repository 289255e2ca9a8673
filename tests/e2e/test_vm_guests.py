# tests/e2e/test_vm_guests.py - two VMs created and started only with netstore
# commands (disk create, vm create/controller/attach/nic, vm modify --kernel/
# --initrd/--append with the test guest, vm start: the daemon runs their
# QEMU headless on TCG): each boots, reads its own disk over iSCSI from the
# daemon, writes to it, and they ping each other through the daemon's switch
# sw0 (a `netstore capture` of sw0, read by tshark, holds their echo requests
# and replies both ways). While they run, `vm control` changes them: a
# balloon (QMP's actual and the guest's MemTotal follow; `vm modify
# --balloon` of a running VM too), a hot-plugged vCPU
# the guest brings online, a NIC link cut (ping fails) and restored. `vm
# stop` powers both off through ACPI; their writes are in their disks and
# `vm list` shows poweroff.
"""Two test guests as registered VMs the daemon runs, changed while they run."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from netstore.disk.qcow2 import Qcow2Image
from tests.e2e.guest import HeadlessGuest, build_guest, have_qemu
from tests.harness import Cli, netstore_command

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

ADDRESSES = {"a": "192.0.2.1/24", "b": "192.0.2.2/24"}
TCG = '[vms]\naccel = "tcg"\n'


def make_vm(cli: Cli, vm: str, ip: str, kernel: Path, *, disk_type: str | None = None,
            cpus: int = 1) -> None:
    """A VM of the test guest with one 64 MiB disk on virtio-scsi and a NIC on sw0."""
    cli.ok("disk", "create", f"{vm}-disk", "--size", "64M",
           *(("--type", disk_type) if disk_type else ()))
    cli.ok("vm", "create", vm, "--memory", "256", "--cpus", str(cpus))
    cli.ok("vm", "controller", vm, "--add", "scsi0", "--bus", "virtio-scsi")
    cli.ok("vm", "attach", vm, "--controller", "scsi0", "--port", "0", "--disk", f"{vm}-disk")
    cli.ok("vm", "nic", vm, "--slot", "0", "--switch", "sw0")
    cli.ok("vm", "modify", vm, "--kernel", str(kernel / "vmlinuz"),
           "--initrd", str(kernel / "initrd.img"),
           "--append", f"console=ttyS0 panic=-1 quiet netstore.name={vm} netstore.ip={ip}")


def cli_for(tmp_path: Path, daemon) -> Cli:  # type: ignore[no-untyped-def]
    (tmp_path / "cli").mkdir(exist_ok=True)
    cli = Cli(tmp_path / "cli")
    cli.config.write_text(f'[daemon]\nstate_dir = "{daemon.state_dir}"\n'
                          f'[iscsi]\nportals = ["127.0.0.1:{daemon.port}"]\n' + TCG)
    return cli


def meminfo_kb(guest: HeadlessGuest) -> int:
    out = guest.run("grep MemTotal /proc/meminfo")
    assert out[-1] == "rc=0", out
    return int(next(ln for ln in out if ln.startswith("MemTotal")).split()[1])


def test_two_vms_started_by_netstore_boot_write_ping_change_and_power_off(
        netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    kernel = build_guest()
    daemon = netstore_daemon(TCG)
    cli = cli_for(tmp_path, daemon)
    guests = {vm: HeadlessGuest(daemon.state_dir, vm) for vm in ADDRESSES}
    try:
        for vm, ip in ADDRESSES.items():
            make_vm(cli, vm, ip, kernel, cpus=2)
            cli.ok("vm", "modify", vm, "--cpuhotplug", "on", "--unplugcpu", "1")
            started = cli.json("vm", "start", vm)
            assert started["state"] == "running" and started["accel"] == "tcg", started
        assert {m["name"]: m["state"] for m in cli.json("vm", "list")} == \
            {"a": "running", "b": "running"}
        zeros = hashlib.sha256(bytes(1 << 20)).hexdigest()
        marks = {}
        for vm, g in guests.items():
            g.wait_for(f"netstore-guest: {vm}: ready")
            disk = g.wait_for(f"netstore-guest: {vm}: disk sda")
            assert f"{(64 << 20) // 512} sectors sha256 {zeros}" in disk, disk
            marks[vm] = os.urandom(8).hex()
            out = g.run(f"echo {marks[vm]} | dd of=/dev/sda bs=512 seek=8 conv=fsync 2>/dev/null")
            assert out[-1] == "rc=0", out

        pcap = tmp_path / "sw0.pcap"
        capture = subprocess.Popen(netstore_command("capture", "sw0", "-w", str(pcap),
                                                    "--duration", "60"),
                                   cwd=cli.dir, env=cli.env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1)  # the capture has started
            out = guests["a"].run("ping -c 3 -W 5 192.0.2.2")
            assert out[-1] == "rc=0" and any("3 packets received" in ln for ln in out), out
            out = guests["b"].run("ping -c 3 -W 5 192.0.2.1")
            assert out[-1] == "rc=0", out
        finally:
            capture.send_signal(signal.SIGINT)
            capture.wait(30)
        if shutil.which("tshark"):  # the capture shows their ICMP, both ways
            seen = subprocess.run(["tshark", "-r", str(pcap), "-Y", "icmp", "-T", "fields",
                                   "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type"],
                                  capture_output=True, text=True, timeout=60).stdout.split("\n")
            flows = {tuple(ln.split("\t")) for ln in seen if ln}
            assert {("192.0.2.1", "192.0.2.2", "8"), ("192.0.2.2", "192.0.2.1", "0"),
                    ("192.0.2.2", "192.0.2.1", "8"), ("192.0.2.1", "192.0.2.2", "0")} <= flows, \
                flows

        # the NIC's link: cut, ping fails; restored, it works again
        cli.ok("vm", "control", "a", "nic", "0", "link", "off")
        out = guests["a"].run("ping -c 2 -W 1 192.0.2.2")
        assert out[-1] != "rc=0", out
        cli.ok("vm", "control", "a", "nic", "0", "link", "on")
        out = guests["a"].run("ping -c 3 -W 3 192.0.2.2")
        assert out[-1] == "rc=0", out

        # a balloon of 64 MB: QEMU's actual size and the guest's memory follow
        before = meminfo_kb(guests["a"])
        cli.ok("vm", "control", "a", "balloon", "64")
        deadline = time.monotonic() + 30
        while cli.json("vm", "info", "a")["runtime"]["balloon_actual_mb"] != 192:
            assert time.monotonic() < deadline, cli.json("vm", "info", "a")["runtime"]
            time.sleep(0.5)
        assert before - meminfo_kb(guests["a"]) >= 60 * 1024
        assert cli.json("vm", "info", "a")["balloon_mb"] == 64
        cli.ok("vm", "modify", "b", "--balloon", "32")  # as vm control does, while it runs
        deadline = time.monotonic() + 30
        while cli.json("vm", "info", "b")["runtime"]["balloon_actual_mb"] != 224:
            assert time.monotonic() < deadline, cli.json("vm", "info", "b")["runtime"]
            time.sleep(0.5)

        # vCPU 1 plugged: QEMU has it, the guest brings it online
        cli.ok("vm", "control", "a", "plugcpu", "1")
        assert cli.json("vm", "info", "a")["runtime"]["vcpus"] == 2
        out = guests["a"].run("sleep 1; echo 1 > /sys/devices/system/cpu/cpu1/online; "
                              "cat /sys/devices/system/cpu/cpu1/online /sys/devices/system/cpu/online")
        assert out[-3:] == ["1", "0-1", "rc=0"], out
        assert cli.json("vm", "info", "a")["plugged_cpus"] == [0, 1]
        err = cli.refused("vm", "control", "a", "unplugcpu", "0")
        assert "vCPU 0" in err

        for vm in ADDRESSES:  # the ACPI power button, and the guest powers off
            assert cli.json("vm", "stop", vm, "--timeout", "60")["state"] == "poweroff"
            guests[vm].wait_for(f"netstore-guest: {vm}: poweroff", timeout=5)
        assert {m["name"]: m["state"] for m in cli.json("vm", "list")} == \
            {"a": "poweroff", "b": "poweroff"}
        for vm in ADDRESSES:
            path = Path(cli.json("disk", "info", f"{vm}-disk")["location"])
            with Qcow2Image(str(path), read_only=True) as img:
                assert img.pread(8 * 512, 17) == (marks[vm] + "\n").encode()
    finally:
        for g in guests.values():
            g.close()
