"""libiscsi's command-line initiators against a live netstore daemon.

Discovery and listing (iscsi-ls -s), CHAP one-way and mutual, the allow list,
refusals (wrong secret, initiator not allowed, unknown target), and CRC32C
header digests. libiscsi negotiates DataDigest=None only, so data digests are
exercised by test_garbage.py's hand-rolled initiator instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.peers import need, run, write_pattern

pytestmark = pytest.mark.peers

BASE = "iqn.2026-11.org.netstore"
DISK1, DISK2 = f"{BASE}:disk1", f"{BASE}:disk2"
CHAP_T, MUTUAL_T, ALLOW_T = f"{BASE}:chap", f"{BASE}:mutual", f"{BASE}:allow"
SIZE1, SIZE2 = 64 << 20, 32 << 20
LIBISCSI_IQN = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq"
ALLOWED_IQN = "iqn.2026-11.org.test:client1"
CHAP_USER, CHAP_SECRET = "alice", "alice-secret-12"
M_USER, M_SECRET, M_TUSER, M_TSECRET = "bob", "bob-secret-1234", "netstore", "target-secret-99"
DISC_USER, DISC_SECRET = "disc", "disc0very-secret"


@pytest.fixture(scope="module")
def plain(module_netstore_daemon):
    """Two open targets: disk1 (64 MiB) and disk2 (32 MiB)."""
    tmp: Path = module_netstore_daemon.tmp
    with open(tmp / "disk1.img", "wb") as f:
        f.truncate(SIZE1)
    write_pattern(tmp / "disk2.img", SIZE2, seed=2)
    return module_netstore_daemon(
        f"""
[daemon]
state_dir = "{{state_dir}}"
log_level = "info"
[iscsi]
portals = ["127.0.0.1:{{port}}"]
base_iqn = "{BASE}"
[[iscsi.targets]]
iqn = "{DISK1}"
luns = ["{{tmp}}/disk1.img"]
[[iscsi.targets]]
iqn = "{DISK2}"
luns = ["{{tmp}}/disk2.img"]
""",
        name="plain",
    )


@pytest.fixture(scope="module")
def secured(module_netstore_daemon):
    """CHAP, mutual CHAP and an allow list."""
    tmp: Path = module_netstore_daemon.tmp
    for n in ("chap", "mutual", "allow"):
        with open(tmp / f"{n}.img", "wb") as f:
            f.truncate(16 << 20)
    return module_netstore_daemon(
        f"""
[daemon]
state_dir = "{{state_dir}}"
log_level = "info"
[iscsi]
portals = ["127.0.0.1:{{port}}"]
base_iqn = "{BASE}"
[[iscsi.targets]]
iqn = "{CHAP_T}"
luns = ["{{tmp}}/chap.img"]
chap = {{ user = "{CHAP_USER}", secret = "{CHAP_SECRET}" }}
[[iscsi.targets]]
iqn = "{MUTUAL_T}"
luns = ["{{tmp}}/mutual.img"]
chap = {{ user = "{M_USER}", secret = "{M_SECRET}", mutual_user = "{M_TUSER}", mutual_secret = "{M_TSECRET}" }}
[[iscsi.targets]]
iqn = "{ALLOW_T}"
luns = ["{{tmp}}/allow.img"]
allow = ["iqn.2026-11.org.test:*"]
""",
        name="secured",
    )


@pytest.fixture(scope="module")
def discovery_chap(module_netstore_daemon):
    tmp: Path = module_netstore_daemon.tmp
    with open(tmp / "dchap.img", "wb") as f:
        f.truncate(8 << 20)
    return module_netstore_daemon(
        f"""
[daemon]
state_dir = "{{state_dir}}"
[iscsi]
portals = ["127.0.0.1:{{port}}"]
discovery_chap = {{ user = "{DISC_USER}", secret = "{DISC_SECRET}" }}
[[iscsi.targets]]
iqn = "{BASE}:dchap"
luns = ["{{tmp}}/dchap.img"]
chap = {{ user = "{DISC_USER}", secret = "{DISC_SECRET}" }}
""",
        name="dchap",
    )


def libiscsi_size(nbytes: int) -> str:
    """iscsi-ls prints (last LBA * block size) in MiB, one block short of the size (tgt too)."""
    return f"Size:{(nbytes - 512) >> 20}M"


def capacity(out: str) -> int:
    m = re.search(r"Total size:(\d+)", out)
    assert m, f"no 'Total size' in iscsi-readcapacity16 output:\n{out}"
    return int(m.group(1))


# libiscsi's words for the login refusals (iSCSI status class and detail in brackets).
NOT_FOUND = "Failed to log in to target. Status: Target not found(515)"
AUTHENTICATION = "Failed to log in to target. Status: Authentication failure(513)"
AUTHORIZATION = "Failed to log in to target. Status: Authorization failure(514)"
BAD_CHAP_R = "Authentication failed. Invalid CHAP_R response from the target"


def assert_refused(out, what: str, reason: str, *, tool: str = "Login Failed") -> None:
    """The tool gave up at the login (exit 10) for ``reason``, printing nothing else."""
    assert (out.returncode, out.stdout, out.stderr) == (10, "", f"{tool}. {reason}\n"), (
        f"{what}: not refused as expected: {out.returncode}\n{out.stdout}\n{out.stderr}")


# -- discovery and listing ---------------------------------------------------


def test_iscsi_ls_lists_targets_and_lun_sizes(plain):
    need("iscsi-ls")
    out = run(["iscsi-ls", "-s", plain.url()], timeout=30)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    blocks = re.split(r"(?m)^(?=Target:)", text)
    by_target = {}
    for b in blocks:
        m = re.match(r"Target:(\S+) Portal:(\S+)", b)
        if m:
            by_target[m.group(1)] = (m.group(2), b)
    assert set(by_target) == {DISK1, DISK2}, text
    for iqn, size in ((DISK1, SIZE1), (DISK2, SIZE2)):
        portal, block = by_target[iqn]
        assert portal.startswith(f"127.0.0.1:{plain.port}"), portal
        assert re.search(r"Lun:0\s+Type:DIRECT_ACCESS", block), block
        assert libiscsi_size(size) in block, block


def test_iscsi_ls_url_format(plain):
    need("iscsi-ls")
    out = run(["iscsi-ls", "--url", plain.url()], timeout=30)
    assert out.returncode == 0, out.stderr
    urls = set(re.findall(r"iscsi://\S+", out.stdout))
    assert {
        f"iscsi://127.0.0.1:{plain.port}/{DISK1}/0",
        f"iscsi://127.0.0.1:{plain.port}/{DISK2}/0",
    } <= urls, out.stdout


def test_readcapacity16_and_inquiry(plain):
    need("iscsi-readcapacity16", "iscsi-inq")
    out = run(["iscsi-readcapacity16", plain.url(DISK2)], timeout=30)
    assert out.returncode == 0, out.stderr
    assert capacity(out.stdout) == SIZE2
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in out.stdout
    inq = run(["iscsi-inq", plain.url(DISK1)], timeout=30)
    assert inq.returncode == 0, inq.stderr
    assert "Peripheral Device Type:DIRECT_ACCESS" in inq.stdout, inq.stdout
    # VPD 0x00: the supported pages; the issue names 00 80 83 86 B0 B1 B2.
    vpd = run(["iscsi-inq", "-e", "1", "-c", "0", plain.url(DISK1)], timeout=30)
    assert vpd.returncode == 0, vpd.stderr
    for page in ("0x80", "0x83", "0xb0", "0xb1", "0xb2"):
        assert page in vpd.stdout.lower(), vpd.stdout


def test_unknown_target_refused(plain):
    need("iscsi-inq")
    mark = plain.log_mark()
    out = run(["iscsi-inq", plain.url(f"{BASE}:no-such-disk")], timeout=30)
    assert_refused(out, "login to an unknown target", NOT_FOUND)
    plain.wait_log(mark, r"\b0203\b|not found")


def test_unknown_lun_not_served(plain):
    """The login to the target succeeds; the command libiscsi sends after it to
    LUN 7 (TEST UNIT READY) gets CHECK CONDITION, ILLEGAL REQUEST / LOGICAL
    UNIT NOT SUPPORTED (SAM-5: no such LUN), so the tool gives up ("Login
    Failed", exit 10) with that sense, and never reads a capacity."""
    need("iscsi-readcapacity16")
    out = run(["iscsi-readcapacity16", plain.url(DISK1, 7)], timeout=30)
    assert (out.returncode, out.stdout) == (10, ""), (out.returncode, out.stdout, out.stderr)
    assert out.stderr == (
        "Login Failed. SENSE KEY:ILLEGAL_REQUEST(5) ASCQ:LOGICAL_UNIT_NOT_SUPPORTED(0x2500)\n"
    ), out.stderr


# -- CHAP ------------------------------------------------------------------------


def test_chap_login_works(secured):
    need("iscsi-readcapacity16", "iscsi-inq")
    out = run(
        ["iscsi-readcapacity16", secured.url(CHAP_T, user=CHAP_USER, secret=CHAP_SECRET)],
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert capacity(out.stdout) == 16 << 20
    inq = run(["iscsi-inq", secured.url(CHAP_T, user=CHAP_USER, secret=CHAP_SECRET)], timeout=30)
    assert inq.returncode == 0 and "DIRECT_ACCESS" in inq.stdout, inq.stderr


def test_chap_wrong_secret_refused_and_logged(secured):
    need("iscsi-inq")
    mark = secured.log_mark()
    out = run(
        ["iscsi-inq", secured.url(CHAP_T, user=CHAP_USER, secret="wrong-secret-00")], timeout=30
    )
    assert_refused(out, "a wrong CHAP secret", AUTHENTICATION)
    log = secured.wait_log(mark, r"\b0201\b|authentication fail")
    assert CHAP_T in log, log


def test_chap_wrong_user_refused(secured):
    need("iscsi-inq")
    mark = secured.log_mark()
    out = run(["iscsi-inq", secured.url(CHAP_T, user="mallory", secret=CHAP_SECRET)], timeout=30)
    assert_refused(out, "an unknown CHAP user", AUTHENTICATION)
    secured.wait_log(mark, r"\b0201\b|authentication fail")


def test_chap_without_credentials_refused(secured):
    need("iscsi-inq")
    mark = secured.log_mark()
    out = run(["iscsi-inq", secured.url(CHAP_T)], timeout=30)
    assert_refused(out, "a login without CHAP to a CHAP target", AUTHENTICATION)
    secured.wait_log(mark, r"\b020[12]\b|authentication|refused")


def test_mutual_chap(secured):
    need("iscsi-readcapacity16")
    ok = secured.url(
        MUTUAL_T,
        user=M_USER,
        secret=M_SECRET,
        args=f"target_user={M_TUSER}&target_password={M_TSECRET}",
    )
    out = run(["iscsi-readcapacity16", ok], timeout=30)
    assert out.returncode == 0, out.stderr
    assert capacity(out.stdout) == 16 << 20


def test_mutual_chap_initiator_rejects_a_target_with_the_wrong_secret(secured):
    """libiscsi checks the target's CHAP_R: with the wrong expected secret it must give up."""
    need("iscsi-readcapacity16")
    bad = secured.url(
        MUTUAL_T,
        user=M_USER,
        secret=M_SECRET,
        args=f"target_user={M_TUSER}&target_password=not-the-secret-1",
    )
    out = run(["iscsi-readcapacity16", bad], timeout=30)
    assert_refused(out, "a target answering mutual CHAP with another secret", BAD_CHAP_R)


def test_mutual_chap_wrong_initiator_secret_refused(secured):
    need("iscsi-inq")
    mark = secured.log_mark()
    bad = secured.url(
        MUTUAL_T,
        user=M_USER,
        secret="bob-wrong-12345",
        args=f"target_user={M_TUSER}&target_password={M_TSECRET}",
    )
    out = run(["iscsi-inq", bad], timeout=30)
    assert_refused(out, "a wrong initiator secret with mutual CHAP", AUTHENTICATION)
    secured.wait_log(mark, r"\b0201\b|authentication fail")


# -- allow list ---------------------------------------------------------------


def test_allow_list_admits_matching_initiator(secured):
    need("iscsi-inq")
    out = run(["iscsi-inq", "-i", ALLOWED_IQN, secured.url(ALLOW_T)], timeout=30)
    assert out.returncode == 0, out.stderr
    assert "DIRECT_ACCESS" in out.stdout


def test_allow_list_refuses_other_initiator(secured):
    need("iscsi-inq")
    mark = secured.log_mark()
    out = run(
        ["iscsi-inq", "-i", "iqn.2026-11.org.evil:intruder", secured.url(ALLOW_T)], timeout=30
    )
    assert_refused(out, "an initiator outside the allow list", AUTHORIZATION)
    log = secured.wait_log(mark, r"\b0202\b|not authori[sz]ed")
    assert "iqn.2026-11.org.evil:intruder" in log, log
    # libiscsi's default name is outside the list as well.
    out = run(["iscsi-inq", secured.url(ALLOW_T)], timeout=30)
    assert_refused(out, "libiscsi's default initiator name", AUTHORIZATION)


# -- discovery CHAP ----------------------------------------------------------


def test_discovery_chap(discovery_chap):
    need("iscsi-ls")
    d = discovery_chap
    out = run(["iscsi-ls", "-s", d.url(user=DISC_USER, secret=DISC_SECRET)], timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"Target:{BASE}:dchap" in out.stdout, out.stdout
    assert libiscsi_size(8 << 20) in out.stdout, out.stdout
    mark = d.log_mark()
    out = run(["iscsi-ls", d.url(user=DISC_USER, secret="wrong-secret-000")], timeout=30)
    assert_refused(out, "discovery with a wrong secret", AUTHENTICATION, tool="Login failed")
    d.wait_log(mark, r"\b0201\b|authentication fail")
    out = run(["iscsi-ls", d.url()], timeout=30)
    assert_refused(out, "discovery without CHAP", AUTHENTICATION, tool="Login failed")


# -- digests -------------------------------------------------------------------


def test_header_digest_read_write(plain):
    """HeaderDigest=CRC32C (libiscsi offers CRC32C only), reads and writes still exact.

    qemu 7.2 crashes on libiscsi's ``?header_digest=`` URL argument (with tgt
    too), so qemu-io gets the digest through --image-opts instead."""
    need("qemu-io", "iscsi-readcapacity16")
    out = run(["iscsi-readcapacity16", plain.url(DISK2, args="header_digest=crc32c")], timeout=30)
    assert out.returncode == 0, out.stderr
    assert capacity(out.stdout) == SIZE2
    opts = (
        f"driver=iscsi,transport=tcp,portal=127.0.0.1:{plain.port},target={DISK1},"
        "lun=0,header-digest=crc32c"
    )
    io = run(
        [
            "qemu-io",
            "--image-opts",
            "-c",
            "write -P 0xc3 2M 192k",
            "-c",
            "read -P 0xc3 2M 192k",
            "-c",
            "read -P 0 0 1M",
            opts,
        ],
        timeout=60,
    )
    text = io.stdout + io.stderr
    assert io.returncode == 0, text
    assert "wrote 196608/196608" in text and "read 196608/196608" in text, text
    assert "Pattern verification failed" not in text, text
    data = (plain.workdir / "disk1.img").read_bytes()[2 << 20 : (2 << 20) + (192 << 10)]
    assert data == b"\xc3" * (192 << 10)


def test_header_digest_none(plain):
    """libiscsi's URL knows crc32c and none (its default offers None,CRC32C)."""
    need("iscsi-readcapacity16")
    out = run(["iscsi-readcapacity16", plain.url(DISK2, args="header_digest=none")], timeout=30)
    assert out.returncode == 0, out.stderr
    assert capacity(out.stdout) == SIZE2
