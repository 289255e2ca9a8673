# tests/e2e/test_multipath.py - one LU through two hosts' portals (ALUA):
# two daemons on one PostgreSQL registry both export a running VM's target.
# - the same NAA through both portals, each naming its own port group and
#   relative port (VPD 83h, over the wire; libiscsi's iscsi-inq agrees on the
#   shareable disk, whose non-owner path is active/non-optimized);
# - REPORT TARGET PORT GROUPS lists both hosts: the VM's host active/optimized
#   and preferred, the other standby for a normal disk (I/O there refused
#   02/04/0B);
# - kill -9 of the owner's daemon: after the lease the other host fences it,
#   takes the VM's writes over, tells its session ASYMMETRIC ACCESS STATE
#   CHANGED, and serves as active/optimized; qemu-io reading through it finds
#   every write acknowledged through the dead host (a qcow2 disk: the new
#   owner reopens the image, its standby copy of the metadata is stale), and
#   the persistent reservation made through the dead host holds there (it
#   lives in the shared registry).
"""Multipath across hosts: ALUA port groups of one LU on two daemons."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import trio

from netstore.iscsi import pdu as P
from tests.e2e.test_multihost import LEASE_S, config, ok, wait_until
from tests.harness import Daemons
from tests.iscsi.client import Client
from tests.iscsi.initiator import bhs, wire

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BASE_IQN = "iqn.2026-11.org.netstore"
AO, AN, STANDBY = 0, 1, 2
PR_KEY, WRITE_EXCLUSIVE = 0x1234, 1


class Lun:
    """SCSI commands to one LUN over a logged-in Client session."""

    def __init__(self, client: Client, lun: int) -> None:
        self.c, self.lun = client, lun

    async def cmd(self, cdb: bytes, read: int = 0) -> tuple[int, bytes, bytes]:
        """(status, data, sense) of one command."""
        c = self.c
        c.itt += 1
        b = bhs(P.OP_SCSI_CMD, 0x81 | (0x40 if read else 0), itt=c.itt, f20=read, f24=c.cmdsn)
        b[8:10] = self.lun.to_bytes(2, "big")
        b[32:32 + len(cdb)] = cdb
        c.cmdsn += 1
        await c.stream.send_all(wire(b))
        data = b""
        while True:
            p = await c.recv()
            assert p is not None
            if p.opcode == P.OP_DATA_IN:
                data += bytes(p.data)
                if p.flags & 1:
                    return p.bhs[3], data, b""
            elif p.opcode == P.OP_SCSI_RSP:
                d = bytes(p.data)
                sense = d[2:2 + int.from_bytes(d[:2], "big")] if d else b""
                return p.bhs[3], data, sense

    async def cmd_out(self, cdb: bytes, data: bytes) -> tuple[int, bytes]:
        """(status, sense) of a command sending `data` as immediate data."""
        c = self.c
        c.itt += 1
        b = bhs(P.OP_SCSI_CMD, 0x80 | 0x20 | 1, itt=c.itt, f20=len(data), f24=c.cmdsn,
                dlen=len(data))
        b[8:10] = self.lun.to_bytes(2, "big")
        b[32:32 + len(cdb)] = cdb
        c.cmdsn += 1
        await c.stream.send_all(wire(b, data))
        p = await c.recv()
        assert p is not None and p.opcode == P.OP_SCSI_RSP
        d = bytes(p.data)
        return p.bhs[3], d[2:2 + int.from_bytes(d[:2], "big")] if d else b""

    async def pr_out(self, sa: int, key: int, sark: int = 0, rtype: int = 0) -> int:
        """PERSISTENT RESERVE OUT, past unit attentions; its status."""
        cdb = bytes([0x5F, sa, rtype, 0, 0, 0, 0, 0, 24, 0])
        for _ in range(8):
            status, sense = await self.cmd_out(cdb, struct.pack(">QQ8x", key, sark))
            if not (status == 2 and sense[2] & 0x0F == 6):
                return status
        return status

    async def past_attentions(self, cdb: bytes, read: int = 0) -> tuple[int, bytes, bytes]:
        """One command, repeated past unit attentions (a new session's, say)."""
        for _ in range(8):
            status, data, sense = await self.cmd(cdb, read)
            if not (status == 2 and sense[2] & 0x0F == 6):
                break
        return status, data, sense

    async def rtpg(self) -> list[tuple[int, int, bool]]:
        """(group, state, preferred) of every group REPORT TARGET PORT GROUPS lists."""
        status, data, sense = await self.past_attentions(bytes([0xA3, 0x0A, 0, 0, 0, 0]) +
                                             struct.pack(">I", 4096) + b"\0\0", read=4096)
        assert status == 0, sense.hex()
        out, off = [], 4
        while off < 4 + struct.unpack_from(">I", data)[0]:
            state, count = data[off] & 0x0F, data[off + 7]
            out.append((struct.unpack_from(">H", data, off + 2)[0], state, bool(data[off] & 0x80)))
            off += 8 + 4 * count
        return out

    async def ids(self) -> tuple[bytes, int]:
        """(NAA, port group) from VPD 83h."""
        status, data, _ = await self.past_attentions(bytes([0x12, 1, 0x83, 0x10, 0, 0]), 4096)
        assert status == 0
        naa, group, off = b"", 0, 4
        while off < len(data):
            kind, n = data[off + 1] & 0x0F, data[off + 3]
            value = data[off + 4:off + 4 + n]
            if kind == 3:
                naa = value
            elif kind == 5:
                group = struct.unpack(">H", value[2:4])[0]
            off += 4 + n
        return naa, group


async def session(port: int, target: str) -> Client:
    c = await Client.connect(port, target)
    await c.login()
    return c


def sync(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args)


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) missing")
def test_one_lu_through_two_hosts_and_take_over_after_the_owner_dies(
        tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    url = postgres_server.fresh_url()
    daemons = Daemons(tmp_path, shared_state=False)
    try:
        d1 = daemons(config(url, "host1"), name="host1")
        d2 = daemons(config(url, "host2"), name="host2")
        ok(d1, "disk", "create", "nd", "--size", "16M")  # qcow2, normal
        ok(d1, "disk", "create", "sd", "--size", "16M", "--format", "raw", "--variant", "fixed",
           "--type", "shareable")
        ok(d1, "vm", "create", "ext", "--memory", "64")
        ok(d1, "vm", "controller", "ext", "--add", "scsi0", "--bus", "virtio-scsi")
        ok(d1, "vm", "attach", "ext", "--controller", "scsi0", "--port", "0", "--disk", "nd")
        ok(d1, "vm", "attach", "ext", "--controller", "scsi0", "--port", "1", "--disk", "sd")
        ok(d1, "vm", "start", "ext", "--type", "external", "--host", "host1")
        target = f"{BASE_IQN}:vm.ext"
        g1, g2 = (h["group"] for h in json.loads(ok(d1, "host", "list", "--json")))

        async def both_paths() -> None:
            for port, group in ((d1.port, g1), (d2.port, g2)):
                s = await session(port, target)
                normal, shared = Lun(s, 0), Lun(s, 1)
                naa, seen = await normal.ids()
                assert seen == group
                assert await normal.rtpg() == [(g1, AO, True), (g2, STANDBY, False)]
                assert await shared.rtpg() == [(g1, AO, True), (g2, AN, False)]
                yield_naa.append(naa)
                if port == d2.port:  # standby: media access refused, not performed
                    status, _, sense = await normal.past_attentions(
                        bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 512)
                    assert status == 2 and (sense[2] & 0x0F, sense[12], sense[13]) == (2, 4, 0x0B)
                await s.stream.aclose()

        def paths_ready() -> bool:
            try:
                yield_naa.clear()
                sync(both_paths)
                return True
            except (AssertionError, OSError, trio.TooSlowError) as e:
                last[:] = [repr(e)]
                return False

        yield_naa: list[bytes] = []
        last: list[str] = []
        try:
            wait_until(paths_ready, 30, "both hosts export ext's LUs with both port groups")
        except AssertionError:
            raise AssertionError(f"last seen: {last}") from None
        assert yield_naa[0] == yield_naa[1] and len(yield_naa[0]) == 8  # one LU, one NAA

        if shutil.which("iscsi-inq"):  # libiscsi on the shareable disk's two paths
            naas = set()
            for d in (d1, d2):
                p = subprocess.run(["iscsi-inq", "-e", "1", "-c", "131",
                                    f"iscsi://127.0.0.1:{d.port}/{target}/1"],
                                   capture_output=True, timeout=30)
                assert p.returncode == 0, p.stdout + p.stderr
                out = p.stdout.split(b"\n")
                at = out.index(b"Designator Type:(3) NAA")
                naas.add(out[at + 1])  # Designator:[<the 8 bytes>]
                assert b"Designator Type:(5) TARGET_PORT_GROUP" in out
            assert len(naas) == 1, naas

        w = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M",
                            "-c", "write -P 0xa5 4M 64k",
                            f"iscsi://127.0.0.1:{d1.port}/{target}/0"],
                           capture_output=True, text=True, timeout=60)
        assert w.returncode == 0 and "wrote" in w.stdout, w.stdout + w.stderr

        async def reserve_through_host1() -> None:
            s = await session(d1.port, target)
            normal = Lun(s, 0)
            assert await normal.pr_out(0, 0, sark=PR_KEY) == 0  # REGISTER
            assert await normal.pr_out(1, PR_KEY, rtype=WRITE_EXCLUSIVE) == 0  # RESERVE
            await s.stream.aclose()

        sync(reserve_through_host1)

        async def take_over() -> None:
            s = await session(d2.port, target)  # a path logged in before the owner dies
            normal = Lun(s, 0)
            assert (await normal.rtpg())[1][1] == STANDBY  # its attentions taken
            d1.kill()
            seen_ua = False
            with trio.fail_after(LEASE_S * 10):
                while True:
                    status, data, sense = await normal.cmd(
                        bytes([0xA3, 0x0A, 0, 0, 0, 0]) + struct.pack(">I", 4096) + b"\0\0",
                        read=4096)
                    if status == 2 and sense[2] & 0x0F == 6 and sense[12:14] == b"\x2a\x06":
                        seen_ua = True
                    if status == 0 and seen_ua:
                        groups = await normal.rtpg()
                        if (g2, AO, True) in groups:
                            break
                    await trio.sleep(0.2)
            await s.stream.aclose()

        sync(take_over)

        async def reservation_moved() -> None:
            # the holder's nexus, now through host2, still holds it...
            s = await session(d2.port, target)
            status, data, _ = await Lun(s, 0).past_attentions(
                bytes([0x5E, 1, 0, 0, 0, 0, 0, 0x10, 0, 0]), 4096)
            assert status == 0 and struct.unpack_from(">Q", data, 8)[0] == PR_KEY
            assert data[21] & 0x0F == WRITE_EXCLUSIVE
            await s.stream.aclose()
            # ...and another initiator's write meets RESERVATION CONFLICT there
            other = await Client.connect(d2.port, target)
            await other.login(isid=bytes.fromhex("400001370099"))
            status, _ = await Lun(other, 0).cmd_out(bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
                                                    bytes(512))
            if status == 2:  # its first command meets its unit attention
                status, _ = await Lun(other, 0).cmd_out(
                    bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), bytes(512))
            assert status == 0x18
            await other.stream.aclose()

        sync(reservation_moved)
        info = json.loads(ok(d2, "vm", "info", "ext", "--json"))
        assert info["state"] == "running" and info["host"] == "host2"
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M",
                            "-c", "read -P 0xa5 4M 64k",
                            f"iscsi://127.0.0.1:{d2.port}/{target}/0"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, \
            r.stdout + r.stderr
        assert r.stdout.count("read ") == 2, r.stdout
    finally:
        daemons.shutdown_all()
