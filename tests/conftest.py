# tests/conftest.py - the fixtures every test directory uses, built on
# tests/harness.py: real `netstore serve` subprocesses started per test
# (netstore_daemon) or per module (module_netstore_daemon), always stopped at
# teardown; a failing test's report shows the logs of the daemons alive for it.
# Every subprocess of a test imports this checkout (PYTHONPATH), not an install.
"""Shared pytest fixtures for netstore (the daemon harness is tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ACTIVE, Daemons, pythonpath, report_sections
from tests.pg import PgServer


@pytest.fixture(scope="session", autouse=True)
def subprocesses_import_this_checkout() -> Iterator[None]:
    """Every ``python`` a test starts (the CLI, tools) imports this tree, as pytest does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", pythonpath())
        yield


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """A private PostgreSQL server for the session (tests/pg.py); ``.fresh_url()``
    gives each test an empty database of its own."""
    server = PgServer()
    yield server
    server.stop()


@pytest.fixture
def netstore_daemon(tmp_path: Path) -> Iterator[Daemons]:
    """A factory starting ``netstore serve`` daemons in ``tmp_path``, stopped at teardown.

    ``netstore_daemon(config_text="", images={"disk.img": 64 << 20}, name=None)``
    (tests.harness.Daemons): the state lives in ``<tmp>/netstore-state``
    (shared by the test's daemons); without any ``portals`` the daemon listens
    on 127.0.0.1 port 0 (``.port`` tells which).
    """
    daemons = Daemons(tmp_path, shared_state=True)
    yield daemons
    daemons.shutdown_all()


@pytest.fixture(scope="module")
def module_netstore_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    """The same factory for a whole module: its daemons serve many tests, side by side.

    Each daemon's state is ``<tmp>/<name>-state``, which its config names as
    ``state_dir = "{state_dir}"``; ``.tmp`` is the module's directory.
    """
    daemons = Daemons(tmp_path_factory.mktemp("daemons"), shared_state=False)
    yield daemons
    daemons.shutdown_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of every daemon alive for a failing test to its report."""
    report = yield
    if report.failed:
        report.sections.extend(report_sections(ACTIVE))
    return report
