# tests/e2e/test_vm_guests.py - two VMs made only with netstore commands
# (disk create, vm create/controller/attach/nic, vm modify --kernel/--initrd/
# --append with the test guest, vm start) run on QEMU from `vm qemu-args
# --json` (the test starts QEMU; netstore does not start it yet): each boots,
# reads its own disk over iSCSI from the daemon, writes to it, and they ping
# each other through the daemon's switch sw0 (a `netstore capture` of sw0,
# read by tshark, holds their echo requests and replies both ways); the ACPI
# power button powers both off, their writes are in their disks, and `vm
# stop` leaves them off.
"""Two test guests as registered VMs, on one netstore daemon."""

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
from tests.e2e.guest import Guest, build_guest, have_qemu
from tests.harness import Cli, netstore_command

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

ADDRESSES = {"a": "192.0.2.1/24", "b": "192.0.2.2/24"}


def test_two_registered_vms_boot_write_ping_and_power_off(netstore_daemon, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    kernel = build_guest()
    daemon = netstore_daemon("")
    (tmp_path / "cli").mkdir()
    cli = Cli(tmp_path / "cli")
    cli.config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "netstore-state"}"\n'
                          f'[iscsi]\nportals = ["127.0.0.1:{daemon.port}"]\n')
    guests: dict[str, Guest] = {}
    try:
        for vm, ip in ADDRESSES.items():
            cli.ok("disk", "create", f"{vm}-disk", "--size", "64M")
            cli.ok("vm", "create", vm, "--memory", "256")
            cli.ok("vm", "controller", vm, "--add", "scsi0", "--bus", "virtio-scsi")
            cli.ok("vm", "attach", vm, "--controller", "scsi0", "--port", "0",
                   "--disk", f"{vm}-disk")
            cli.ok("vm", "nic", vm, "--slot", "0", "--switch", "sw0")
            cli.ok("vm", "modify", vm, "--kernel", str(kernel / "vmlinuz"),
                   "--initrd", str(kernel / "initrd.img"),
                   "--append", f"console=ttyS0 panic=-1 quiet netstore.name={vm} "
                               f"netstore.ip={ip}")
            cli.ok("vm", "start", vm)
        for vm in ADDRESSES:
            # the daemon follows `vm start` within a second: its worker serves the target
            daemon.wait_for_log(f"target iqn.2026-11.org.netstore:vm.{vm}: 1 LUN(s)",
                                timeout=10)
            guests[vm] = Guest(tmp_path, vm, cli.json("vm", "qemu-args", vm))
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
        for g in guests.values():
            assert "return" in g.qmp("system_powerdown")
        for vm, g in guests.items():
            g.wait_for(f"netstore-guest: {vm}: poweroff", timeout=60)
            assert g.wait_exit(60) == 0
            cli.ok("vm", "stop", vm)
        listing = cli.json("vm", "list")
        assert {m["name"]: m["power"] for m in listing} == {"a": "poweroff", "b": "poweroff"}
        for vm in ADDRESSES:
            path = Path(cli.json("disk", "info", f"{vm}-disk")["location"])
            with Qcow2Image(str(path), read_only=True) as img:
                assert img.pread(8 * 512, 17) == (marks[vm] + "\n").encode()
    finally:
        for g in guests.values():
            g.kill()
