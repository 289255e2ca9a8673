# Unit attention conditions of one logical unit, per I_T nexus (SAM-5 5.14,
# SPC-4 5.14): what each nexus has pending, the POWER ON condition a nexus
# first seen gets once, and the `clear` set (nexuses seen with nothing
# pending) the unit's hot path tests with one membership test.  A lock
# makes each change whole: a unit's commands run in a worker thread while
# the transport's loop may raise or clear conditions on it (REPORT LUNS,
# a LUN map change).
"""UnitAttentions: the pending unit attention conditions of a logical unit, per I_T nexus."""
from __future__ import annotations

import threading
from collections.abc import Iterable

from .sense import POWER_ON_RESET, RESET_ASC, Sense


class UnitAttentions:
    """Pending unit attentions per I_T nexus (an opaque string)."""

    def __init__(self) -> None:
        """No nexus known, nothing pending."""
        self.known: set[str] = set()
        # Nexuses seen and with nothing pending: the hot path tests this only.
        self.clear: set[str] = set()
        self._pending: dict[str, list[Sense]] = {}
        self._lock = threading.Lock()

    def establish(self, sense: Sense, *, except_nexus: str | None = None,
                  nexuses: Iterable[str] | None = None) -> None:
        """Queue `sense` for `nexuses` (default: every known nexus), skipping
        `except_nexus`."""
        with self._lock:
            targets = self.known if nexuses is None else nexuses
            for n in list(targets):
                if n != except_nexus:
                    self._queue(n, sense)

    def queue(self, nexus: str, sense: Sense) -> None:
        """Queue `sense` for `nexus`. A reset (ASC 29h) replaces whatever was
        pending, as SAM-5 lets the highest-priority condition win."""
        with self._lock:
            self._queue(nexus, sense)

    def _queue(self, nexus: str, sense: Sense) -> None:
        q = self._pending.get(nexus)
        if sense.asc == RESET_ASC or not q:
            self._pending[nexus] = [sense]
        elif sense not in q:
            q.append(sense)
        self.clear.discard(nexus)

    def discard(self, nexus: str, sense: Sense) -> None:
        """Drop a pending `sense` for `nexus` (REPORT LUNS clears 3F/0E)."""
        with self._lock:
            q = self._pending.get(nexus)
            if q and sense in q:
                q.remove(sense)
                if not q and nexus in self.known:
                    del self._pending[nexus]
                    self.clear.add(nexus)

    def pending(self, nexus: str) -> bool:
        """Whether `nexus` has a condition to report; a nexus first seen gets
        POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (before anything but
        another reset it had queued)."""
        with self._lock:
            if nexus not in self.known:
                self.known.add(nexus)
                rest = [s for s in self._pending.get(nexus, ()) if s.asc != RESET_ASC]
                self._pending[nexus] = [POWER_ON_RESET, *rest]
            if not self._pending.get(nexus):
                self._pending.pop(nexus, None)
                self.clear.add(nexus)
                return False
            return True

    def take(self, nexus: str) -> Sense | None:
        """The oldest pending condition of `nexus`, now reported; None."""
        with self._lock:
            q = self._pending.get(nexus)
            if not q:
                return None
            sense = q.pop(0)
            if not q:
                del self._pending[nexus]
                self.clear.add(nexus)
            return sense
