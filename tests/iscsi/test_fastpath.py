# tests/iscsi/test_fastpath.py - the fast path of plain READ/WRITE commands
# with CRC32C header and data digests on: a receive holding many commands is
# answered by the fast path (the general dispatch never sees them), every
# answer carries digests that check out and the data the file holds; a
# command whose header or data digest is wrong is left to the general path,
# which refuses it as RFC 7143 says, and no write of it reaches the file.
"""Tests for netstore.iscsi.fastpath with digests."""

from __future__ import annotations

import os

import pytest

from netstore.iscsi import pdu as P
from netstore.iscsi.connection import Connection
from tests.iscsi.initiator import Initiator, bhs, make_group, read10, write10

BLOCK = 512
DIGESTS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(1 << 20))
    return str(path)


def logged_in(image: str, keys: dict[str, str] | None = None) -> Initiator:
    ini = Initiator(make_group(image), keys=keys)
    answers = ini.login()
    if keys:
        assert answers["HeaderDigest"] == "CRC32C" and answers["DataDigest"] == "CRC32C"
        ini.use_digests()
    ini.scsi(bytes(6))  # the power-on unit attention
    return ini


def commands(ini: Initiator, cdbs: list[tuple[bytes, int, bytes | None]]) -> bytes:
    """One receive's worth of SCSI Command PDUs (read length or write data each)."""
    raw = []
    for cdb, read, data in cdbs:
        flags = 0x81 | (0x40 if read else 0) | (0x20 if data else 0)
        b = bhs(P.OP_SCSI_CMD, flags, itt=ini.next_itt(), f20=read or len(data or b""),
                f24=ini.cmdsn)
        b[32:32 + len(cdb)] = cdb
        ini.cmdsn += 1
        raw.append(ini.frame(b, data or b""))
    return b"".join(raw)


@pytest.fixture
def general_path_calls(monkeypatch):
    """The SCSI commands the general dispatch saw."""
    seen: list[int] = []
    dispatch = Connection._dispatch

    def spy(self, pdu):
        if pdu.opcode == P.OP_SCSI_CMD:
            seen.append(pdu.u32(16))
        return dispatch(self, pdu)

    monkeypatch.setattr(Connection, "_dispatch", spy)
    return seen


@pytest.mark.parametrize("keys", [None, DIGESTS], ids=["plain", "digests"])
def test_a_batch_of_reads_and_writes_takes_the_fast_path(image, keys, general_path_calls):
    ini = logged_in(image, keys)
    general_path_calls.clear()  # TEST UNIT READY is not a fast-path command
    data = [os.urandom(4096) for _ in range(16)]
    writes = [(write10(64 + 8 * i, 8), 0, d) for i, d in enumerate(data)]
    replies = ini.send(commands(ini, writes))
    assert [r.opcode for r in replies] == [P.OP_SCSI_RSP] * 16
    assert all(r.bhs[3] == 0 for r in replies)  # GOOD
    reads = [(read10(64 + 8 * i, 8), 4096, None) for i in range(16)]
    replies = ini.send(commands(ini, reads))  # the reader checked every digest
    assert [r.opcode for r in replies] == [P.OP_DATA_IN] * 16
    assert [r.data for r in replies] == data
    assert general_path_calls == []
    with open(image, "rb") as f:
        f.seek(64 * BLOCK)
        assert f.read(16 * 4096) == b"".join(data)


def test_a_wrong_data_digest_is_rejected_and_nothing_written(image):
    ini = logged_in(image, DIGESTS)
    before = open(image, "rb").read()
    raw = bytearray(commands(ini, [(write10(8, 8), 0, os.urandom(4096))]))
    raw[-1] ^= 0x01  # the data digest
    replies = ini.send(bytes(raw))
    assert [r.opcode for r in replies] == [P.OP_REJECT]
    assert replies[0].bhs[2] == P.REJECT_DATA_DIGEST
    assert open(image, "rb").read() == before
    # the connection goes on: the next command is answered by the fast path
    (r,) = ini.send(commands(ini, [(read10(0, 8), 4096, None)]))
    assert r.opcode == P.OP_DATA_IN and r.data == before[:4096]


def test_a_wrong_header_digest_ends_the_connection(image):
    ini = logged_in(image, DIGESTS)
    before = open(image, "rb").read()
    raw = bytearray(commands(ini, [(write10(8, 8), 0, os.urandom(4096))]))
    raw[P.BHS_LEN] ^= 0x01  # the header digest
    ini.send(bytes(raw))
    assert ini.conn.closing
    assert open(image, "rb").read() == before
