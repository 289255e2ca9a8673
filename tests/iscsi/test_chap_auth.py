"""Tests of the target-side CHAP exchange (netstore.iscsi.chap)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netstore.iscsi.chap import (
    CHALLENGE_LENGTH,
    AuthenticationFailed,
    ChapAuthenticator,
    decode_binary,
    encode_hex,
)


def md5_response(identifier: int, secret: str, challenge: bytes) -> bytes:
    """RFC 1994 response, computed independently of the module under test."""
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()


def challenge_of(reply: dict[str, str]) -> tuple[int, bytes]:
    assert reply["CHAP_A"] == "5"
    assert reply["CHAP_C"].startswith("0x")
    return int(reply["CHAP_I"]), bytes.fromhex(reply["CHAP_C"][2:])


def test_one_way_chap_hex_response() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    reply = auth.step({"CHAP_A": "7,5"})
    identifier, challenge = challenge_of(reply)
    assert len(challenge) >= CHALLENGE_LENGTH and 0 <= identifier <= 255
    assert not auth.done
    response = md5_response(identifier, "secret-123456", challenge)
    assert auth.step({"CHAP_N": "alice", "CHAP_R": "0x" + response.hex().upper()}) == {}
    assert auth.done and not auth.mutual


def test_one_way_chap_base64_response() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    identifier, challenge = challenge_of(auth.step({"CHAP_A": "5"}))
    response = md5_response(identifier, "secret-123456", challenge)
    auth.step({"CHAP_N": "alice", "CHAP_R": "0b" + base64.b64encode(response).decode()})
    assert auth.done


def test_mutual_chap_answers_with_target_credentials() -> None:
    auth = ChapAuthenticator("alice", "secret-123456", "target-user", "target-secret-9")
    identifier, challenge = challenge_of(auth.step({"CHAP_A": "5"}))
    my_challenge = bytes(range(20))
    reply = auth.step(
        {
            "CHAP_N": "alice",
            "CHAP_R": encode_hex(md5_response(identifier, "secret-123456", challenge)),
            "CHAP_I": "77",
            "CHAP_C": encode_hex(my_challenge),
        }
    )
    assert reply["CHAP_N"] == "target-user"
    assert reply["CHAP_R"] == "0x" + md5_response(77, "target-secret-9", my_challenge).hex()
    assert auth.done and auth.mutual


def test_challenges_come_from_the_random_source() -> None:
    stream = iter([b"\x09", b"\xaa" * CHALLENGE_LENGTH])
    auth = ChapAuthenticator("u", "s" * 12, random=lambda n: next(stream))
    assert auth.step({"CHAP_A": "5"}) == {
        "CHAP_A": "5",
        "CHAP_I": "9",
        "CHAP_C": "0x" + "aa" * CHALLENGE_LENGTH,
    }


def _ready(auth: ChapAuthenticator, secret: str = "secret-123456") -> dict[str, str]:
    identifier, challenge = challenge_of(auth.step({"CHAP_A": "5"}))
    return {"CHAP_N": "alice", "CHAP_R": encode_hex(md5_response(identifier, secret, challenge))}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"CHAP_N": "mallory"}, "unknown CHAP_N"),
        ({"CHAP_R": "0x" + "00" * 16}, "wrong CHAP_R"),
        ({"CHAP_R": "0x1234"}, "16"),
        ({"CHAP_R": "zz"}, "prefix"),
        ({"CHAP_R": "0xgg"}, "bad binary"),
        ({"CHAP_I": "1"}, "both CHAP_I and CHAP_C"),
        ({"CHAP_X": "1"}, "unexpected"),
    ],
)
def test_one_way_refusals(change: dict[str, str], reason: str) -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    keys = _ready(auth) | change
    with pytest.raises(AuthenticationFailed, match=reason) as info:
        auth.step(keys)
    assert reason in info.value.reason  # the reason is kept for the log
    assert not auth.done
    with pytest.raises(AuthenticationFailed):  # failed stays failed
        auth.step({"CHAP_A": "5"})


def test_wrong_secret_fails() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    with pytest.raises(AuthenticationFailed, match="wrong CHAP_R"):
        auth.step(_ready(auth, secret="guess"))


def test_missing_keys() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    with pytest.raises(AuthenticationFailed, match="expected CHAP_A"):
        auth.step({})
    auth = ChapAuthenticator("alice", "secret-123456")
    auth.step({"CHAP_A": "5"})
    with pytest.raises(AuthenticationFailed, match="missing CHAP_R"):
        auth.step({"CHAP_N": "alice"})


def test_no_md5_offered() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    with pytest.raises(AuthenticationFailed, match="only MD5"):
        auth.step({"CHAP_A": "6,7"})


def test_mutual_without_target_secret_refused() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    keys = _ready(auth) | {"CHAP_I": "1", "CHAP_C": "0x" + "11" * 16}
    with pytest.raises(AuthenticationFailed, match="no mutual secret"):
        auth.step(keys)


def test_reflected_challenge_refused() -> None:
    auth = ChapAuthenticator("alice", "secret-123456", "tgt", "other-secret-1")
    identifier, challenge = challenge_of(auth.step({"CHAP_A": "5"}))
    with pytest.raises(AuthenticationFailed, match="reused the target's challenge"):
        auth.step(
            {
                "CHAP_N": "alice",
                "CHAP_R": encode_hex(md5_response(identifier, "secret-123456", challenge)),
                "CHAP_I": str(identifier),
                "CHAP_C": encode_hex(challenge),
            }
        )


def test_mutual_secret_equal_to_initiator_secret_refused() -> None:
    auth = ChapAuthenticator("alice", "same-secret-1", "tgt", "same-secret-1")
    keys = _ready(auth, "same-secret-1") | {"CHAP_I": "3", "CHAP_C": "0x" + "22" * 16}
    with pytest.raises(AuthenticationFailed, match="equals"):
        auth.step(keys)


@pytest.mark.parametrize("bad_id", ["256", "-1", "x", ""])
def test_bad_mutual_identifier(bad_id: str) -> None:
    auth = ChapAuthenticator("alice", "secret-123456", "tgt", "other-secret-1")
    keys = _ready(auth) | {"CHAP_I": bad_id, "CHAP_C": "0x" + "22" * 16}
    with pytest.raises(AuthenticationFailed, match="CHAP_I"):
        auth.step(keys)


def test_oversized_mutual_challenge() -> None:
    auth = ChapAuthenticator("alice", "secret-123456", "tgt", "other-secret-1")
    keys = _ready(auth) | {"CHAP_I": "1", "CHAP_C": "0x" + "22" * 1025}
    with pytest.raises(AuthenticationFailed, match="over 1024"):
        auth.step(keys)


def test_keys_after_success_refused() -> None:
    auth = ChapAuthenticator("alice", "secret-123456")
    auth.step(_ready(auth))
    with pytest.raises(AuthenticationFailed):
        auth.step({"CHAP_A": "5"})


@given(st.binary(min_size=1, max_size=64))
def test_binary_value_codecs_round_trip(data: bytes) -> None:
    assert decode_binary(encode_hex(data)) == data
    assert decode_binary("0B" + base64.b64encode(data).decode()) == data
    assert decode_binary("0X" + data.hex().upper()) == data


def test_odd_hex_digits_are_left_padded() -> None:
    assert decode_binary("0xabc") == b"\x0a\xbc"


@given(st.text(max_size=40))
def test_decode_binary_only_raises_value_error(text: str) -> None:
    try:
        decode_binary(text)
    except ValueError:
        pass
