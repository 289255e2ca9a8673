"""Tests of the key=value codec and the negotiation table (netstore.iscsi.text)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netstore.iscsi.directory import send_targets
from netstore.iscsi.text import (
    KEYS,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    Negotiator,
    Phase,
    SessionParams,
    TargetLimits,
    TextError,
    encode_text,
    parse_text,
)

# --- codec ----------------------------------------------------------------------


def test_parse_simple_pairs_in_order() -> None:
    data = b"InitiatorName=iqn.1994-05.com.redhat:abc\x00SessionType=Normal\x00"
    assert parse_text(data) == [
        ("InitiatorName", "iqn.1994-05.com.redhat:abc"),
        ("SessionType", "Normal"),
    ]


def test_parse_tolerates_padding_and_empty() -> None:
    assert parse_text(b"A=1\x00\x00\x00\x00") == [("A", "1")]
    assert parse_text(b"") == []
    assert parse_text(b"\x00\x00") == []


def test_value_may_be_empty_and_contain_equals() -> None:
    assert parse_text(b"SendTargets=\x00X-a=b=c\x00") == [("SendTargets", ""), ("X-a", "b=c")]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"A=1", "NUL"),
        (b"A1\x00", "no '='"),
        (b"=1\x00", "empty key"),
        (b"A=1\x00\x00B=2\x00", "empty key=value pair"),
        (b"K" * (MAX_KEY_LENGTH + 1) + b"=1\x00", "longer than 63"),
        (b"A=" + b"v" * (MAX_VALUE_LENGTH + 1) + b"\x00", "longer than 8192"),
        (b"A=\xff\xfe\x00", "UTF-8"),
        (b"A=1\x00A=2\x00", "twice"),
    ],
)
def test_parse_rejects_junk(data: bytes, fragment: str) -> None:
    with pytest.raises(TextError, match=fragment):
        parse_text(data)


def test_limits_are_inclusive() -> None:
    key = "K" * MAX_KEY_LENGTH
    value = "v" * MAX_VALUE_LENGTH
    assert parse_text(encode_text([(key, value)])) == [(key, value)]


def test_duplicates_allowed_on_request() -> None:
    data = b"TargetAddress=a:1,1\x00TargetAddress=b:1,1\x00"
    assert len(parse_text(data, allow_duplicates=True)) == 2


def test_encode_refuses_unencodable() -> None:
    with pytest.raises(TextError):
        encode_text([("A=B", "1")])
    with pytest.raises(TextError):
        encode_text([("A", "x\x00y")])
    with pytest.raises(TextError):
        encode_text([("", "1")])


@given(st.binary(max_size=600))
def test_parse_random_bytes_only_raises_text_error(data: bytes) -> None:
    try:
        pairs = parse_text(data)
    except TextError:
        return
    for key, value in pairs:
        assert key and "=" not in key and "\x00" not in key and "\x00" not in value


_key = st.text(
    alphabet=st.characters(blacklist_characters="=\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
).filter(lambda k: len(k.encode()) <= MAX_KEY_LENGTH)
_value = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60
)


@given(st.dictionaries(_key, _value, max_size=12))
def test_encode_parse_round_trip(mapping: dict[str, str]) -> None:
    pairs = list(mapping.items())
    assert parse_text(encode_text(pairs)) == pairs


# --- negotiation ----------------------------------------------------------------

OPEN_ISCSI_OPERATIONAL = [
    ("HeaderDigest", "None"),
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
    ("MaxRecvDataSegmentLength", "262144"),
]


def test_open_iscsi_operational_offer() -> None:
    neg = Negotiator(TargetLimits(), "Normal", True, portal_group_tag=1)
    answers = neg.respond(OPEN_ISCSI_OPERATIONAL, Phase.OPERATIONAL)
    assert answers == [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("ErrorRecoveryLevel", "0"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "1048576"),
        ("FirstBurstLength", "262144"),
        ("MaxOutstandingR2T", "1"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("TargetPortalGroupTag", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]
    p = neg.params
    assert (p.header_digest, p.data_digest) == (False, False)
    assert p.max_burst_length == 1048576 and p.first_burst_length == 262144
    assert p.initial_r2t is False and p.immediate_data is True
    assert p.default_time2retain == 0 and p.default_time2wait == 2
    assert p.initiator_mrdsl == 262144 and p.target_mrdsl == 262144
    assert p.max_connections == 1 and p.max_outstanding_r2t == 1


def test_digest_takes_initiators_first_supported_choice() -> None:
    neg = Negotiator(TargetLimits())
    answers = dict(neg.respond([("HeaderDigest", "CRC32C,None"), ("DataDigest", "None,CRC32C")]))
    assert answers["HeaderDigest"] == "CRC32C" and answers["DataDigest"] == "None"
    assert neg.params.header_digest is True and neg.params.data_digest is False


def test_digest_without_common_value_is_rejected() -> None:
    neg = Negotiator(TargetLimits(digests=["None"]))
    assert dict(neg.respond([("HeaderDigest", "CRC32C,MD5")]))["HeaderDigest"] == "Reject"
    assert neg.params.header_digest is False


def test_numeric_min_max_and_ranges() -> None:
    neg = Negotiator(TargetLimits(max_connections=4))
    answers = dict(
        neg.respond(
            [
                ("MaxConnections", "10"),
                ("DefaultTime2Wait", "1"),
                ("DefaultTime2Retain", "3601"),
                ("MaxOutstandingR2T", "0x20"),
                ("ErrorRecoveryLevel", "2"),
            ]
        )
    )
    assert answers["MaxConnections"] == "4"
    assert answers["DefaultTime2Wait"] == "2"  # Maximum of 1 and our 2
    assert answers["DefaultTime2Retain"] == "Reject"  # over 3600
    assert answers["MaxOutstandingR2T"] == "16"  # hex accepted, min with our 16
    assert answers["ErrorRecoveryLevel"] == "0"  # we only do ERL 0
    assert neg.params.default_time2retain == 20  # rejected: default stays


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1e3", "0x", "0xZZ", "+5", "٣"])
def test_malformed_numbers_are_rejected(bad: str) -> None:
    neg = Negotiator(TargetLimits())
    assert neg.respond([("MaxBurstLength", bad)]) == [
        ("MaxBurstLength", "Reject"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]
    assert neg.params.max_burst_length == 262144


def test_boolean_functions() -> None:
    neg = Negotiator(TargetLimits(immediate_data=False))
    answers = dict(
        neg.respond(
            [
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("DataPDUInOrder", "No"),
                ("DataSequenceInOrder", "maybe"),
            ]
        )
    )
    assert answers["InitialR2T"] == "No"  # OR with our No
    assert answers["ImmediateData"] == "No"  # AND with our No
    assert answers["DataPDUInOrder"] == "Yes"  # OR with our Yes
    assert answers["DataSequenceInOrder"] == "Reject"
    assert neg.params.immediate_data is False and neg.params.initial_r2t is False


def test_first_burst_irrelevant_without_unsolicited_data() -> None:
    neg = Negotiator(TargetLimits())
    answers = dict(
        neg.respond([("InitialR2T", "Yes"), ("ImmediateData", "No"), ("FirstBurstLength", "65536")])
    )
    assert answers["FirstBurstLength"] == "Irrelevant"


def test_first_burst_clamped_to_max_burst() -> None:
    neg = Negotiator(TargetLimits())
    answers = dict(neg.respond([("FirstBurstLength", "200000"), ("MaxBurstLength", "100000")]))
    assert answers["MaxBurstLength"] == "100000"
    assert answers["FirstBurstLength"] == "100000"
    assert neg.params.first_burst_length == 100000


def test_unknown_private_and_obsolete_keys() -> None:
    neg = Negotiator(TargetLimits())
    answers = dict(
        neg.respond(
            [
                ("X-com.example.Foo", "1"),
                ("X#Bar", "2"),
                ("Whatever", "3"),
                ("OFMarkInt", "2048~8192"),
                ("IFMarker", "Yes"),
            ]
        )
    )
    assert answers["X-com.example.Foo"] == "NotUnderstood"
    assert answers["X#Bar"] == "NotUnderstood"
    assert answers["Whatever"] == "NotUnderstood"
    assert answers["OFMarkInt"] == "Reject"
    assert answers["IFMarker"] == "No"


def test_discovery_session_irrelevant_keys() -> None:
    neg = Negotiator(TargetLimits(), "Discovery", portal_group_tag=1)
    answers = neg.respond(
        [
            ("HeaderDigest", "None"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxConnections", "1"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
            ("DefaultTime2Wait", "0"),
        ]
    )
    got = dict(answers)
    for key in (
        "MaxBurstLength",
        "FirstBurstLength",
        "InitialR2T",
        "ImmediateData",
        "MaxConnections",
        "MaxOutstandingR2T",
        "DataPDUInOrder",
        "DataSequenceInOrder",
    ):
        assert got[key] == "Irrelevant", key
    assert got["HeaderDigest"] == "None" and got["ErrorRecoveryLevel"] == "0"
    assert got["DefaultTime2Wait"] == "2"
    # No TargetPortalGroupTag in a discovery session, but MRDSL is declared.
    assert "TargetPortalGroupTag" not in got
    assert got["MaxRecvDataSegmentLength"] == "262144"


def test_leading_only_keys_rejected_on_other_connections() -> None:
    neg = Negotiator(TargetLimits(), leading=False)
    got = dict(neg.respond([("MaxBurstLength", "4096"), ("HeaderDigest", "CRC32C")]))
    assert got["MaxBurstLength"] == "Reject" and got["HeaderDigest"] == "CRC32C"


def test_keys_out_of_stage_and_from_wrong_sender() -> None:
    neg = Negotiator(TargetLimits())
    got = dict(
        neg.respond(
            [
                ("MaxBurstLength", "4096"),
                ("AuthMethod", "None"),
                ("TargetAddress", "1.2.3.4:3260,1"),
                ("TargetPortalGroupTag", "3"),
            ],
            Phase.SECURITY,
        )
    )
    assert got["MaxBurstLength"] == "Reject"  # operational key in security stage
    assert got["AuthMethod"] == "None"
    assert got["TargetAddress"] == "Reject"  # only the target sends it
    assert neg.params.max_burst_length == 262144


def test_renegotiating_a_key_in_login_is_rejected_but_ffp_mrdsl_is_fine() -> None:
    neg = Negotiator(TargetLimits())
    neg.respond([("MaxRecvDataSegmentLength", "8192")])
    # The repeat is refused; our own declaration was made once, in the first answer.
    assert neg.respond([("MaxRecvDataSegmentLength", "16384")]) == [
        ("MaxRecvDataSegmentLength", "Reject")
    ]
    assert neg.params.initiator_mrdsl == 8192
    assert neg.respond([("MaxRecvDataSegmentLength", "65536")], Phase.FULL_FEATURE) == []
    assert neg.params.initiator_mrdsl == 65536
    # Leading-only/initialize-only keys cannot change in full feature phase.
    assert neg.respond([("MaxBurstLength", "512")], Phase.FULL_FEATURE) == [
        ("MaxBurstLength", "Reject")
    ]


def test_mrdsl_out_of_range_rejected() -> None:
    neg = Negotiator(TargetLimits())
    got = neg.respond([("MaxRecvDataSegmentLength", "511")])
    assert ("MaxRecvDataSegmentLength", "Reject") in got
    assert neg.params.initiator_mrdsl == 8192


def test_answers_from_initiator_are_not_answered() -> None:
    neg = Negotiator(TargetLimits())
    assert neg.respond([("HeaderDigest", "Reject")], Phase.FULL_FEATURE) == []


def test_long_simple_value_rejected() -> None:
    neg = Negotiator(TargetLimits())
    got = dict(neg.respond([("InitiatorAlias", "a" * 256)], Phase.SECURITY))
    assert got["InitiatorAlias"] == "Reject"


def test_table_covers_every_rfc_key() -> None:
    required = {
        "HeaderDigest", "DataDigest", "MaxConnections", "SendTargets", "TargetName",
        "InitiatorName", "TargetAlias", "InitiatorAlias", "TargetAddress",
        "TargetPortalGroupTag", "InitialR2T", "ImmediateData", "MaxRecvDataSegmentLength",
        "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain",
        "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel",
        "SessionType", "AuthMethod",
    }  # fmt: skip
    assert required <= set(KEYS)


_numeric = st.one_of(st.integers(min_value=0, max_value=2**25), st.just(2**64))


@given(
    max_burst=_numeric,
    first_burst=_numeric,
    max_conn=_numeric,
    r2t=_numeric,
    wait=_numeric,
    retain=_numeric,
    erl=_numeric,
    first_order=st.booleans(),
)
def test_random_numeric_offers_obey_rfc_rules(
    max_burst: int,
    first_burst: int,
    max_conn: int,
    r2t: int,
    wait: int,
    retain: int,
    erl: int,
    first_order: bool,
) -> None:
    limits = TargetLimits()
    neg = Negotiator(limits)
    bursts = [("MaxBurstLength", str(max_burst)), ("FirstBurstLength", str(first_burst))]
    if not first_order:
        bursts.reverse()
    offers = bursts + [
        ("MaxConnections", str(max_conn)),
        ("MaxOutstandingR2T", str(r2t)),
        ("DefaultTime2Wait", str(wait)),
        ("DefaultTime2Retain", str(retain)),
        ("ErrorRecoveryLevel", str(erl)),
    ]
    answers = dict(neg.respond(offers))
    p = neg.params
    assert p.first_burst_length <= p.max_burst_length
    assert 512 <= p.max_burst_length <= limits.max_burst_length
    assert 512 <= p.first_burst_length <= limits.first_burst_length
    assert 1 <= p.max_connections <= limits.max_connections
    assert 1 <= p.max_outstanding_r2t <= limits.max_outstanding_r2t
    assert limits.default_time2wait <= p.default_time2wait <= 3600
    assert 0 <= p.default_time2retain <= min(limits.default_time2retain, 3600)
    assert p.error_recovery_level == 0
    # Every numeric answer is either Reject (out of range) or the agreed value.
    fields = {
        "MaxBurstLength": p.max_burst_length,
        "FirstBurstLength": p.first_burst_length,
        "MaxConnections": p.max_connections,
        "MaxOutstandingR2T": p.max_outstanding_r2t,
        "DefaultTime2Wait": p.default_time2wait,
        "DefaultTime2Retain": p.default_time2retain,
        "ErrorRecoveryLevel": p.error_recovery_level,
    }
    offered = dict(offers)
    for key, agreed in fields.items():
        spec = KEYS[key]
        in_range = spec.low <= int(offered[key]) <= spec.high  # type: ignore[operator]
        if in_range:
            assert answers[key] == str(agreed), key
            ours_min = int(offered[key]) if spec.kind.name == "MIN" else None
            if ours_min is not None:
                assert agreed <= ours_min
            else:
                assert agreed >= int(offered[key])
        else:
            assert answers[key] == "Reject", key


def test_session_params_defaults_match_rfc() -> None:
    p = SessionParams()
    assert (p.first_burst_length, p.max_burst_length) == (65536, 262144)
    assert (p.target_mrdsl, p.initiator_mrdsl) == (8192, 8192)
    assert p.initial_r2t and p.immediate_data and p.max_outstanding_r2t == 1
    assert (p.default_time2wait, p.default_time2retain) == (2, 20)
    # The table's defaults agree with the dataclass.
    for spec in KEYS.values():
        if spec.param and spec.kind.name in ("MIN", "MAX"):
            assert str(getattr(p, spec.param)) == spec.default, spec.name


# --- SendTargets ------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    allow: list[str] = field(default_factory=list)
    alias: str | None = None
    chap: None = None

    def admits(self, initiator: str) -> bool:
        from netstore.iscsi.login import TargetEntry

        return TargetEntry(self.name, allow=self.allow).admits(initiator)


@dataclass
class _Directory:
    entries: list[_Entry]
    portals: list[tuple[str, int]]
    discovery_chap: None = None

    def lookup(self, name: str) -> _Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def targets(self) -> list[_Entry]:
        return list(self.entries)


DIRECTORY = _Directory(
    [
        _Entry("iqn.2026-11.org.netstore:vm.a"),
        _Entry("iqn.2026-11.org.netstore:scratch", allow=["iqn.1994-05.com.example:*"]),
    ],
    [("127.0.0.1", 3260), ("fe80::1", 3261)],
)


def test_send_targets_all_respects_allow_lists_and_brackets_ipv6() -> None:
    got = send_targets(DIRECTORY, "iqn.1994-05.com.example:host1", "All", portal_group_tag=7)
    assert got == [
        ("TargetName", "iqn.2026-11.org.netstore:vm.a"),
        ("TargetAddress", "127.0.0.1:3260,7"),
        ("TargetAddress", "[fe80::1]:3261,7"),
        ("TargetName", "iqn.2026-11.org.netstore:scratch"),
        ("TargetAddress", "127.0.0.1:3260,7"),
        ("TargetAddress", "[fe80::1]:3261,7"),
    ]
    other = send_targets(DIRECTORY, "iqn.2000-01.org.other:x", "All", portal_group_tag=7)
    assert [v for k, v in other if k == "TargetName"] == ["iqn.2026-11.org.netstore:vm.a"]


def test_send_targets_named_and_empty() -> None:
    hidden = send_targets(DIRECTORY, "iqn.2000-01.org.other:x", "iqn.2026-11.org.netstore:scratch")
    assert hidden == []
    one = send_targets(DIRECTORY, "iqn.2000-01.org.other:x", "iqn.2026-11.org.netstore:vm.a")
    assert one[0] == ("TargetName", "iqn.2026-11.org.netstore:vm.a") and len(one) == 3
    mine = send_targets(DIRECTORY, "iqn.x:y", "", session_target="iqn.2026-11.org.netstore:vm.a")
    assert mine[0] == ("TargetName", "iqn.2026-11.org.netstore:vm.a")
    assert send_targets(DIRECTORY, "iqn.x:y", "") == [("SendTargets", "Reject")]
    assert send_targets(
        DIRECTORY, "iqn.x:y", "All", session_target="iqn.2026-11.org.netstore:vm.a"
    ) == [("SendTargets", "Reject")]
