# tools/benchkit_children.py - the children of the benchmark tools (part of
# benchkit, which re-exports all of it): spawn() starts each in a session of
# its own and remembers it, end() stops one (SIGTERM to its process group,
# then SIGKILL), kill_children() every one still running (also at exit);
# sigterm_as_interrupt() makes SIGTERM and SIGINT a KeyboardInterrupt, so a
# tool's `finally` kills them.
"""Children of the benchmark tools: each in its own session, all killed at the end."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
from typing import Any

_children: list[subprocess.Popen[Any]] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Popen in a session of its own (a Ctrl-C reaches only us), remembered for kill_children."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.append(p)
    return p


def end(p: subprocess.Popen[Any], grace: float = 0.0) -> None:
    """SIGTERM its process group (waiting up to `grace`), then SIGKILL it; reap."""
    if p.poll() is None and grace > 0:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5.0)
    except subprocess.TimeoutExpired:
        pass
    if p in _children:
        _children.remove(p)


def kill_children() -> None:
    """End every child still running (tools call it in `finally`; also at exit)."""
    for p in list(_children):
        end(p)


atexit.register(kill_children)


def sigterm_as_interrupt() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so a tool's `finally` kills its children."""

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
