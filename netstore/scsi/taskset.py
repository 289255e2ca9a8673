# The task set of one logical unit (SAM-5 8.1): the commands waiting for the
# medium, run strictly in the order they were queued, a batch at a time, by
# whoever drains the set (the transport's shell, in a worker thread; or at
# once, synchronously, when no shell is there).  Pure: no threads, no clock.
"""TaskSet and Task: a logical unit's ordered queue of work that may wait on a disk.

A transport submits a :class:`Task` (a callable to run, and what to do with
its result) and, when :meth:`TaskSet.submit` says the set just became busy,
arranges for it to be drained: :meth:`TaskSet.take` hands out everything
queued as one batch, :func:`run_batch` runs it (anywhere: a worker thread),
:meth:`TaskSet.finish` gives the results back, in order, on the caller's side.
While a batch is out or anything is queued the set is not :attr:`idle`, and
nothing else may touch the unit's state: a command that could run at once
(no medium access) waits its turn behind the queued ones.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Task:
    """One piece of work for a logical unit.

    ``run`` is called with no argument where the set is drained (a worker
    thread) and must not raise; ``done(result)`` is called back on the
    transport's side by :meth:`TaskSet.finish`.  ``owner`` and ``tag`` say
    whose it is (a connection, an initiator task tag) for task management.
    A task ``cancelled`` before it started is skipped: ``started`` stays
    False and ``done`` is still called (with None) so its owner can forget it.
    A task that ``reads`` only (a READ of the medium) changes nothing another
    read could see, so a read may be answered before it (see
    :attr:`TaskSet.only_reads`).
    """

    __slots__ = ("run", "done", "owner", "tag", "cancelled", "started", "result", "reads",
                 "joint", "item")

    def __init__(self, run: Callable[[], Any] | None, done: Callable[[Any], None],
                 owner: object = None, tag: int = -1, *, reads: bool = False) -> None:
        self.run = run
        self.done = done
        self.owner = owner
        self.tag = tag
        self.cancelled = False
        self.started = False
        self.result: Any = None
        self.reads = reads  # only reads the medium: another read may pass it
        # A function that may run this task together with the tasks right
        # after it that have the same one (their ``item`` says what each
        # is): run_batch hands it the run, and it sets each one's result.
        self.joint: Callable[[list[Task]], None] | None = None
        self.item: Any = None


def run_batch(batch: list[Task]) -> None:
    """Run a batch in order (in a worker thread, or inline); skip cancelled
    tasks; consecutive tasks with one ``joint`` run through it, together."""
    i, n = 0, len(batch)
    while i < n:
        t = batch[i]
        i += 1
        if t.cancelled:
            continue
        joint = t.joint
        if joint is not None and i < n and batch[i].joint is joint:
            j = i
            while j < n and batch[j].joint is joint and not batch[j].cancelled:
                j += 1
            group = batch[i - 1:j]
            i = j
            for g in group:
                g.started = True
            try:
                joint(group)
            except Exception:  # as run(): a bug must not stall the set
                log.exception("tasks run together failed")
            continue
        t.started = True
        if t.run is not None:
            try:
                t.result = t.run()
            except Exception:  # run() never raises for initiator input; a bug must not stall the set
                log.exception("task failed")


class TaskSet:
    """The ordered work of one logical unit (see the module docstring)."""

    __slots__ = ("pending", "running", "_when_idle", "_changers")

    def __init__(self) -> None:
        self.pending: deque[Task] = deque()
        self.running: list[Task] | None = None  # the batch out for running
        self._when_idle: list[Callable[[], None]] = []
        self._changers = 0  # tasks queued or running that are not reads

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing running: the unit's state may be touched here."""
        return self.running is None and not self.pending

    @property
    def only_reads(self) -> bool:
        """Everything queued or running only reads the medium: a READ of
        cached blocks may be answered now, ahead of them (SAM-5 lets SIMPLE
        tasks complete in any order; no queued task changes what it reads)."""
        return not self._changers

    def submit(self, task: Task) -> bool:
        """Queue `task`; True when the set was idle (the caller must get it drained)."""
        was_idle = self.running is None and not self.pending
        self.pending.append(task)
        if not task.reads:
            self._changers += 1
        return was_idle

    def take(self) -> list[Task]:
        """Everything queued, as one batch to run in order (empty: nothing to do)."""
        batch = list(self.pending)
        self.pending.clear()
        self.running = batch if batch else None
        return batch

    def finish(self, batch: list[Task]) -> None:
        """The batch ran: call each task's ``done``, in order."""
        self.running = None
        for t in batch:
            if not t.reads:
                self._changers -= 1
            try:
                t.done(t.result if t.started else None)
            except Exception:
                log.exception("task completion failed")
        if self._when_idle and not self.pending:
            waiting, self._when_idle = self._when_idle, []
            for fn in waiting:
                fn()

    def when_idle(self, fn: Callable[[], None]) -> None:
        """Call `fn` now if the set is idle, else once it has run all it holds."""
        if self.idle:
            fn()
        else:
            self._when_idle.append(fn)

    def drain_now(self) -> None:
        """Run everything queued here and now, completions included (no shell)."""
        if self.running is not None:
            return  # a drain further up the stack picks up what was added
        while self.pending:
            batch = self.take()
            run_batch(batch)
            self.finish(batch)

    def cancel(self, which: Callable[[Task], bool]) -> list[Task]:
        """Cancel the tasks `which` selects: one not started yet is skipped,
        one already started finishes (whole); ``done`` sees ``cancelled``
        either way and should answer nothing.  Returns the tasks cancelled."""
        hit = [t for t in self.pending if which(t)]
        if self.running is not None:
            hit += [t for t in self.running if which(t)]
        for t in hit:
            t.cancelled = True
        return hit
