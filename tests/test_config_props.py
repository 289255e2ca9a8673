# tests/test_config_props.py - whatever document or text the configuration
# loader is given (hypothesis), only ConfigError comes out of it.
"""Property tests for netstore.config."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.config import (
    ConfigError,
    parse_config,
)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))



# --- property: whatever the document, only ConfigError comes out ----------

KEYS = [
    "daemon",
    "iscsi",
    "switches",
    "state_dir",
    "log_level",
    "portals",
    "base_iqn",
    "discovery_chap",
    "targets",
    "nop_interval_s",
    "nop_timeout_s",
    "max_recv_data_segment_length",
    "iqn",
    "luns",
    "allow",
    "chap",
    "alias",
    "user",
    "secret",
    "mutual_user",
    "mutual_secret",
    "name",
    "mac_aging_s",
    "mac_table_size",
    "capture",
    "ports",
    "kind",
    "local",
    "remote",
    "vlan",
    "trunk",
    "native",
    "device",
    "listen",
    "connect",
    "path",
    "mtu",
    "in",
    "out",
    "link",
    "flap",
    "seed",
    "delay",
    "jitter",
    "loss",
    "gemodel",
    "p",
    "rate",
    "x",
]
PLAUSIBLE = [
    "127.0.0.1:3260",
    "[::1]:3260",
    "::1",
    "host:99999",
    "iqn.2026-11.org.netstore:a",
    "eui.0123456789ABCDEF",
    "naa.0123456789abcdef",
    "udp",
    "unixgram",
    "stream",
    "tap",
    "vde",
    "tap0",
    "*",
    "/dev/null",
    "./img",
    "img",
    "sw0",
    "info",
    "123456789012",
    "80ms",
    "1%",
    "120%",
    "10mbit",
    "down",
    "down 2s every 30s",
    "../../etc",
    "~",
    "",
    "\x00",
    "a" * 300,
    "/nonexistent/\x00/x",
]

scalars = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)


def to_toml(value: object) -> str:
    """A minimal inline TOML writer, enough for generated documents."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {to_toml(v)}" for k, v in value.items()) + "}"


_HYPO_DIR = Path(tempfile.mkdtemp(prefix="netstore-config-hypo-"))
(_HYPO_DIR / "img").write_bytes(b"\0" * 512)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents_only_raise_config_error(doc: dict) -> None:
    text = "\n".join(f"{json.dumps(k)} = {to_toml(v)}" for k, v in doc.items())
    try:
        parse_config(text, file="h.toml", source=_HYPO_DIR / "h.toml")
    except ConfigError as e:
        assert str(e).startswith("h.toml: ") and "\n" not in str(e)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(list("[]{}=\".,:'\n #abc1-_tsrue") + ["iscsi", "targets"]), max_size=60
    ).map("".join)
)
def test_raw_text_only_raises_config_error(text: str) -> None:
    try:
        parse_config(text, file="h.toml", source=_HYPO_DIR / "h.toml")
    except ConfigError as e:
        assert str(e).startswith("h.toml: ")
