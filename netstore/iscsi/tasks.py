# How a connection's SCSI commands reach their logical unit: answered at once
# when they cannot wait on a disk (no medium access, or a READ the page cache
# holds) and the unit has nothing queued; otherwise queued on the unit's task
# set (netstore.scsi.taskset), which the shell drains in a worker thread, and
# answered when the completion comes back.  Also: waiting for units to finish
# what they started (task management, logout).
"""Commands of a connection on their units' task sets (sans-IO).

:class:`Commands` is mixed into :class:`netstore.iscsi.connection.Connection`.
It keeps ``inflight`` (ITT -> the queued command) and asks the portal group
to get a task set drained (``group.schedule``); without a shell the group
drains it at once, so the core runs synchronously in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from netstore.scsi.commands import CACHED_READ_OPCODES, runs_inline
from netstore.scsi.lun import NOWAIT, LogicalUnit, ScsiResponse, WouldBlock
from netstore.scsi.taskset import Task


class Commands:
    """SCSI commands run inline or on the unit's task set (mixed into Connection)."""

    def _run_command(self, itt: int, lun: int, cdb: bytes, data: bytes | None,
                     respond: Callable[[ScsiResponse], None], simple: bool = False) -> None:
        """Run `cdb` for LUN `lun` and answer with `respond(rsp)`, now or later
        (`simple`: the command is a SIMPLE task, which may complete out of order)."""
        s = self.session
        assert s is not None
        scsi = s.scsi
        lu = scsi.unit(lun)
        if lu is None:  # the target itself answers (no such LUN)
            respond(scsi.execute(s.nexus, lun, cdb, data))
            return
        ts = lu.tasks
        reads = data is None and cdb[0] in CACHED_READ_OPCODES
        if ts.idle and runs_inline(cdb):
            respond(scsi.execute(s.nexus, lun, cdb, data))
            return
        if reads and lu.reads_nowait and self._may_read_now(lu, s.nexus, simple):
            try:
                rsp = scsi.execute(s.nexus, lun, cdb, NOWAIT)
            except WouldBlock:
                pass
            else:
                respond(rsp)
                return
        self._queue_command(lu, lun, itt, partial(scsi.execute, s.nexus, lun, cdb, data),
                            respond, reads=reads)

    @staticmethod
    def _may_read_now(lu: LogicalUnit, nexus: str, simple: bool) -> bool:
        """A READ may be tried from the page cache now: nothing is queued on
        the unit, or (a SIMPLE task, no unit attention to report first) what
        is queued only reads."""
        ts = lu.tasks
        return ts.idle or (simple and ts.only_reads and nexus in lu.attention_clear)

    def _queue_command(self, lu: LogicalUnit, lun: int, itt: int,
                       run: Callable[[], ScsiResponse],
                       respond: Callable[[ScsiResponse], None], *, reads: bool = False,
                       joint: Callable[[list[Task]], None] | None = None,
                       item: object = None) -> None:
        """Queue a command on `lu`'s task set; `respond` runs on its completion
        (`reads`: it only reads the medium; `joint`, `item`: see Task)."""
        task = Task(run, None, self, itt, reads=reads)  # type: ignore[arg-type]
        if joint is not None:
            task.joint = joint
            task.item = item
        task.done = partial(self._command_done, task, respond)
        self.inflight[itt] = (task, lu, lun)
        if lu.tasks.submit(task):
            self.group.schedule(lu.tasks)

    def _command_done(self, task: Task, respond: Callable[[ScsiResponse], None],
                      rsp: ScsiResponse | None) -> None:
        """A queued command finished (or was skipped): answer it unless aborted."""
        held = self.inflight.get(task.tag)
        if held is not None and held[0] is task:
            del self.inflight[task.tag]
        if task.cancelled or rsp is None or self.closing:
            return  # aborted (no answer), or nobody left to answer
        respond(rsp)
        self.wakeup()

    @property
    def saturated(self) -> bool:
        """As many commands queued as the CmdSN window: stop reading for now."""
        return len(self.inflight) >= self.max_inflight

    def _cancel_inflight(self, which: Callable[[int, int], bool]) -> set[LogicalUnit]:
        """Cancel the queued commands `which(itt, lun)` selects (no answer goes
        out for them); returns their units, to wait for what they started."""
        units: set[LogicalUnit] = set()
        for itt, (task, lu, lun) in list(self.inflight.items()):
            if which(itt, lun):
                task.cancelled = True
                del self.inflight[itt]
                units.add(lu)
        return units

    def _after_units(self, steps: dict[LogicalUnit, Callable[[], object] | None],
                     then: Callable[[], None]) -> None:
        """Call `then` once every unit of `steps` has finished what it has
        queued or started; the unit's step, if not None, runs in its turn (in
        the worker thread, after everything queued before it)."""
        if not steps:
            then()
            return
        left = [len(steps)]

        def one_done(_: object) -> None:
            left[0] -= 1
            if left[0] == 0 and not self.closing:
                then()
                self.wakeup()

        for lu, step in steps.items():
            if lu.tasks.idle:
                if step is not None:
                    step()
                one_done(None)
            elif lu.tasks.submit(Task(step, one_done, self)):
                self.group.schedule(lu.tasks)
