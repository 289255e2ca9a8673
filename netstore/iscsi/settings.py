# The iSCSI service's own settings and their limits: the portals it listens
# on, what it offers in negotiation, NOP-In pings and discovery CHAP.  The
# configuration loader validates against these limits and builds the value.
"""Settings of the iSCSI service (plain values, no configuration file)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from netstore.iscsi.directory import ChapCredentials

# RFC 7143 13.12: MaxRecvDataSegmentLength is 512 to 2**24 - 1.
MRDSL_MIN, MRDSL_MAX = 512, 2**24 - 1
DEFAULT_MRDSL = 262144
# An idle connection is pinged (NOP-In) this often, and dropped when a ping
# stays unanswered this long.
DEFAULT_NOP_INTERVAL_S = 10.0
DEFAULT_NOP_TIMEOUT_S = 30.0
# The target runs in this many worker processes at most ([iscsi] workers);
# the default is one per core of the host, up to the limit.  NETSTORE_WORKERS
# in the environment sets the default (the test suite runs with 1 and 2).
WORKERS_MIN, WORKERS_MAX = 1, 8
WORKERS_ENV = "NETSTORE_WORKERS"


def default_workers() -> int:
    """Worker processes when ``[iscsi] workers`` is not set."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env.isdigit() and WORKERS_MIN <= int(env) <= WORKERS_MAX:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(WORKERS_MIN, min(WORKERS_MAX, cores))


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How the iSCSI service serves, apart from which targets."""

    portals: tuple[tuple[str, int], ...]
    discovery_chap: ChapCredentials | None = None
    nop_interval_s: float = DEFAULT_NOP_INTERVAL_S
    nop_timeout_s: float = DEFAULT_NOP_TIMEOUT_S
    max_recv_data_segment_length: int = DEFAULT_MRDSL
