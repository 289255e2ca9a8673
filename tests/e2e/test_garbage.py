"""Garbage over real sockets against one live daemon (module-scoped).

After each abuse, a second, well-behaved client (libiscsi's iscsi-inq, and a
raw session opened before the abuse) must still work and the daemon must be
alive. Every wait is bounded; only 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e import rawiscsi as r
from tests.peers import need, run, write_pattern

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.netstore:garbage"
SIZE = 32 << 20
BS = 512


@pytest.fixture(scope="module")
def live(module_netstore_daemon):
    need("iscsi-inq")
    image = module_netstore_daemon.tmp / "garbage.img"
    write_pattern(image, SIZE, seed=99)
    d = module_netstore_daemon(
        f"""
[daemon]
state_dir = "{{state_dir}}"
log_level = "info"
[iscsi]
portals = ["127.0.0.1:{{port}}"]
[[iscsi.targets]]
iqn = "{IQN}"
luns = ["{image}"]
""",
        name="garbage",
    )
    d.image = image
    return d


@pytest.fixture
def bystander(live):
    """A raw session logged in before the abuse; it must survive it."""
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:bystander")
    drain_unit_attention(c)
    yield c
    c.close()


def drain_unit_attention(c: r.Conn) -> None:
    for _ in range(3):
        status, _ = c.command(r.TEST_UNIT_READY)
        if status == 0:
            return
    raise AssertionError("TEST UNIT READY never returned GOOD")


def image_bytes(live, lba: int, blocks: int) -> bytes:
    with open(live.image, "rb") as f:
        f.seek(lba * BS)
        return f.read(blocks * BS)


def healthy(live, bystander: r.Conn | None = None) -> None:
    """The daemon is alive and serves a new libiscsi client (and the old session)."""
    assert live.alive, f"the daemon died (exit status {live.proc.returncode})"
    out = run(["iscsi-inq", live.url(IQN)], timeout=20)
    assert out.returncode == 0, f"iscsi-inq failed after the abuse: {out.stderr}"
    assert "Peripheral Device Type:DIRECT_ACCESS" in out.stdout, out.stdout
    if bystander is not None:
        bystander.nop(timeout=10)
        status, data = bystander.command(r.read10(2048, 8), read=8 * BS)
        assert status == 0 and data == image_bytes(live, 2048, 8)


def outcome(c: r.Conn, timeout: float = 10.0) -> list[r.PDU] | str:
    """What the target does next: "closed", or the PDUs it sent until it went
    quiet for 1 s (an empty list: silent for `timeout` s, connection open);
    a list ends with "closed" when the target closed after sending them."""
    pdus: list[r.PDU] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pdus.append(c.recv(timeout=1.0 if pdus else min(timeout, deadline - time.monotonic())))
        except r.Closed:
            return "closed" if not pdus else pdus + ["closed"]  # type: ignore[list-item]
        except TimeoutError:
            return pdus
    return pdus


def rejected_or_closed(res) -> bool:
    if res == "closed":
        return True
    if isinstance(res, list) and res:
        if res[-1] == "closed":
            return True
        return any(isinstance(p, r.PDU) and p.opcode == r.REJECT for p in res)
    return False


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the target may close while we still send: that is allowed


def read_until_closed_or_quiet(sock: socket.socket, quiet: float = 0.3, limit: float = 5.0):
    deadline = time.monotonic() + limit
    sock.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return "closed"
        except TimeoutError:
            return "quiet"
        except OSError:
            return "closed"
    return "talking"


# -- before login ----------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(min_size=1, max_size=4096),
        # Something that starts like a Login request, then turns to junk.
        st.binary(min_size=0, max_size=600).map(lambda b: bytes([0x43, 0x87]) + b),
        st.binary(min_size=44, max_size=44).map(lambda b: bytes([0x43, 0x87, 0, 0]) + b),
    ),
    half_close=st.booleans(),
)
def test_random_bytes_before_login(live, data, half_close):
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        send_quietly(s, data)
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        read_until_closed_or_quiet(s)
    healthy(live)


def test_short_bhs_then_close(live, bystander):
    c = r.Conn.connect(live.port)
    h, d = c.login_pdu(0, 1, True, {"InitiatorName": "iqn.2026-11.org.test:short"})
    c.send_raw(h[:17])
    c.close()
    # And one that stalls mid-BHS while other clients keep working.
    stall = r.Conn.connect(live.port)
    stall.send_raw(h[:30])
    healthy(live, bystander)
    stall.close()
    healthy(live, bystander)


def test_bhs_announcing_16mib_data_segment_during_login(live, bystander):
    """DataSegmentLength 0xFFFFFC (16 MiB - 4, the 24-bit field's top) on a Login
    request, far above the 8192 bytes allowed during login; only a little follows."""
    c = r.Conn.connect(live.port)
    h, _ = c.login_pdu(0, 1, True, {})
    h = h[:5] + (0xFFFFFC).to_bytes(3, "big") + h[8:]
    c.send_raw(h + b"InitiatorName=iqn.2026-11.org.test:big\0")
    res = outcome(c, timeout=10)
    c.close()
    refused = [
        p
        for p in (res if isinstance(res, list) else [])
        if isinstance(p, r.PDU) and p.opcode == r.LOGIN_RSP and p.header[36] != 0
    ]
    assert rejected_or_closed(res) or refused, (
        f"the target neither refused nor closed on a 16 MiB login data segment: {res}"
    )
    healthy(live, bystander)


def test_bhs_announcing_16mib_immediate_data_after_login(live, bystander):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:bigdata")
    before = image_bytes(live, 4096, 8)
    h, _ = c.scsi_pdu(r.write10(4096, 32768), write=b"", edtl=16 << 20, dlen=(1 << 24) - 4)
    c.send_raw(h)
    c.send_raw(b"\xee" * 8192)  # a little of the data it announced
    res = outcome(c, timeout=10)
    c.close()
    assert rejected_or_closed(res), (
        f"a data segment above MaxRecvDataSegmentLength got neither Reject nor close: {res}"
    )
    assert image_bytes(live, 4096, 8) == before, "a refused command wrote data"
    healthy(live, bystander)


# -- login state machine ---------------------------------------------------------


@pytest.mark.parametrize(
    "csg,nsg",
    [(3, 3), (2, 3), (1, 0), (0, 2)],
    ids=["csg-full-feature", "csg-reserved", "transit-backwards", "nsg-reserved"],
)
def test_login_in_wrong_stage_is_refused(live, bystander, csg, nsg):
    c = r.Conn.connect(live.port)
    keys = {
        "InitiatorName": "iqn.2026-11.org.test:stage",
        "TargetName": IQN,
        "SessionType": "Normal",
        "AuthMethod": "None",
    }
    h, d = c.login_pdu(csg, nsg, True, keys)
    c.send(h, d)
    res = outcome(c, timeout=10)
    c.close()
    assert res, f"no answer to a login with CSG={csg} NSG={nsg} T=1"
    if isinstance(res, list):
        rsp = [p for p in res if isinstance(p, r.PDU)]
        logins = [p for p in rsp if p.opcode == r.LOGIN_RSP]
        ok = [p for p in logins if p.header[36] == 0 and (p.flags & 0x83) == 0x83]
        assert not ok, f"login with CSG={csg} NSG={nsg} reached full feature phase"
        assert rejected_or_closed(res) or any(p.header[36] != 0 for p in logins), res
    healthy(live, bystander)


def test_login_pdu_in_full_feature_phase(live, bystander):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:relogin")
    h, d = c.login_pdu(0, 1, True, {"InitiatorName": "iqn.2026-11.org.test:relogin"})
    c.send(h, d)
    res = outcome(c, timeout=10)
    c.close()
    assert rejected_or_closed(res), f"a Login request in full feature phase got {res}"
    healthy(live, bystander)


def test_junk_text_keys_in_login(live, bystander):
    c = r.Conn.connect(live.port)
    junk = {"X-Junk": "1", "Foo": "bar" * 50, "MaxRecvDataSegmentLength": "banana"}
    try:
        got = c.login(IQN, initiator="iqn.2026-11.org.test:junk", extra=junk)
    except r.LoginFailed as e:
        assert e.status >> 8 == 0x02, f"junk keys refused with a non-initiator-error status {e}"
    else:
        assert got.get("X-Junk") == "NotUnderstood", got
        assert got.get("Foo") == "NotUnderstood", got
        c.nop()
    c.close()
    # Keys with no '=' and a NUL storm.
    c = r.Conn.connect(live.port)
    h, _ = c.login_pdu(0, 1, True, {})
    data = b"InitiatorName=iqn.2026-11.org.test:junk2\0NoEquals\0\0\0=novalue\0"
    h = h[:5] + len(data).to_bytes(3, "big") + h[8:]
    c.send_raw(h + r.pad4(data))
    res = outcome(c, timeout=10)
    c.close()
    # A Login Response with status 0x0200 (initiator error), then the close (RFC 7143 11.13.5).
    assert isinstance(res, list) and res[-1:] == ["closed"], f"login with malformed keys: {res}"
    assert [(p.opcode, p.header[36:38]) for p in res[:-1]] == [(r.LOGIN_RSP, b"\x02\x00")], res
    healthy(live, bystander)


# -- full feature phase ------------------------------------------------------------


@pytest.mark.parametrize("opcode", [0x0F, 0x1C, 0x3E])
def test_unknown_opcode_after_login(live, bystander, opcode):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:op1")
    drain_unit_attention(c)
    rest = struct.pack(">III", 0, c.cmdsn, c.expstatsn) + bytes(16)
    mark = live.log_mark()
    c.send(r.bhs(opcode, 0x80, itt=c.next_itt(), rest=rest))
    res = outcome(c, timeout=10)
    assert rejected_or_closed(res), f"unknown opcode {opcode:#04x} got {res}"
    live.wait_log(mark, r"opcode", timeout=5)
    if res != "closed" and not (isinstance(res, list) and "closed" in res):
        rej = [p for p in res if isinstance(p, r.PDU) and p.opcode == r.REJECT][0]
        assert rej.header[2] in (0x04, 0x05), f"Reject reason {rej.header[2]:#04x}"
        # The rejected PDU's header comes back in the Reject's data segment.
        assert rej.data[:1] and rej.data[0] & 0x3F == opcode, rej.data[:48].hex()
        c.nop()  # the connection goes on after a Reject
        status, _ = c.command(r.read10(0, 1), read=BS)
        assert status == 0
    c.close()
    healthy(live, bystander)


@pytest.mark.parametrize("delta", [0x40000000, -100], ids=["far-above", "below"])
def test_scsi_command_with_cmdsn_outside_the_window(live, bystander, delta):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:window")
    drain_unit_attention(c)
    lba = 6000 if delta > 0 else 6100
    before = image_bytes(live, lba, 8)
    bad = (c.cmdsn + delta) & 0xFFFFFFFF
    mark = live.log_mark()
    h, d = c.scsi_pdu(r.write10(lba, 8), write=b"\xe7" * 4096, cmdsn=bad)
    c.send(h, d)
    res = outcome(c, timeout=3)
    if isinstance(res, list):
        itt = struct.unpack_from(">I", h, 16)[0]
        answered = [
            p for p in res if isinstance(p, r.PDU) and p.opcode == r.SCSI_RSP and p.itt == itt
        ]
        assert not answered, "a command outside the CmdSN window was executed"
    closed = res == "closed" or (isinstance(res, list) and "closed" in res)
    if not closed:
        # RFC 7143 4.2.2.1: silently ignored (or rejected); the session goes on.
        status, _ = c.command(r.TEST_UNIT_READY)
        assert status == 0
        status, data = c.command(r.read10(lba, 8), read=4096)
        assert status == 0 and data == before
    c.close()
    assert image_bytes(live, lba, 8) == before, "a command outside the CmdSN window wrote data"
    # Issue 2, "Bad input": every case gets a Reject or a close *and a log line*.
    live.wait_log(mark, r"cmdsn", timeout=5)
    healthy(live, bystander)


def test_header_digest_mismatch(live, bystander):
    c = r.Conn.connect(live.port)
    got = c.login(IQN, initiator="iqn.2026-11.org.test:hd1", header_digest=True)
    assert got.get("HeaderDigest") == "CRC32C", got
    drain_unit_attention(c)
    rest = struct.pack(">III", 0xFFFFFFFF, c.cmdsn, c.expstatsn) + bytes(16)
    h = r.bhs(r.NOP_OUT, 0x80, immediate=True, itt=c.next_itt(), rest=rest)
    mark = live.log_mark()
    c.send_raw(h + b"\x00\x00\x00\x00")  # wrong digest
    res = outcome(c, timeout=10)
    # A header that fails its digest cannot be trusted: discard (ERL 0: drop the connection).
    assert not any(
        isinstance(p, r.PDU) and p.opcode == r.NOP_IN
        for p in (res if isinstance(res, list) else [])
    ), f"answered a corrupt header: {res}"
    c.close()
    live.wait_log(mark, r"digest", timeout=5)
    healthy(live, bystander)


def test_data_digest_mismatch_writes_nothing(live, bystander):
    c = r.Conn.connect(live.port)
    got = c.login(IQN, initiator="iqn.2026-11.org.test:dd1", header_digest=True, data_digest=True)
    assert got.get("DataDigest") == "CRC32C", got
    drain_unit_attention(c)
    lba = 7000
    before = image_bytes(live, lba, 8)
    h, d = c.scsi_pdu(r.write10(lba, 8), write=b"\x3c" * 4096)
    mark = live.log_mark()
    c.send_raw(h + r.digest(h) + d + b"\xde\xad\xbe\xef")
    c.cmdsn += 1
    res = outcome(c, timeout=10)
    itt = struct.unpack_from(">I", h, 16)[0]
    good = [
        p
        for p in (res if isinstance(res, list) else [])
        if isinstance(p, r.PDU)
        and p.opcode == r.SCSI_RSP
        and p.itt == itt
        and p.header[3] == 0
        and p.header[2] == 0
    ]
    assert not good, "a write whose data failed its digest completed with GOOD"
    # RFC 7143 7.8: a PDU with a payload digest error is answered with a Reject,
    # reason Data (payload) Digest Error (0x02), and discarded; the connection stays.
    assert isinstance(res, list) and "closed" not in res, f"closed on a data digest error: {res}"
    assert [(p.opcode, p.header[2], p.data[:48]) for p in res] == [(r.REJECT, 0x02, h[:48])], res
    c.close()
    assert image_bytes(live, lba, 8) == before, "data that failed its digest was written"
    live.wait_log(mark, r"digest", timeout=5)
    healthy(live, bystander)


def test_data_out_for_unknown_task(live, bystander):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:dataout")
    drain_unit_attention(c)
    lba = 7100
    before = image_bytes(live, lba, 8)
    rest = struct.pack(">IIIIII", 0x12345678, 0, c.expstatsn, 0, 0, 0) + bytes(4)
    c.send(
        r.bhs(r.DATA_OUT, 0x80, dlen=4096, itt=0x0BADF00D, lun_or_isid=bytes(8), rest=rest),
        b"\x99" * 4096,
    )
    res = outcome(c, timeout=3)
    closed = res == "closed" or (isinstance(res, list) and "closed" in res)
    if not closed:
        c.nop()
    c.close()
    assert image_bytes(live, lba, 8) == before
    healthy(live, bystander)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=1, max_size=2048))
def test_random_bytes_after_login(live, data):
    c = r.Conn.connect(live.port)
    c.login(IQN, initiator="iqn.2026-11.org.test:fuzz")
    send_quietly(c.sock, data)
    read_until_closed_or_quiet(c.sock)
    c.close()
    healthy(live)


def test_many_half_open_connections(live, bystander):
    """Fifty stalled connections (some mid-login) do not stop anyone else."""
    conns = []
    try:
        for i in range(50):
            c = r.Conn.connect(live.port)
            if i % 2:
                h, _ = c.login_pdu(0, 1, True, {})
                c.send_raw(h[: i % 48])
            conns.append(c)
        healthy(live, bystander)
    finally:
        for c in conns:
            c.close()
    healthy(live, bystander)


def test_daemon_stops_cleanly_after_the_abuse(live):
    """Last in the module: SIGTERM still stops it promptly, with status 0."""
    assert live.alive
    t0 = time.monotonic()
    rc = live.stop()
    assert rc == 0, f"exit status {rc} after SIGTERM"
    assert time.monotonic() - t0 < 10
