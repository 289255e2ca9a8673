# tests/registry/conftest.py - a fresh registry in a temp state directory, on
# each database the registry runs on: SQLite (one host, the default) and
# PostgreSQL (several hosts; a private server, tests/pg.py).  A test taking
# `reg` or `place` runs once per backend.
"""Fixtures for the registry tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from netstore.registry import Registry
from tests.pg import PgServer

BACKENDS = ("sqlite", "postgresql")


class Place(NamedTuple):
    """Where a test's registry lives: its state directory and database URL."""

    state_dir: Path
    url: str | None

    def open(self) -> Registry:
        return Registry.open(self.state_dir, self.url)


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "sqlite":
        return Place(tmp_path / "state", None)
    server: PgServer = request.getfixturevalue("postgres_server")
    return Place(tmp_path / "state", server.fresh_url())


@pytest.fixture
def reg(place: Place) -> Iterator[Registry]:
    with place.open() as r:
        yield r
