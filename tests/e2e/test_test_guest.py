# tests/e2e/test_test_guest.py - the test guest (tools/make-test-guest, from
# Debian's kernel and busybox-static packages) boots on QEMU (TCG) with its
# disk served by netstore over iSCSI: it reads the disk (the SHA-256 of its
# first MiB on the console is the image's), writes to it from its shell (the
# bytes reach the image file), configures its NIC from the kernel command
# line, and powers off cleanly on the ACPI power button (QMP
# system_powerdown). The guest is the peer the VM tests of issue 13 boot.
"""The netstore test guest, booted against a live netstore target."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.e2e.guest import Guest, have_qemu
from tests.peers import write_pattern

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

IQN = "iqn.2026-12.org.netstore:guest"
SIZE = 64 << 20


def test_the_guest_reads_writes_and_powers_off(netstore_daemon, tmp_path):
    image = tmp_path / "guest.img"
    write_pattern(image, SIZE, seed=13)
    d = netstore_daemon(f"""
[iscsi]
[[iscsi.targets]]
iqn = "{IQN}"
luns = ["{image}"]
""")
    url = f"iscsi://127.0.0.1:{d.port}/{IQN}/0"
    g = Guest.booted(tmp_path, "g1", drives=[url], append="netstore.ip=192.0.2.10/24",
              extra=["-netdev", "user,id=n0,restrict=on", "-device",
                     "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"])
    try:
        g.wait_for("netstore-guest: g1: ready")
        first_mib = hashlib.sha256(image.read_bytes()[:1 << 20]).hexdigest()
        disk = g.wait_for("netstore-guest: g1: disk sda")
        assert f"{SIZE // 512} sectors sha256 {first_mib}" in disk, disk
        eth = g.wait_for("netstore-guest: g1: eth0")
        assert "192.0.2.10/24 52:54:00:12:34:56" in eth, eth
        mark = os.urandom(8).hex()
        out = g.run(f"echo {mark} | dd of=/dev/sda bs=512 seek=100 conv=fsync 2>/dev/null")
        assert out[-1] == "rc=0", out
        with open(image, "rb") as f:
            f.seek(100 * 512)
            assert f.read(17) == (mark + "\n").encode()
        answer = g.qmp("system_powerdown")
        assert "return" in answer, answer
        g.wait_for("netstore-guest: g1: poweroff", timeout=60)
        assert g.wait_exit(60) == 0
    finally:
        g.kill()
