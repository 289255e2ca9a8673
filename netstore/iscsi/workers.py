# The threads of the iSCSI shell: one long-lived worker thread per logical
# unit with queued commands, fed batches through a queue and handing each
# finished batch back to the loop through an eventfd the run's poller
# watches (netstore/poller.py), so a completion is answered where the poller
# wakes, with no trip through Trio's scheduler.  A thread that stays idle for
# a while ends; the next batch starts a new one.  This is cheaper than
# trio.to_thread per batch (one futex wake each way instead of a thread cache
# handoff plus a task switch).
"""Worker threads draining logical units' task sets for the iSCSI service."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from netstore.poller import Poller
from netstore.scsi.taskset import Task, TaskSet, run_batch

# A worker thread with nothing to do for this long ends.
IDLE_EXIT_S = 5.0

log = logging.getLogger(__name__)


class _Completions:
    """Finished batches on their way from worker threads to the loop: a
    queue and an eventfd in the run's poller, which runs them as it wakes."""

    def __init__(self, poller: Poller) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._done: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._poller = poller
        poller.watch(self.fd, self._run)

    def put(self, fn: Callable[..., None], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` on the loop."""
        self._done.append((fn, args))
        os.eventfd_write(self.fd, 1)

    def _run(self) -> int:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        done = self._done
        n = 0
        while done:
            fn, args = done.popleft()
            fn(*args)
            n += 1
        return n

    def close(self) -> None:
        self._poller.unwatch(self.fd)
        os.close(self.fd)


class _Worker:
    """The thread of one task set: runs the batches put in its queue, in order."""

    def __init__(self, done: Callable[[TaskSet, list[Task]], None],
                 completions: _Completions) -> None:
        self.queue: queue.SimpleQueue[list[Task] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.alive = False
        self.thread: threading.Thread | None = None
        self.done = done
        self.completions = completions

    def put(self, ts: TaskSet, batch: list[Task] | None) -> None:
        with self.lock:
            self.queue.put(batch)
            if batch is not None and not self.alive:
                self.alive = True
                self.thread = threading.Thread(target=self._loop, args=(ts,), daemon=True,
                                               name="netstore-unit")
                self.thread.start()

    def _loop(self, ts: TaskSet) -> None:
        while True:
            try:
                batch = self.queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self.lock:
                    if self.queue.empty():
                        self.alive = False
                        return
                continue
            if batch is None:
                with self.lock:
                    if self.queue.empty():
                        self.alive = False
                        return
                continue
            run_batch(batch)
            self.completions.put(self.done, ts, batch)


class UnitWorkers:
    """Drains task sets in worker threads, one per set, strictly in order.

    ``schedule(ts)`` is the portal group's ``schedule``: the set has work and
    no batch out.  Each batch is everything queued at the moment it is taken;
    its completions (``TaskSet.finish``) run on the loop, inside
    ``completing`` (the service flushes the connections they answered on),
    and the next batch goes out at once.
    """

    def __init__(self, completing: Callable[[Callable[[], None]], None]) -> None:
        self._workers: dict[TaskSet, _Worker] = {}
        self.busy: set[TaskSet] = set()
        self._completing = completing
        self._completions: _Completions | None = None

    def schedule(self, ts: TaskSet) -> None:
        if ts in self.busy:
            return  # a batch is out (or about to go): the set is taken again when it is back
        self.busy.add(ts)
        poller = Poller.current()
        if self._completions is None:
            self._completions = _Completions(poller)
        poller.before_sleep(partial(self._hand_out, ts))

    def _hand_out(self, ts: TaskSet) -> None:
        """As the loop is about to sleep: everything the set holds goes out as one batch."""
        batch = ts.take()
        if not batch:
            self.busy.discard(ts)
            return
        w = self._workers.get(ts)
        if w is None:
            assert self._completions is not None
            w = self._workers[ts] = _Worker(self._batch_done, self._completions)
        w.put(ts, batch)

    def _batch_done(self, ts: TaskSet, batch: list[Task]) -> None:
        """On the loop: the batch ran; answer it and send out what came meanwhile."""
        self.busy.discard(ts)
        try:
            self._completing(lambda: ts.finish(batch))
        except Exception:  # a callback of the loop itself: it must not end the service
            log.exception("completing a unit's batch failed")
        if ts.pending and ts.running is None:
            self.schedule(ts)

    async def wait_idle(self) -> None:
        """Until no batch is out (the clean stop)."""
        while self.busy:
            await trio.sleep(0.01)

    def stop(self) -> None:
        """Let every idle worker thread end now (they end by themselves later)."""
        for ts, w in list(self._workers.items()):
            if ts not in self.busy:
                w.put(ts, None)
        self._workers = {ts: w for ts, w in self._workers.items() if ts in self.busy}
        if not self.busy and self._completions is not None:
            self._completions.close()  # no thread holds a batch to hand back
            self._completions = None
