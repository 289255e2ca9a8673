"""VMs of the registry served over iSCSI (issue 5): each running VM is target
<base-iqn>:vm.<name>, its LUNs its attached media in controller/port order;
the daemon follows `vm start`/`stop`/`attach` within a second."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netstore.registry import MediumBusyError, Registry
from tests.e2e.rawiscsi import Closed, Conn

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) missing"),
]

BASE = "iqn.2026-11.org.netstore"
MiB = 1 << 20


def url(port: int, vm: str, lun: int) -> str:
    return f"iscsi://127.0.0.1:{port}/{BASE}:vm.{vm}/{lun}"


def qemu_io(u: str, *commands: str) -> subprocess.CompletedProcess:
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    return subprocess.run([*argv, u], capture_output=True, text=True, timeout=60)


def ok(p: subprocess.CompletedProcess) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "fail" not in out.lower(), out


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def target_listed(port: int, vm: str) -> bool:
    out = subprocess.run(["iscsi-ls", f"iscsi://127.0.0.1:{port}"], capture_output=True,
                         text=True, timeout=20).stdout
    return f"{BASE}:vm.{vm} " in out


@pytest.fixture
def lab(netstore_daemon, tmp_path):
    state = tmp_path / "netstore-state"
    with Registry.open(state) as reg:
        base = reg.create("base", 32 * MiB, format="qcow2", type="multiattach")
        imm = reg.create("scratch", 32 * MiB, format="qcow2", type="immutable")
        reg.create("sys", 32 * MiB, format="qcow2")
        for vm in ("web1", "web2"):
            reg.machines.create(vm, cpus=1, memory_mb=256)
            reg.machines.add_controller(vm, "sata0", "sata")
            reg.machines.attach(vm, "sata0", 0, "base")
        reg.machines.attach("web1", "sata0", 1, "scratch")
        reg.machines.attach("web1", "sata0", 2, "sys")
        reg.machines.attach("web2", "sata0", 2, "sys")
    daemon = netstore_daemon(f'[iscsi]\nbase_iqn = "{BASE}"\n')
    return daemon, state, base, imm


def test_two_vms_share_a_multiattach_base(lab):
    daemon, state, base, _ = lab
    before = sha(base.location)
    with Registry.open(state) as reg:
        reg.machines.start("web1")
        reg.machines.detach("web2", "sata0", 2)  # sys is web1's (normal: one VM at a time)
        reg.machines.start("web2")
    wait_for(lambda: target_listed(daemon.port, "web2"), "web2's target appears")
    ok(qemu_io(url(daemon.port, "web1", 0), "write -P 0xa1 1M 64k"))
    ok(qemu_io(url(daemon.port, "web2", 0), "write -P 0xb2 1M 64k"))
    ok(qemu_io(url(daemon.port, "web1", 0), "read -P 0xa1 1M 64k"))
    ok(qemu_io(url(daemon.port, "web2", 0), "read -P 0xb2 1M 64k"))
    assert sha(base.location) == before


def test_immutable_disk_keeps_data_over_reboot_not_over_power_cycle(lab):
    daemon, state, _, imm = lab
    before = sha(imm.location)
    with Registry.open(state) as reg:
        reg.machines.start("web1")
    wait_for(lambda: target_listed(daemon.port, "web1"), "web1's target appears")
    ok(qemu_io(url(daemon.port, "web1", 1), "write -P 0x5c 0 64k"))
    # a guest reboot is a logout and a new login: the data stays
    ok(qemu_io(url(daemon.port, "web1", 1), "read -P 0x5c 0 64k"))
    with Registry.open(state) as reg:
        reg.machines.stop("web1")
    wait_for(lambda: not target_listed(daemon.port, "web1"), "web1's target goes")
    with Registry.open(state) as reg:
        reg.machines.start("web1")
    wait_for(lambda: target_listed(daemon.port, "web1"), "web1's target is back")
    ok(qemu_io(url(daemon.port, "web1", 1), "read -P 0x00 0 64k"))
    assert sha(imm.location) == before


def test_normal_disk_refused_for_a_second_running_vm(lab):
    _, state, _, _ = lab
    with Registry.open(state) as reg:
        reg.machines.start("web1")
        with pytest.raises(MediumBusyError, match="sys.*web1"):
            reg.machines.start("web2")


def test_stop_ends_sessions_and_hot_attach_reports_new_lun(lab):
    daemon, state, _, _ = lab
    with Registry.open(state) as reg:
        reg.machines.start("web1")
        reg.create("extra", 8 * MiB, format="raw")
    wait_for(lambda: target_listed(daemon.port, "web1"), "web1's target appears")
    c = Conn.connect(daemon.port)
    try:
        c.login(f"{BASE}:vm.web1", initiator="iqn.2026-11.org.test:guest")
        c.command(bytes(6))  # power-on unit attention
        assert c.command(bytes(6))[0] == 0
        with Registry.open(state) as reg:
            reg.machines.attach("web1", "sata0", 3, "extra")
        # within a second the LUN map changes: UNIT ATTENTION 3F/0E
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline and status == 0:
            time.sleep(0.2)
            status, _ = c.command(bytes(6))
        assert status == 0x02
        report_luns = bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
        status, data = c.command(report_luns, read=256)
        assert status == 0 and int.from_bytes(data[:4], "big") == 4 * 8
        with Registry.open(state) as reg:
            reg.machines.stop("web1")
        # the powered-off VM's session ends
        with pytest.raises((Closed, OSError)):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                c.command(bytes(6), timeout=2)
                time.sleep(0.2)
    finally:
        c.close()


def test_qemu_args_iscsi_urls_reach_the_right_luns(netstore_daemon, tmp_path):
    import json

    from netstore.disk.images import open_image

    state = tmp_path / "netstore-state"
    patterns = {"d0": 0x61, "d1": 0x62, "d2": 0x63}
    with Registry.open(state) as reg:
        reg.machines.create("app", cpus=2, memory_mb=512)
        reg.machines.add_controller("app", "sata0", "sata")
        reg.machines.add_controller("app", "scsi0", "scsi")
        for name, pattern in patterns.items():
            m = reg.create(name, 8 * MiB, format="qcow2")
            img = open_image(m.location)
            img.pwrite(0, bytes([pattern]) * 4096)
            img.close()
        # attached out of order: the LUN order is controller, then port
        reg.machines.attach("app", "scsi0", 0, "d2")
        reg.machines.attach("app", "sata0", 1, "d1")
        reg.machines.attach("app", "sata0", 0, "d0")
        reg.machines.set_nic("app", 0, "sw0")
    daemon = netstore_daemon(f'[iscsi]\nbase_iqn = "{BASE}"\nportals = ["127.0.0.1:{{port}}"]\n')
    with Registry.open(state) as reg:
        reg.machines.start("app")
    wait_for(lambda: target_listed(daemon.port, "app"), "app's target appears")
    out = daemon.cli("vm", "qemu-args", "app", "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout)
    drives = [a for a in argv if a.startswith("file=iscsi://")]
    devices = [argv[i + 1] for i, a in enumerate(argv[:-1])
               if a == "-device" and "drive=disk" in argv[i + 1]]
    assert len(drives) == 3 and len(devices) == 3
    assert devices[0].endswith("bus=sata0.0") and devices[1].endswith("bus=sata0.1")
    assert "scsi-hd" in devices[2] and "bus=scsi0.0" in devices[2]
    for drive, want in zip(drives, ("d0", "d1", "d2"), strict=True):
        u = drive.split(",")[0].removeprefix("file=")
        ok(qemu_io(u, f"read -P {patterns[want]:#x} 0 4k"))
    assert any(a.startswith("dgram,id=net0,") for a in argv)
    assert "-smp" in argv and argv[argv.index("-smp") + 1] == "2"
