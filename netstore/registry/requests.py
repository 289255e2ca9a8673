# Requests from one host's CLI to another host's daemon, through the shared
# registry (issue 15): `vm stop`, `vm control` and the other commands of a
# running VM are the daemon's that runs it, which may be on another host.
# The CLI files a request addressed to that host, which moves the
# generation: the host's daemon, whose registry watcher sees it move, takes it
# (in one write transaction, so it is run once), runs it and files the
# answer, which the CLI polls for, reads and deletes (those steps move no
# generation: no service is planned from them).  A request nobody took is
# withdrawn by the CLI.
"""Control requests addressed to a host's daemon, carried by the registry."""

from __future__ import annotations

import json
from typing import Any

from netstore.registry.db import Database
from netstore.registry.hosts import db_now

# What a request is: waiting to be taken, taken (running), answered.
WAITING, TAKEN, ANSWERED = 0, 1, 2


def ask(reg: Database, host: str, op: str, args: dict[str, Any]) -> int:
    """File request `op` with `args` for `host`'s daemon; its id."""
    with reg.transaction() as conn:
        return int(conn.execute(
            "INSERT INTO host_requests (host, op, args, state, created) VALUES (?, ?, ?, ?, ?) "
            "RETURNING id", (host, op, json.dumps(args), WAITING, db_now(conn))).fetchall()[0][0])


def take(reg: Database, host: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The requests waiting for `host`, marked taken: (id, op, args)."""
    with reg.transaction(notify=False) as conn:  # only the asker polls for it
        rows = conn.execute("SELECT id, op, args FROM host_requests WHERE host = ? AND state = ? "
                            "ORDER BY id", (host, WAITING)).fetchall()
        for rid, _, _ in rows:
            conn.execute("UPDATE host_requests SET state = ? WHERE id = ?", (TAKEN, rid))
    return [(rid, op, json.loads(args)) for rid, op, args in rows]


def answer(reg: Database, rid: int, result: Any = None, error: str | None = None) -> None:
    """File the answer of request `rid`: its result, or the error that refused it."""
    with reg.transaction(notify=False) as conn:  # only the asker polls for it
        conn.execute("UPDATE host_requests SET state = ?, result = ?, error = ? WHERE id = ?",
                     (ANSWERED, json.dumps(result), error, rid))


def outcome(reg: Database, rid: int) -> tuple[int, Any, str | None] | None:
    """(state, result, error) of request `rid`; None when it is gone."""
    with reg.reading() as conn:
        row = conn.execute("SELECT state, result, error FROM host_requests WHERE id = ?",
                           (rid,)).fetchone()
    if row is None:
        return None
    return row[0], json.loads(row[1]) if row[1] is not None else None, row[2]


def withdraw(reg: Database, rid: int, *, only_waiting: bool = False) -> bool:
    """Delete request `rid` (answered and read, or given up); whether it was
    deleted (with `only_waiting`: not if a daemon took it meanwhile)."""
    with reg.transaction(notify=False) as conn:  # only the asker polls for it
        if only_waiting:
            cur = conn.execute("DELETE FROM host_requests WHERE id = ? AND state = ?",
                               (rid, WAITING))
        else:
            cur = conn.execute("DELETE FROM host_requests WHERE id = ?", (rid,))
        return bool(cur.rowcount)


__all__ = ["ask", "take", "answer", "outcome", "withdraw", "WAITING", "TAKEN", "ANSWERED"]
