# The one log format of the daemon's processes: timestamped lines on stderr;
# a child's lines name the child (worker1, switches) after the logger.
"""Logging of the daemon and its child processes."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s{label}: %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


def configure_logging(level: str, label: str = "") -> None:
    """Send netstore's log lines, with timestamps, to stderr at ``level``;
    a child process passes its `label`, shown as ``netstore.iscsi[worker1]``."""
    root = logging.getLogger("netstore")
    for handler in list(root.handlers):
        if getattr(handler, "_netstore", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        LOG_FORMAT.format(label=f"[{label}]" if label else ""), LOG_DATEFMT))
    handler._netstore = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
