# tests/registry/conftest.py - a fresh registry in a temp state directory.
"""Fixtures for the registry tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netstore.registry import Registry


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(tmp_path / "state") as r:
        yield r
