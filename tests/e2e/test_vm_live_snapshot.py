# tests/e2e/test_vm_live_snapshot.py - a live snapshot of a VM the daemon
# runs, while its guest writes a counter to its disk every 100 ms (fsync'd,
# then printed on the console): the guest never stops for more than 2 s; the
# snapshot's disk layer holds a counter value the guest wrote, no older than
# the last one it printed before the snapshot began (a consistent prefix);
# after `vm stop --force`, `restore` and `start`, the guest resumes from the
# saved memory (no boot) and its console continues the count right after
# the snapshot's value. A disk-only snapshot (--no-memory) boots afresh.
"""Live snapshots: memory and disks of a running guest, resumed after restore."""

from __future__ import annotations

import re
import threading
import time

import pytest

from netstore.disk.images import open_image
from tests.e2e.guest import HeadlessGuest, build_guest, have_qemu
from tests.e2e.test_vm_guests import TCG, cli_for, make_vm

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64 (qemu-system-x86) missing"),
]

COUNTER_SECTOR = 100
COUNT = re.compile(r"^count (\d+)$")
LOOP = ("i=0; while true; do i=$((i+1)); echo $i | dd of=/dev/sda bs=512 "
        f"seek={COUNTER_SECTOR} conv=fsync 2>/dev/null; echo count $i; sleep 0.1; done")


class Counter:
    """Follows the guest's console: when each `count N` line first showed."""

    def __init__(self, guest: HeadlessGuest) -> None:
        self.guest = guest
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        known = 0
        while not self._stop.is_set():
            lines = self.guest.console_lines()
            now = time.monotonic()
            for line in lines[known:-1]:  # the last line may be partly written
                m = COUNT.match(line.strip())
                if m:
                    self.seen.append((now, int(m.group(1))))
            known = max(known, len(lines) - 1)
            time.sleep(0.02)

    def last(self) -> int:
        return self.seen[-1][1] if self.seen else 0

    def wait_past(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.last() <= n:
            assert time.monotonic() < deadline, f"the count stayed at {self.last()}"
            time.sleep(0.05)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def counter_on_disk(cli, layer: str) -> int:  # type: ignore[no-untyped-def]
    location = cli.json("disk", "info", layer)["location"]
    with open_image(location, read_only=True) as img:
        data = img.pread(COUNTER_SECTOR * 512, 16)
    return int(data.split(b"\n")[0])


def test_live_snapshot_resumes_where_it_was(netstore_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTORE_NIC_PORTS", "28000-28999")
    daemon = netstore_daemon(TCG)
    cli = cli_for(tmp_path, daemon)
    make_vm(cli, "live", "192.0.2.1/24", build_guest())
    g = HeadlessGuest(daemon.state_dir, "live")
    try:
        cli.ok("vm", "start", "live")
        g.wait_for("netstore-guest: live: ready")
        counter = Counter(g)
        g.say(LOOP)
        counter.wait_past(10)
        before = counter.last()
        snap = cli.json("vm", "snapshot", "live", "take", "s1")
        counter.wait_past(counter.last() + 10)
        seen = counter.stop()
        assert snap["state_file"] and snap["paused_s"] < 2.0, snap
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
        assert max(gaps) < 2.0, max(gaps)
        assert [n for _, n in seen] == list(range(seen[0][1], seen[-1][1] + 1))  # no count lost

        # the snapshot's layer: a value the guest wrote, not older than the
        # last one it printed before the snapshot began
        layer = cli.json("vm", "snapshot", "live", "list")[0]["disks"]["live-disk"]
        k = counter_on_disk(cli, layer)
        assert before <= k <= seen[-1][1], (before, k)

        cli.ok("vm", "stop", "live", "--timeout", "0", "--force")
        cli.ok("vm", "snapshot", "live", "restore", "s1")
        assert cli.json("vm", "list")[0]["state"] == "saved"
        g.restarted()
        cli.ok("vm", "start", "live")
        first = int(COUNT.match(g.wait_for("count ", timeout=60).strip()).group(1))  # type: ignore[union-attr]
        assert k <= first <= k + 2, (k, first)
        assert not any("netstore-guest: live: up" in ln for ln in g.console_lines())
        assert cli.json("vm", "list")[0]["state"] == "running"

        # disks only: crash-consistent, and the next start after restore boots
        snap = cli.json("vm", "snapshot", "live", "take", "s2", "--no-memory")
        assert snap["state_file"] is None
        cli.ok("vm", "stop", "live", "--timeout", "0", "--force")
        cli.ok("vm", "snapshot", "live", "restore", "s2")
        assert cli.json("vm", "list")[0]["state"] == "poweroff"
        g.restarted()
        cli.ok("vm", "start", "live")
        g.wait_for("netstore-guest: live: up")
        cli.ok("vm", "stop", "live", "--timeout", "0", "--force")
    finally:
        g.close()
