# The supervisor's side of one child process: start it (`python -m
# netstore.processes`, the channel's other end inherited), hand it its state,
# watch it, and start a new one when it dies; stop it cleanly, or kill it.
"""Start, watch, restart and stop one child process of the supervisor."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from netstore.procwait import wait_process

from .channel import Channel, ChannelClosed, Peer, channel_pair

# A child that dies is started again at once, but not more often than this
# (a child that cannot start at all must not spin the supervisor).
RESTART_MIN_INTERVAL_S = 0.5
# How long a child may take to answer its first request after it started.
START_TIMEOUT_S = 20.0
# The directory holding the netstore package, for the child's sys.path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class ChildError(Exception):
    """A child process could not be started, or would not take its state."""


class Child:
    """One child process of kind ``iscsi`` or ``switches``.

    Args:
        kind: which service it runs (netstore.processes.main.KINDS).
        label: its name in logs (``worker1``, ``switches``).
        setup: ``await setup(child, restarted)`` hands a fresh process its state;
            an exception there at the first start fails :meth:`run`'s start.
        log_level: the children's log level.
    """

    def __init__(self, kind: str, label: str,
                 setup: Callable[[Child, bool], Awaitable[None]], log: logging.Logger,
                 log_level: str = "info") -> None:
        self.kind = kind
        self.label = label
        self.setup = setup
        self.log = log
        self.log_level = log_level
        self.peer: Peer | None = None
        self.process: subprocess.Popen | None = None
        self.ready = trio.Event()  # set while a started process serves
        self.stopping = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def call(self, name: str, *args: Any, fds: tuple[int, ...] = (),
                   timeout: float | None = None) -> Any:
        """Ask the child; raises ChannelClosed while it is down."""
        if self.peer is None:
            raise ChannelClosed(f"{self.label} is not running")
        return await self.peer.call(name, *args, fds=fds, timeout=timeout)

    async def cast(self, name: str, *args: Any, fds: tuple[int, ...] = ()) -> None:
        if self.peer is None:
            raise ChannelClosed(f"{self.label} is not running")
        await self.peer.cast(name, *args, fds=fds)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the child; start a new one whenever it dies, until :meth:`stop`."""
        first = True
        while not self.stopping:
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                try:
                    await self._spawn(nursery, restarted=not first)
                except BaseException:
                    nursery.cancel_scope.cancel()
                    if first:
                        raise
                    self.log.exception("%s: a new process did not start", self.label)
                else:
                    if first:
                        task_status.started()
                    first = False
                    await self._wait_exit()
                    nursery.cancel_scope.cancel()
            if self.stopping:
                return
            await trio.sleep(max(0.0, began + RESTART_MIN_INTERVAL_S - trio.current_time()))

    async def _spawn(self, nursery: trio.Nursery, *, restarted: bool) -> None:
        mine, theirs = channel_pair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "netstore.processes", self.kind, str(theirs.fileno()),
                str(os.getpid()), self.label, self.log_level]
        try:
            # Forked from the loop's own thread, not a worker thread (as
            # trio.open_process would): PR_SET_PDEATHSIG follows the thread
            # that forked, and this one lives as long as the supervisor.
            self.process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env,
                                            stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.starts += 1
        self.peer = Peer(Channel(mine), log=self.log)
        nursery.start_soon(self.peer.serve, nursery)
        try:
            with trio.fail_after(START_TIMEOUT_S):
                await self.setup(self, restarted)
        except (ChannelClosed, trio.TooSlowError) as e:
            await self._kill()
            raise ChildError(f"{self.label} did not start: {e}") from None
        except BaseException:
            await self._kill()
            raise
        self.ready.set()
        if restarted:
            self.log.warning("%s: a new process (pid %d) took over", self.label, self.pid)

    async def _wait_exit(self) -> None:
        assert self.process is not None
        code = await wait_process(self.process)
        self.ready = trio.Event()
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.channel.close()
        if not self.stopping:
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            self.log.error("%s (pid %d) %s; starting a new one", self.label,
                           self.process.pid, how)

    async def set_log_level(self, level: str) -> None:
        """Log at `level` from now on, this process and the ones after it."""
        self.log_level = level
        if self.ready.is_set():
            try:
                await self.call("log_level", level, timeout=START_TIMEOUT_S)
            except Exception as e:
                self.log.error("%s: new log level not taken: %s", self.label, e)

    async def stop(self, grace: float) -> None:
        """Ask the child to stop cleanly; kill it after `grace` seconds."""
        self.stopping = True
        if self.process is None:
            return
        with trio.move_on_after(grace) as waited:
            try:
                await self.call("stop")
            except Exception:
                pass  # gone already, or refused: it is killed below
            if self.peer is not None:
                self.peer.channel.close()
            await wait_process(self.process)
        if waited.cancelled_caught:
            self.log.warning("stop: %s did not stop within %g s; killing it", self.label,
                             grace)
        await self._kill()

    def kill(self) -> None:
        """Kill the process now and start no other (a second stop signal)."""
        self.stopping = True
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def _kill(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.kill()
        with trio.CancelScope(shield=True):
            await wait_process(process)
