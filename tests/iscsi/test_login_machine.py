"""Tests of the login state machine (netstore.iscsi.login), driven like real initiators."""

from __future__ import annotations

import hashlib
import itertools
import logging

import pytest

from netstore.iscsi.login import (
    ChapCredentials,
    LoginMachine,
    LoginRequest,
    LoginResponse,
)
from netstore.iscsi.text import Phase, TargetLimits, encode_text, parse_text
from tests.iscsi.targets import (
    CHAP_TARGET,
    INITIATOR,
    ISID,
    LOCKED_TARGET,
    MUTUAL_TARGET,
    OPEN_TARGET,
    Directory,
    make_directory,
)


class Harness:
    """A LoginMachine plus a request builder that tracks CmdSN like an initiator."""

    def __init__(
        self,
        directory: Directory | None = None,
        sessions: dict[tuple[str, bytes, int], object] | None = None,
        caplog: pytest.LogCaptureFixture | None = None,
    ) -> None:
        self.tsihs = itertools.count(0x10)
        self.sessions = sessions or {}
        self.machine = LoginMachine(
            directory or make_directory(),
            portal_group_tag=1,
            limits=TargetLimits(),
            log=logging.getLogger("test.login"),
            find_session=lambda name, isid, tsih: self.sessions.get((name, isid, tsih)),
            new_tsih=lambda: next(self.tsihs),
        )
        self.itt = 0

    def send(
        self,
        pairs: list[tuple[str, str]] | bytes,
        *,
        csg: int,
        nsg: int = 0,
        transit: bool = False,
        cont: bool = False,
        tsih: int = 0,
        version_min: int = 0,
        cid: int = 0,
    ) -> LoginResponse:
        data = pairs if isinstance(pairs, bytes) else encode_text(pairs)
        self.itt += 1
        req = LoginRequest(
            transit=transit,
            cont=cont,
            csg=csg,
            nsg=nsg,
            version_max=0,
            version_min=version_min,
            isid=ISID,
            tsih=tsih,
            itt=self.itt,
            cid=cid,
            cmdsn=1,
            exp_statsn=0,
            data=data,
        )
        resp = self.machine.receive(req)
        assert resp.isid == ISID and resp.itt == self.itt  # echoed (RFC 7143 11.13)
        assert resp.csg == csg or resp.status_class != 0
        assert resp.version_max == 0 and resp.version_active == 0
        return resp


def keys(resp: LoginResponse) -> dict[str, str]:
    return dict(parse_text(resp.data))


def status(resp: LoginResponse) -> int:
    return resp.status_class << 8 | resp.status_detail


def first_pdu(target: str = OPEN_TARGET, auth: str = "None") -> list[tuple[str, str]]:
    pairs = [
        ("InitiatorName", INITIATOR),
        ("InitiatorAlias", "client1"),
        ("TargetName", target),
        ("SessionType", "Normal"),
    ]
    if auth:
        pairs.append(("AuthMethod", auth))
    return pairs


OPERATIONAL = [
    ("HeaderDigest", "CRC32C,None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "65536"),
]


def assert_operational_answers(resp: LoginResponse) -> None:
    got = keys(resp)
    assert got == {
        "HeaderDigest": "CRC32C",
        "DataDigest": "None",
        "DefaultTime2Wait": "2",
        "DefaultTime2Retain": "0",
        "IFMarker": "No",
        "OFMarker": "No",
        "ErrorRecoveryLevel": "0",
        "InitialR2T": "No",
        "ImmediateData": "Yes",
        "MaxBurstLength": "1048576",
        "FirstBurstLength": "262144",
        "MaxOutstandingR2T": "1",
        "MaxConnections": "1",
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
        "MaxRecvDataSegmentLength": "262144",
    }


# --- open-iscsi style: security (AuthMethod=None) -> operational -> FFP -----------


def test_open_iscsi_login_without_chap() -> None:
    h = Harness()
    r1 = h.send(first_pdu(auth="CHAP,None"), csg=0, nsg=1, transit=True)
    assert status(r1) == 0
    assert (r1.transit, r1.csg, r1.nsg, r1.tsih) == (True, 0, 1, 0)
    assert keys(r1) == {
        "AuthMethod": "None",
        "TargetPortalGroupTag": "1",
        "TargetAlias": "open disk",
    }
    assert not h.machine.done

    r2 = h.send(OPERATIONAL, csg=1, nsg=3, transit=True)
    assert status(r2) == 0 and (r2.transit, r2.csg, r2.nsg) == (True, 1, 3)
    assert r2.tsih == 0x10  # a new session's TSIH, only in the final response
    assert_operational_answers(r2)
    assert h.machine.done and not h.machine.failed

    out = h.machine.outcome
    assert out is not None
    assert (out.initiator_name, out.isid, out.tsih, out.cid) == (INITIATOR, ISID, 0x10, 0)
    assert out.target is not None and out.target.name == OPEN_TARGET
    assert out.leading and out.auth_method == "None"
    p = out.params
    assert p.header_digest is True and p.data_digest is False
    assert (p.target_mrdsl, p.initiator_mrdsl) == (262144, 65536)
    assert (p.max_burst_length, p.first_burst_length) == (1048576, 262144)
    assert p.initial_r2t is False and p.immediate_data is True
    assert (p.max_outstanding_r2t, p.max_connections, p.error_recovery_level) == (1, 1, 0)
    assert (p.default_time2wait, p.default_time2retain) == (2, 0)
    assert p.data_pdu_in_order and p.data_sequence_in_order
    assert (p.session_type, p.initiator_name, p.target_name) == ("Normal", INITIATOR, OPEN_TARGET)
    assert p.initiator_alias == "client1"

    with pytest.raises(RuntimeError):
        h.send([], csg=1, nsg=3, transit=True)


def test_libiscsi_style_stays_in_stage_until_t_bit() -> None:
    h = Harness()
    r1 = h.send(first_pdu(), csg=0)  # T=0: the target must not move on
    assert status(r1) == 0 and r1.transit is False and r1.nsg == 0
    assert keys(r1)["AuthMethod"] == "None"
    r2 = h.send([], csg=0, nsg=1, transit=True)
    assert r2.transit and r2.nsg == 1 and keys(r2) == {}  # TPGT only in the first response
    r3 = h.send(OPERATIONAL[:3], csg=1)
    assert not r3.transit and keys(r3)["MaxRecvDataSegmentLength"] == "262144"
    r4 = h.send([("MaxConnections", "1")], csg=1, nsg=3, transit=True)
    assert r4.transit and keys(r4) == {"MaxConnections": "1"}
    assert h.machine.done


def test_security_straight_to_full_feature_keeps_declarative_defaults() -> None:
    h = Harness()
    r = h.send(first_pdu(), csg=0, nsg=3, transit=True)
    assert status(r) == 0 and r.transit and r.nsg == 3 and r.tsih == 0x10
    params = h.machine.outcome.params  # type: ignore[union-attr]
    # Nobody declared MaxRecvDataSegmentLength: both stay 8192 (RFC 7143 13.12).
    assert (params.target_mrdsl, params.initiator_mrdsl) == (8192, 8192)


def test_login_straight_into_operational_stage() -> None:
    h = Harness()
    pairs = first_pdu(auth="")[:4] + OPERATIONAL
    r = h.send(pairs, csg=1, nsg=3, transit=True)
    assert status(r) == 0 and r.tsih == 0x10
    got = keys(r)
    assert got["TargetPortalGroupTag"] == "1" and got["HeaderDigest"] == "CRC32C"


# --- CHAP --------------------------------------------------------------------------


def md5(identifier: int, secret: str, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()


def chap_login(h: Harness, target: str, secret: str, mutual: bool) -> LoginResponse:
    r1 = h.send(first_pdu(target, "CHAP,None"), csg=0, nsg=1, transit=True)
    assert status(r1) == 0 and not r1.transit
    assert keys(r1)["AuthMethod"] == "CHAP"
    r2 = h.send([("CHAP_A", "5")], csg=0, nsg=1, transit=True)
    assert status(r2) == 0 and not r2.transit
    got = keys(r2)
    assert got["CHAP_A"] == "5"
    identifier, challenge = int(got["CHAP_I"]), bytes.fromhex(got["CHAP_C"][2:])
    assert len(challenge) >= 16
    answer = [("CHAP_N", "alice"), ("CHAP_R", "0x" + md5(identifier, secret, challenge).hex())]
    if mutual:
        answer += [("CHAP_I", "200"), ("CHAP_C", "0x" + "5a" * 16)]
    return h.send(answer, csg=0, nsg=1, transit=True)


def test_one_way_chap_login() -> None:
    h = Harness()
    r3 = chap_login(h, CHAP_TARGET, "alice-secret-1", mutual=False)
    assert status(r3) == 0 and r3.transit and r3.nsg == 1 and keys(r3) == {}
    r4 = h.send(OPERATIONAL, csg=1, nsg=3, transit=True)
    assert status(r4) == 0 and h.machine.done
    assert_operational_answers(r4)
    assert h.machine.outcome.auth_method == "CHAP"  # type: ignore[union-attr]


def test_mutual_chap_login() -> None:
    h = Harness()
    r3 = chap_login(h, MUTUAL_TARGET, "alice-secret-1", mutual=True)
    assert status(r3) == 0 and r3.transit
    assert keys(r3) == {
        "CHAP_N": "target",
        "CHAP_R": "0x" + md5(200, "target-secret-2", b"\x5a" * 16).hex(),
    }
    h.send(OPERATIONAL, csg=1, nsg=3, transit=True)
    assert h.machine.done and h.machine.outcome.mutual_chap  # type: ignore[union-attr]


def test_chap_wrong_secret_is_0201_and_reason_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="test.login"):
        r = chap_login(h, CHAP_TARGET, "wrong", mutual=False)
    assert status(r) == 0x0201 and r.data == b"" and not r.transit
    assert h.machine.failed and not h.machine.done
    message = caplog.records[-1].getMessage()
    assert INITIATOR in message and CHAP_TARGET in message and "wrong CHAP_R" in message


def test_mutual_asked_of_target_without_mutual_secret() -> None:
    h = Harness()
    r = chap_login(h, CHAP_TARGET, "alice-secret-1", mutual=True)
    assert status(r) == 0x0201 and h.machine.failed


def test_chap_target_refuses_auth_none() -> None:
    h = Harness()
    r = h.send(first_pdu(CHAP_TARGET, "None"), csg=0, nsg=1, transit=True)
    assert status(r) == 0x0201 and h.machine.failed


def test_chap_target_refuses_skipping_security_stage() -> None:
    h = Harness()
    r = h.send(first_pdu(CHAP_TARGET, "")[:4] + OPERATIONAL, csg=1, nsg=3, transit=True)
    assert status(r) == 0x0201


def test_chap_target_refuses_leaving_security_without_authmethod() -> None:
    h = Harness()
    r = h.send(first_pdu(CHAP_TARGET, ""), csg=0, nsg=1, transit=True)
    assert status(r) == 0x0201


def test_chap_missing_chap_a() -> None:
    h = Harness()
    h.send(first_pdu(CHAP_TARGET, "CHAP"), csg=0, nsg=1, transit=True)
    r = h.send([], csg=0, nsg=1, transit=True)
    assert status(r) == 0x0201


def test_chap_keys_in_operational_stage_rejected() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0, nsg=1, transit=True)
    r = h.send([("CHAP_A", "5"), ("MaxConnections", "1")], csg=1)
    assert status(r) == 0 and keys(r)["CHAP_A"] == "Reject"


def test_open_target_only_chap_offered() -> None:
    h = Harness()
    r = h.send(first_pdu(OPEN_TARGET, "CHAP"), csg=0, nsg=1, transit=True)
    assert status(r) == 0x0201


# --- discovery ----------------------------------------------------------------------


def test_discovery_session_and_send_targets() -> None:
    h = Harness()
    r1 = h.send(
        [("InitiatorName", INITIATOR), ("SessionType", "Discovery"), ("AuthMethod", "None")],
        csg=0,
        nsg=1,
        transit=True,
    )
    assert status(r1) == 0 and keys(r1) == {"AuthMethod": "None"}  # no TPGT in discovery
    r2 = h.send(
        [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxBurstLength", "262144"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxRecvDataSegmentLength", "32768"),
        ],
        csg=1,
        nsg=3,
        transit=True,
    )
    assert status(r2) == 0 and h.machine.done
    assert keys(r2) == {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxBurstLength": "Irrelevant",
        "ErrorRecoveryLevel": "0",
        "MaxRecvDataSegmentLength": "262144",
    }
    out = h.machine.outcome
    assert out is not None and out.target is None
    assert out.params.session_type == "Discovery" and out.params.initiator_mrdsl == 32768
    # Full feature phase: the shell answers Text requests with the same negotiator.
    answer = out.negotiator.respond([("SendTargets", "All")], Phase.FULL_FEATURE)
    names = [v for k, v in answer if k == "TargetName"]
    assert names == [OPEN_TARGET, CHAP_TARGET, MUTUAL_TARGET]  # LOCKED_TARGET not allowed
    assert ("TargetAddress", "127.0.0.1:3260,1") in answer


def test_discovery_with_chap() -> None:
    h = Harness(make_directory(discovery_chap=ChapCredentials("alice", "disco-secret-1")))
    r1 = h.send(
        [("InitiatorName", INITIATOR), ("SessionType", "Discovery"), ("AuthMethod", "None")],
        csg=0,
        nsg=1,
        transit=True,
    )
    assert status(r1) == 0x0201
    h = Harness(make_directory(discovery_chap=ChapCredentials("alice", "disco-secret-1")))
    r = h.send(
        [("InitiatorName", INITIATOR), ("SessionType", "Discovery"), ("AuthMethod", "CHAP")],
        csg=0,
        nsg=1,
        transit=True,
    )
    assert keys(r) == {"AuthMethod": "CHAP"}
    got = keys(h.send([("CHAP_A", "5")], csg=0, nsg=1, transit=True))
    resp = md5(int(got["CHAP_I"]), "disco-secret-1", bytes.fromhex(got["CHAP_C"][2:]))
    r3 = h.send([("CHAP_N", "alice"), ("CHAP_R", "0x" + resp.hex())], csg=0, nsg=3, transit=True)
    assert status(r3) == 0 and r3.transit and h.machine.done


def test_normal_session_text_renegotiates_mrdsl() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0, nsg=1, transit=True)
    h.send(OPERATIONAL, csg=1, nsg=3, transit=True)
    neg = h.machine.outcome.negotiator  # type: ignore[union-attr]
    assert neg.respond([("MaxRecvDataSegmentLength", "131072")], Phase.FULL_FEATURE) == []
    assert neg.params.initiator_mrdsl == 131072
    own = neg.respond([("SendTargets", "")], Phase.FULL_FEATURE)
    assert own == [("TargetName", OPEN_TARGET), ("TargetAddress", "127.0.0.1:3260,1")]


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("TargetName", OPEN_TARGET), ("AuthMethod", "None")], 0x0207),  # no InitiatorName
        ([("InitiatorName", INITIATOR), ("AuthMethod", "None")], 0x0207),  # no TargetName
        ([("InitiatorName", INITIATOR), ("TargetName", "iqn.nope:x")], 0x0203),
        ([("InitiatorName", INITIATOR), ("TargetName", LOCKED_TARGET)], 0x0202),
        ([("InitiatorName", INITIATOR), ("SessionType", "Bogus")], 0x0209),
    ],
)
def test_first_pdu_refusals(
    pairs: list[tuple[str, str]], expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="test.login"):
        r = h.send(pairs, csg=0, nsg=1, transit=True)
    assert status(r) == expected
    assert h.machine.failed and r.data == b"" and not r.transit
    assert caplog.records and caplog.records[-1].levelno == logging.WARNING


def test_allow_list_match_admits() -> None:
    h = Harness()
    pairs = [("InitiatorName", "iqn.1994-05.com.example:host9"), ("TargetName", LOCKED_TARGET)]
    r = h.send(pairs + [("AuthMethod", "None")], csg=0, nsg=1, transit=True)
    assert status(r) == 0


def test_unsupported_version() -> None:
    h = Harness()
    r = h.send(first_pdu(), csg=0, nsg=1, transit=True, version_min=1)
    assert status(r) == 0x0205


def test_unknown_tsih_is_session_does_not_exist() -> None:
    h = Harness()
    r = h.send(first_pdu(), csg=0, nsg=1, transit=True, tsih=0x99)
    assert status(r) == 0x020A


def test_known_tsih_adds_a_connection() -> None:
    h = Harness(sessions={(INITIATOR, ISID, 0x42): object()})
    r1 = h.send(first_pdu(), csg=0, nsg=1, transit=True, tsih=0x42, cid=1)
    assert status(r1) == 0 and r1.tsih == 0x42
    r2 = h.send(
        [("MaxBurstLength", "4096"), ("HeaderDigest", "None")],
        csg=1,
        nsg=3,
        transit=True,
        tsih=0x42,
        cid=1,
    )
    assert status(r2) == 0 and r2.tsih == 0x42
    assert keys(r2)["MaxBurstLength"] == "Reject"  # leading-only key
    out = h.machine.outcome
    assert out is not None and not out.leading and out.tsih == 0x42 and out.cid == 1


@pytest.mark.parametrize(
    ("csg", "nsg", "transit", "cont"),
    [
        (0, 2, True, False),  # NSG 2 is reserved
        (1, 1, True, False),  # no 1 -> 1 transition
        (1, 0, True, False),  # no going back
        (2, 3, True, False),  # CSG 2 reserved
        (3, 3, False, False),  # CSG 3 is not a login stage
        (0, 1, True, True),  # T and C together
    ],
)
def test_invalid_stage_fields(csg: int, nsg: int, transit: bool, cont: bool) -> None:
    h = Harness()
    r = h.send(first_pdu(), csg=csg, nsg=nsg, transit=transit, cont=cont)
    assert status(r) == 0x0200 and h.machine.failed


def test_pdu_for_the_wrong_stage() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0, nsg=1, transit=True)
    r = h.send([], csg=0, nsg=1, transit=True)  # back in security after moving on
    assert status(r) == 0x0200


def test_isid_or_tsih_change_mid_login() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0)
    r = h.send([], csg=0, cid=5)
    assert status(r) == 0x0200


def test_malformed_text_is_initiator_error() -> None:
    h = Harness()
    r = h.send(b"InitiatorName=x\x00garbage", csg=0)
    assert status(r) == 0x0200


def test_continued_text_is_accumulated() -> None:
    h = Harness()
    data = encode_text(first_pdu())
    cut = len(data) // 2
    r1 = h.send(data[:cut], csg=0, nsg=1, cont=True)
    assert status(r1) == 0 and r1.data == b"" and not r1.transit and not r1.cont
    r2 = h.send(data[cut:], csg=0, nsg=1, transit=True)
    assert status(r2) == 0 and r2.transit
    assert keys(r2)["AuthMethod"] == "None" and keys(r2)["TargetPortalGroupTag"] == "1"


def test_endless_login_is_cut_off() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0)
    for _ in range(100):
        r = h.send([], csg=0)
        if h.machine.failed:
            assert status(r) == 0x0200
            break
    assert h.machine.failed


def test_repeated_key_in_later_pdu_is_rejected() -> None:
    h = Harness()
    h.send(first_pdu(), csg=0, nsg=1, transit=True)
    h.send([("MaxBurstLength", "65536")], csg=1)
    r = h.send([("MaxBurstLength", "131072")], csg=1, nsg=3, transit=True)
    assert keys(r) == {"MaxBurstLength": "Reject"}
    assert h.machine.outcome.params.max_burst_length == 65536  # type: ignore[union-attr]
