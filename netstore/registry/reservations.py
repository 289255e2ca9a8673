# SCSI persistent reservations kept in the registry (issue 15): a logical unit
# several hosts export (multipath, exports/multipath.py) keeps its
# reservation state here instead of in one host's state directory, so the
# host that takes the unit over starts from the registrations and the
# reservation made through the host that served it before.  One row per unit,
# named as the unit's reservation file would be; the state is the JSON of
# netstore.scsi.reservations.ReservationState.
"""Reservation state of shared logical units, one row per unit."""

from __future__ import annotations

from netstore.registry.db import Database


def load(reg: Database, unit: str) -> bytes | None:
    """The state kept for `unit`, or None."""
    with reg.reading() as conn:
        row = conn.execute("SELECT state FROM reservations WHERE unit = ?", (unit,)).fetchone()
    return row[0].encode() if row else None


def save(reg: Database, unit: str, data: bytes) -> None:
    """Keep `data` as the state of `unit` (one statement: whole or not at all)."""
    with reg.transaction(notify=False) as conn:  # no service is planned from it
        conn.execute("INSERT INTO reservations (unit, state) VALUES (?, ?) "
                     "ON CONFLICT (unit) DO UPDATE SET state = excluded.state",
                     (unit, data.decode()))


__all__ = ["load", "save"]
