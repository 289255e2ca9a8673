# tests/registry/test_media_rules.py - the pure parts of netstore.disk.media
# the registry and CLI share: sizes and the type rule table.
"""Sizes and check_type without a database."""

from __future__ import annotations

import pytest

from netstore.disk.media import (
    TYPES,
    MediumRuleError,
    TypeContext,
    check_type,
    format_size,
    parse_size,
)


@pytest.mark.parametrize("text,n", [("1", 1), ("2K", 2048), ("1m", 1 << 20), ("3G", 3 << 30),
                                    ("1T", 1 << 40), ("5MiB", 5 << 20), (" 7 G ", 7 << 30)])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1G", "1P", "0", "0G", "1 GB B"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (None, 0, 512, 1 << 20, 3 << 29, 1 << 40)] == [
        "-", "0 B", "512 B", "1 MiB", "1.5 GiB", "1 TiB"]


def test_rules_for_a_free_fixed_floppy_allow_every_type() -> None:
    ctx = TypeContext("f", "floppy", "fixed", current="normal")
    for t in TYPES:
        check_type(ctx, t)


def test_first_rule_wins_for_a_layer() -> None:
    ctx = TypeContext("l", "hdd", "dynamic", current="normal", parent="b",
                      machines=("a", "b"), children=("x",))
    with pytest.raises(MediumRuleError, match="l is a differencing layer of b"):
        check_type(ctx, "shareable")
