# tests/e2e/test_multihost_partition.py - a host cut off from the shared
# registry fences itself before the others fence it.  Two daemons on one
# PostgreSQL, each logging in as a role of its own; host1 runs an external
# VM's disks (active/optimized).  Then host1's role may no longer log in:
# - host1, unable to renew its lease, makes its path unavailable (an
#   initiator on it is told ASYMMETRIC ACCESS STATE CHANGED) before host2
#   fences it and takes the disk over (active/optimized there; host1, down,
#   is no longer one of the unit's port groups);
# - host1's role may log in again: host1 learns it was fenced, joins with a
#   new epoch, and serves its path as standby.
"""Self-fencing of a host that loses the shared registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.e2e.test_multihost import config, ok, wait_until
from tests.e2e.test_multipath import AO, BASE_IQN, STANDBY, Lun, session
from tests.harness import Daemons

pytestmark = [pytest.mark.peers, pytest.mark.slow]

UNAVAILABLE = 3


def test_a_host_without_the_registry_fences_itself(tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    db = postgres_server.fresh_db()
    for role in ("nshost1", "nshost2"):
        postgres_server.sql(f"DO $$ BEGIN CREATE ROLE {role} SUPERUSER LOGIN; "
                            "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    daemons = Daemons(tmp_path, shared_state=False)
    try:
        d1 = daemons(config(postgres_server.url(db, "nshost1"), "host1"), name="host1")
        d2 = daemons(config(postgres_server.url(db, "nshost2"), "host2"), name="host2")
        ok(d1, "disk", "create", "nd", "--size", "16M", "--format", "raw")
        ok(d1, "vm", "create", "ext", "--memory", "64")
        ok(d1, "vm", "controller", "ext", "--add", "scsi0", "--bus", "virtio-scsi")
        ok(d1, "vm", "attach", "ext", "--controller", "scsi0", "--port", "0", "--disk", "nd")
        ok(d1, "vm", "start", "ext", "--type", "external", "--host", "host1")
        target = f"{BASE_IQN}:vm.ext"
        g1, g2 = (h["group"] for h in json.loads(ok(d1, "host", "list", "--json")))

        async def groups(port: int) -> list[tuple[int, int, bool]]:
            s = await session(port, target)
            try:
                return await Lun(s, 0).rtpg()
            finally:
                await s.stream.aclose()

        def sees(port: int, want: list[tuple[int, int, bool]]) -> bool:
            try:
                return trio.run(groups, port) == want
            except (AssertionError, OSError, trio.TooSlowError):
                return False

        wait_until(lambda: sees(d1.port, [(g1, AO, True), (g2, STANDBY, False)]), 30,
                   "host1 serves ext's disk as active/optimized")
        postgres_server.sql("ALTER ROLE nshost1 NOLOGIN")  # host1 loses the registry
        # its own path first: unavailable, while host2 has not fenced it yet
        wait_until(lambda: sees(d1.port, [(g1, UNAVAILABLE, True), (g2, STANDBY, False)]), 15,
                   "host1 fences itself")
        # a host that is down is no group of the unit's any more
        wait_until(lambda: sees(d2.port, [(g2, AO, True)]), 20,
                   "host2 fences host1 and takes ext's disk over")
        assert "could not renew its lease" in d1.stderr()
        postgres_server.sql("ALTER ROLE nshost1 LOGIN")  # back: fenced, it joins again
        wait_until(lambda: sees(d1.port, [(g1, STANDBY, False), (g2, AO, True)]), 30,
                   "host1 joins again and serves a standby path")
        assert "was fenced" in d1.stderr()
    finally:
        daemons.shutdown_all()
