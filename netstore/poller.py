# netstore/poller.py - one epoll set for the receiving side of a Trio run's
# busiest descriptors: every datagram and TAP port of the switch process, the
# connections of an iSCSI worker. A user hands the poller a descriptor and a
# drain function.
#
# Why not one wait_readable per descriptor: a trip through Trio's scheduler
# (register, wake, reschedule, step the task) touches far more code than the
# work a frame or a command needs, and after an idle gap that code is cold; it
# doubled a ping's round trip through two TAP ports. So where it can, the
# poller waits *instead of* Trio's own I/O wait: an instrument's
# before_io_wait blocks on the poller's set, which also holds Trio's epoll
# descriptor, and drains ready descriptors right there. A TAP's kernel side
# answers a ping during the write, so a request and its answer cross the
# switch in one wake-up with no task step. It hands the loop back as soon as
# Trio has anything to do: one of Trio's descriptors is ready, a drain made a
# task runnable, or the wait Trio asked for is over (then it wakes Trio so its
# deadlines run on time). Where Trio's epoll descriptor cannot be had, a
# system task waits on the set instead.
"""The shared receive poller of a Trio run (switch ports, iSCSI connections)."""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable

import trio

__all__ = ["DRAIN_ROUNDS", "Poller"]

log = logging.getLogger("netstore.poller")

# Passes over the ready ports in one wake-up before other tasks get a turn.
DRAIN_ROUNDS = 8
# Events taken from the set per pass.
MAX_EVENTS = 64

_RUN_POLLER: trio.lowlevel.RunVar[Poller] = trio.lowlevel.RunVar("netstore_switch_poller")


class Poller:
    """Ports' receive descriptors in one epoll set (see the module doc).

    A drain reads what its descriptor has (at most a batch) and hands it on;
    it returns the count read, or -1 when it can receive no more (its device
    went away, its peer closed), which ends that descriptor's watch.
    """

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._drains: dict[int, tuple[Callable[[], int], trio.Event]] = {}
        self._trio_fd: int | None = None  # Trio's own epoll, when waited on here
        self._token: trio.lowlevel.TrioToken | None = None
        self._runnable: Callable[[], bool] = _runnable
        self._before_sleep: list[Callable[[], None]] = []

    @classmethod
    def current(cls) -> Poller:
        """The poller of the running Trio run, started on first use."""
        try:
            return _RUN_POLLER.get()
        except LookupError:
            pass
        poller = cls()
        _RUN_POLLER.set(poller)
        trio_fd = _trio_epoll_fd()
        if trio_fd is not None:
            poller._ep.register(trio_fd, select.EPOLLIN)
            poller._trio_fd = trio_fd
            poller._token = trio.lowlevel.current_trio_token()
            poller._runnable = _trio_runnable() or _runnable
            trio.lowlevel.add_instrument(_WaitHere(poller))
        else:
            trio.lowlevel.spawn_system_task(poller.run, name="netstore poller")
        return poller

    @property
    def waits_for_trio(self) -> bool:
        """Whether the poller does Trio's I/O wait (else a task of its own waits)."""
        return self._trio_fd is not None

    def __len__(self) -> int:
        return len(self._drains)

    def watch(self, fd: int, drain: Callable[[], int]) -> trio.Event:
        """Drain ``fd`` whenever it is readable; the event is set if its drain ends it."""
        ended = trio.Event()
        self._ep.register(fd, select.EPOLLIN)
        self._drains[fd] = (drain, ended)
        return ended

    def before_sleep(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once, just before this thread next blocks waiting for I/O.

        For work handed to another thread: woken while this one still runs
        Python, that thread would wake only to wait for the GIL (two more
        context switches per hand-off); woken as this one blocks, it finds
        the GIL free.  Everything handed over in one wake-up also goes as
        one batch.  Without the wait in Trio's place, ``fn`` runs at once.
        """
        if self._trio_fd is None:
            fn()
        else:
            self._before_sleep.append(fn)

    def _going_to_sleep(self) -> None:
        while self._before_sleep:
            todo, self._before_sleep = self._before_sleep, []
            for fn in todo:
                try:
                    fn()
                except Exception:
                    log.exception("a hand-off before the poller slept failed")

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed); unknown descriptors are ignored."""
        if self._drains.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _serve(self, events: list[tuple[int, int]]) -> bool:
        """Drain the ports among ``events``; True if Trio's descriptor was among them."""
        trio_ready = False
        drains = self._drains
        for fd, _ in events:
            entry = drains.get(fd)
            if entry is None:
                trio_ready = trio_ready or fd == self._trio_fd
                continue
            try:
                alive = entry[0]() >= 0
            except Exception:
                log.exception("receiving on descriptor %d failed; it is closed", fd)
                alive = False
            if not alive:
                self.unwatch(fd)
                entry[1].set()
        return trio_ready

    def drain_ready(self) -> int:
        """One pass over the ports ready now; returns how many events there were."""
        events = self._ep.poll(0, MAX_EVENTS)
        if events:
            self._serve(events)
        return len(events)

    # -- waiting in Trio's place -----------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Trio is about to wait ``timeout`` seconds for I/O: serve the ports
        meanwhile, and return once Trio has something to do."""
        try:
            self._wait(timeout)
        finally:
            self._going_to_sleep()  # Trio's own wait (maybe of 0 s) comes next

    def _wait(self, timeout: float) -> None:
        if not self._drains:
            return
        poll = self._ep.poll
        for _ in range(DRAIN_ROUNDS):
            events = poll(0, MAX_EVENTS)
            if not events:
                break
            if self._serve(events) or self._runnable():
                self._wake_trio()
                return
        if timeout <= 0 or not self._drains:
            return
        end = time.monotonic() + timeout
        while True:
            if self._before_sleep:
                self._going_to_sleep()
                if self._runnable():  # a hand-off made a task runnable
                    self._wake_trio()
                    return
            events = poll(max(0.0, end - time.monotonic()), MAX_EVENTS)
            if not events:  # what Trio waits for is due: let its own wait end at once
                self._wake_trio()
                return
            if self._serve(events) or self._runnable() or not self._drains:
                self._wake_trio()
                return

    def _wake_trio(self) -> None:
        if self._token is not None:
            try:
                self._token.run_sync_soon(_nothing)
            except trio.RunFinishedError:
                pass

    # -- waiting as a task ------------------------------------------------------------
    async def run(self) -> None:
        """Drain ready ports until cancelled (when Trio's epoll is not to be had)."""
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        drain_ready = self.drain_ready
        epfd = self._ep.fileno()
        try:
            while True:
                await wait_readable(epfd)
                for _ in range(DRAIN_ROUNDS):
                    if not drain_ready():
                        break
                else:
                    await checkpoint()
        finally:
            self.close()

    def close(self) -> None:
        for _, ended in self._drains.values():
            ended.set()
        self._drains.clear()
        self._ep.close()


class _WaitHere(trio.abc.Instrument):
    """Lets the poller do Trio's I/O wait (see the module doc)."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller

    def before_io_wait(self, timeout: float) -> None:
        self.poller.wait(timeout)

    def after_run(self) -> None:
        self.poller.close()


def _runnable() -> bool:
    return trio.lowlevel.current_statistics().tasks_runnable > 0


def _trio_runnable() -> Callable[[], bool] | None:
    """A cheaper `_runnable` for this run: the length of Trio's run queue
    (private; current_statistics() builds two objects per call)."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT

        runq = GLOBAL_RUN_CONTEXT.runner.runq
        len(runq)
    except Exception:
        return None
    return runq.__len__  # type: ignore[no-any-return]


def _nothing() -> None:
    pass


def _trio_epoll_fd() -> int | None:
    """Trio's own epoll descriptor (not public: None if this Trio has none)."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT

        fd = GLOBAL_RUN_CONTEXT.runner.io_manager._epoll.fileno()
    except Exception:  # another Trio, another platform: wait as a task instead
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None
