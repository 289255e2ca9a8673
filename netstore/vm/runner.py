# netstore/vm/runner.py - the daemon's runner of headless VMs: `vm start`
# marks the VM running in the registry (the disk rules apply), has the daemon
# serve its target and NIC ports at once, and starts qemu-system as a child of
# the daemon: the argv of `vm qemu-args`, the accelerator of [vms] accel, a
# QMP socket and a serial console socket (netstore.vm.files), no display.
# The power state follows the process: the guest powering off (QEMU exits 0)
# is poweroff; any other end is aborted, with QEMU's last log lines. QEMU
# dies with the daemon (PR_SET_PDEATHSIG): no VM runs without a supervisor,
# and a daemon starting finds the VMs an earlier one ran aborted. Registry
# calls go to threads; QMP is netstore.vm.qmp.
"""Run, watch and control the QEMU processes of headless VMs."""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from netstore.control import ControlError
from netstore.procwait import wait_process
from netstore.registry import Registry
from netstore.registry.db import remove_file
from netstore.registry.errors import MachineStateError, RegistryError
from netstore.vm.accel import choose_accel
from netstore.vm.cgroups import cap_cpu, remove_group
from netstore.vm.cmdline import QEMU, qemu_args
from netstore.vm.files import VmFiles
from netstore.vm.ksm import Ksm, merging_pages
from netstore.vm.qmp import Qmp, QmpError

__all__ = ["VmRunner", "QMP_CONNECT_S", "QUIT_GRACE_S"]

# How long a new QEMU may take to open its QMP socket.
QMP_CONNECT_S = 15.0
# How long QEMU has to end after QMP quit before it is killed.
QUIT_GRACE_S = 5.0
# How long a QMP command may take before the VM is reported unresponsive.
QMP_COMMAND_S = 10.0
# Recording a VM's end (registry, then the children told) may take this long
# even while the daemon stops.
RECORD_END_S = 10.0
# Saving or resuming a VM's memory and device state (a live snapshot).
STATE_TIMEOUT_S = 120.0
STATE_BANDWIDTH = 8 << 30  # bytes/s: QEMU's default cap (128 MiB/s) would stretch the pause
PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child between fork and exec calls only this.
_prctl = ctypes.CDLL(None, use_errno=True).prctl

Settle = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class _Vm:
    """One QEMU process of a headless VM."""

    name: str
    files: VmFiles
    process: subprocess.Popen[bytes]
    accel: str
    log_start: int
    qmp: Qmp | None = None
    ending: str | None = None  # set by the runner: "poweroff", or why it aborts
    fusion: bool = False  # page fusion: holds the host's KSM on
    recorded: trio.Event = field(default_factory=trio.Event)
    state: dict[str, Any] = field(default_factory=dict)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"QEMU was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"QEMU was killed by signal {-code}"
    return f"QEMU exited with status {code}"


class VmRunner:
    """The headless VMs of one daemon.

    Args:
        state_dir: the daemon's state directory (registry, vms/).
        accel: ``[vms] accel``; probe: ``[vms] probe_kernel``.
        portal: the iSCSI portal QEMU logs in to (``host:port``), when asked.
        base_iqn: the daemon's base IQN.
        settle: makes the daemon serve what the registry says now (targets,
            NIC ports) and returns once its children have it.
    """

    def __init__(self, state_dir: Path, *, accel: str, probe: Path | None,
                 portal: Callable[[], str], base_iqn: str, settle: Settle,
                 log: logging.Logger, qemu: str = QEMU, registry_url: str | None = None,
                 host: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.registry_url = registry_url
        self.host = host  # this host's name in a shared registry (None: one host)
        self.accel_setting = accel
        self.probe = probe
        self.portal = portal
        self.base_iqn = base_iqn
        self.settle = settle
        self.log = log
        self.qemu = qemu
        self.vms: dict[str, _Vm] = {}
        self._nursery: trio.Nursery | None = None
        self._accel: tuple[str, str] | None = None
        self._accel_lock = trio.Lock()
        self._starting: set[str] = set()
        self.ksm = Ksm()

    # -- the daemon's side -----------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Mark VMs an earlier daemon ran aborted, then watch the VMs started."""
        orphans = await self._registry(lambda reg: self._abort_orphans(reg, self.host))
        for name in orphans:
            self.log.warning("vm %s: its QEMU ended with the daemon that ran it; aborted", name)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @staticmethod
    def _abort_orphans(reg: Registry, host: str | None) -> list[str]:
        # this host's only: on a shared registry the others' VMs are theirs
        names = [m.name for m in reg.machines.list()
                 if m.running and m.run_type == "headless" and m.host in (None, host)]
        for name in names:
            reg.machines.stop(name, aborted="netstore serve that ran it ended", host=host)
        return names

    async def stop_all(self, grace: float) -> None:
        """The daemon stops: every VM's QEMU quits (recorded as aborted)."""
        with trio.move_on_after(grace):
            async with trio.open_nursery() as n:
                for vm in list(self.vms.values()):
                    vm.ending = vm.ending or "netstore serve stopped while it ran"
                    n.start_soon(self._quit, vm)
        for vm in list(self.vms.values()):
            if vm.process.poll() is None:
                vm.process.kill()

    async def drop_all(self) -> None:
        """This host was fenced: its VMs are no longer its own; their QEMU is
        killed at once (another host may be starting them)."""
        for vm in list(self.vms.values()):
            vm.ending = vm.ending or "this host was fenced"
            if vm.process.poll() is None:
                vm.process.kill()

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The control socket's operations on VMs."""
        return {"vm_start": self.start, "vm_stop": self.stop, "vm_control": self.control,
                "vm_screenshot": self.screenshot, "vm_runtime": self.runtime,
                "vm_metrics": self.metrics, "vm_snapshot": self.snapshot,
                "vm_accel": self.accel}

    # -- start -------------------------------------------------------------------------
    async def accel(self) -> dict[str, str]:
        """The accelerator headless VMs use, and why (probed once)."""
        async with self._accel_lock:
            if self._accel is None:
                self._accel = await choose_accel(self.accel_setting, self.qemu, self.state_dir,
                                                 self.probe, self.log)
        return {"accel": self._accel[0], "why": self._accel[1]}

    async def start(self, name: str, vnc: int | None = None) -> dict[str, Any]:
        """`vm start NAME`: power on, serve its disks and NICs, run its QEMU."""
        if self._nursery is None:
            raise ControlError("the VM runner is not running yet")
        if name in self.vms or name in self._starting:
            raise ControlError(f"{name} is running already")
        self._starting.add(name)
        try:
            machine = await self._registry(
                lambda reg: reg.machines.start(name, "headless", host=self.host))
            name = machine.name  # NAME may have been its UUID
            try:
                vm = await self._launch(name, vnc, machine.saved_state)
            except BaseException as e:
                why = str(e) if isinstance(e, Exception) else "start interrupted"
                with trio.CancelScope(shield=True), trio.move_on_after(RECORD_END_S):
                    await self._record_end(name, why)
                raise
        finally:
            self._starting.discard(name)
        return await self._machine(name, pid=vm.process.pid, accel=vm.accel)

    async def _launch(self, name: str, vnc: int | None, saved: str | None) -> _Vm:
        await self.settle()  # its target and NIC ports are served before QEMU connects
        portal = self.portal()
        argv = await self._registry(lambda reg: self._argv(reg, name, portal))
        accel = (await self.accel())["accel"]
        files = VmFiles(self.state_dir, name)
        await trio.to_thread.run_sync(files.prepare)
        argv += ["-accel", accel, "-display", "none",
                 "-qmp", f"unix:{files.qmp},server=on,wait=off",
                 "-chardev", f"socket,id=console,path={files.console},server=on,wait=off,"
                             f"logfile={files.console_log},logappend=off",
                 "-serial", "chardev:console", "-monitor", "none"]
        if vnc is not None:
            argv += ["-vnc", f"127.0.0.1:{vnc}"]
        if saved is not None:  # a restored live snapshot: resume its memory
            argv += ["-incoming", f"exec:cat {shlex.quote(saved)}"]
        logf, log_start = await trio.to_thread.run_sync(_open_log, files, name, argv)
        with logf:
            parent = os.getpid()
            # Forked from the loop's thread (PR_SET_PDEATHSIG follows the thread
            # that forked), in a session of its own (a terminal's Ctrl-C is the
            # daemon's to handle, not QEMU's).
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=lambda: _die_with(parent))
        vm = _Vm(name, files, process, accel, log_start,
                 fusion="mem-merge=on" in argv[argv.index("-machine") + 1])
        self.vms[name] = vm
        if vm.fusion:
            problem = await trio.to_thread.run_sync(self.ksm.acquire)
            if problem:
                self.log.warning("vm %s: page fusion: %s", name, problem)
        self.log.info("vm %s: QEMU started (pid %d, %s)", name, process.pid, accel)
        try:
            assert self._nursery is not None
            await self._nursery.start(self._watch, vm)
            if saved is not None:
                await self._resumed(vm, saved)
        except BaseException:
            vm.ending = vm.ending or "start failed"
            if process.poll() is None:
                process.kill()
            self.vms.pop(name, None)
            raise
        return vm

    async def _resumed(self, vm: _Vm, saved: str) -> None:
        """Wait for QEMU to take the saved state in and run; the state is
        used up either way (a state QEMU refuses is not tried again)."""
        try:
            with trio.move_on_after(STATE_TIMEOUT_S):
                while (await self._qmp(vm, "query-status"))["status"] == "inmigrate":
                    await trio.sleep(0.05)
                # the state was saved paused: a start runs it
                await self._qmp(vm, "cont")
                return
            raise ControlError(f"{vm.name}: QEMU did not take its saved state in within "
                               f"{STATE_TIMEOUT_S:g} s")
        except ControlError as e:
            raise ControlError(f"{e} (the saved state of {saved} is discarded: the next start "
                               "boots)") from None
        finally:
            with trio.CancelScope(shield=True):
                await self._registry(lambda reg: reg.machines.discard_saved_state(vm.name))

    def _argv(self, reg: Registry, name: str, portal: str) -> list[str]:
        m = reg.machines
        return qemu_args(m.get(name), m.controllers(name), m.attachments(name), m.nics(name),
                         portal=portal, base_iqn=self.base_iqn, qemu=self.qemu)

    # -- watching ----------------------------------------------------------------------
    async def _watch(self, vm: _Vm, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect QMP, then wait for QEMU to end and record how it ended."""
        try:
            async with trio.open_nursery() as nursery:
                vm.qmp = await self._connect(vm, nursery)
                task_status.started()
                code = await wait_process(vm.process)
                nursery.cancel_scope.cancel()
        except BaseException:
            if vm.process.poll() is None:
                vm.process.kill()
            raise
        finally:
            self.vms.pop(vm.name, None)
            with trio.CancelScope(shield=True):
                if vm.fusion:
                    await trio.to_thread.run_sync(self.ksm.release)
                if "cpu_cap" in vm.state:
                    await trio.to_thread.run_sync(remove_group, vm.name)
        if vm.ending == "poweroff" or (vm.ending is None and code == 0):
            why = None
            self.log.info("vm %s: powered off", vm.name)
        else:
            why = vm.ending or _exit_text(code)
            tail = await trio.to_thread.run_sync(vm.files.log_tail, 8, vm.log_start)
            if tail:
                why = f"{why}; QEMU's last words: {tail}"
            self.log.warning("vm %s: aborted: %s", vm.name, why)
        with trio.CancelScope(shield=True), trio.move_on_after(RECORD_END_S):
            await self._record_end(vm.name, why)
        vm.recorded.set()

    async def _connect(self, vm: _Vm, nursery: trio.Nursery) -> Qmp:
        with trio.move_on_after(QMP_CONNECT_S):
            while True:
                if vm.process.poll() is not None:
                    await trio.sleep(0.05)  # let its last words reach the log
                    tail = await trio.to_thread.run_sync(vm.files.log_tail, 8, vm.log_start)
                    raise ControlError(f"{vm.name}: {_exit_text(vm.process.returncode)} at "
                                       f"start: {tail or 'nothing logged'}")
                try:  # the socket appears once QEMU has set it up
                    return await Qmp.connect(vm.files.qmp, nursery)
                except (OSError, QmpError):
                    pass
                await trio.sleep(0.05)
        raise ControlError(f"{vm.name}: QEMU opened no QMP socket within {QMP_CONNECT_S:g} s")

    async def _record_end(self, name: str, aborted: str | None) -> None:
        def stop(reg: Registry) -> None:
            try:
                reg.machines.stop(name, aborted=aborted, host=self.host)
            except MachineStateError:
                pass  # powered off in the registry already, or fenced: another host owns it

        try:
            await self._registry(stop)
            await self.settle()
        except Exception as e:
            self.log.error("vm %s: recording its end failed: %s", name, e)

    # -- stop, control -----------------------------------------------------------------
    async def stop(self, name: str, seconds: float = 60.0, force: bool = False) -> dict[str, Any]:
        """`vm stop`: the ACPI power button, then wait; ``force`` powers off
        after ``seconds``.  A VM the daemon does not run is marked off."""
        timeout = seconds
        vm = self._vm(name, required=False)
        if vm is None:
            machine = await self._registry(lambda reg: reg.machines.stop(name))
            await self.settle()
            return machine.to_dict()
        if timeout > 0:
            await self._qmp(vm, "system_powerdown")
            with trio.move_on_after(timeout):
                await vm.recorded.wait()
        if not vm.recorded.is_set():
            if not force:
                raise ControlError(
                    f"{vm.name} did not power off within {timeout:g} s of the ACPI power "
                    f"button (the guest may ignore it); `netstore vm stop {vm.name} --force` "
                    "powers it off")
            vm.ending = "poweroff"
            await self._quit(vm)
            await vm.recorded.wait()
        return await self._machine(vm.name)

    async def _quit(self, vm: _Vm) -> None:
        if vm.qmp is not None and vm.process.poll() is None:
            with trio.move_on_after(QUIT_GRACE_S):
                try:
                    await vm.qmp.execute("quit")
                except QmpError:
                    pass
                while vm.process.poll() is None:
                    await trio.sleep(0.02)
        if vm.process.poll() is None:
            vm.process.kill()
        await vm.recorded.wait()

    async def control(self, name: str, action: str, value: Any = None,
                      nic: int | None = None) -> dict[str, Any]:
        """`vm control NAME ACTION [VALUE]` on a running headless VM."""
        vm = self._vm(name)
        if action == "acpipowerbutton":
            await self._qmp(vm, "system_powerdown")
        elif action in ("pause", "resume"):
            await self._qmp(vm, "stop" if action == "pause" else "cont")
            await self._registry(lambda reg: reg.machines.set_paused(vm.name, action == "pause"))
        elif action == "reset":
            await self._qmp(vm, "system_reset")
        elif action == "poweroff":
            vm.ending = "poweroff"
            await self._quit(vm)
        elif action == "nic":
            await self._nic_link(vm, nic, value)
        elif action == "balloon":
            await self._balloon(vm, int(value))
        elif action in ("plugcpu", "unplugcpu"):
            await self._plug(vm, int(value), action == "plugcpu")
        elif action == "cpu-cap":
            machine = await self._registry(lambda reg: reg.machines.get(vm.name))
            pct = int(value)
            await self._registry(lambda reg: reg.machines.modify(vm.name, cpu_cap=pct))
            try:
                await trio.to_thread.run_sync(cap_cpu, vm.name, vm.process.pid, pct,
                                              machine.online_cpus)
            except OSError as e:
                await self._registry(
                    lambda reg: reg.machines.modify(vm.name, cpu_cap=machine.cpu_cap))
                raise ControlError(f"{vm.name}: cpu-cap: {e}") from None
            vm.state["cpu_cap"] = pct  # its cgroup goes when QEMU ends
        else:
            raise ControlError(f"unknown control action {action!r}")
        return await self._machine(vm.name)

    async def _nic_link(self, vm: _Vm, slot: int | None, up: Any) -> None:
        from netstore.vm.cmdline import nic_id

        nics = await self._registry(lambda reg: reg.machines.nics(vm.name))
        if slot is None or slot not in {n.slot for n in nics}:
            have = ", ".join(str(n.slot) for n in nics) or "none"
            raise ControlError(f"{vm.name} has no NIC in slot {slot} (slots: {have})")
        await self._qmp(vm, "set_link", name=nic_id(slot), up=bool(up))
        vm.state.setdefault("links", {})[str(slot)] = "on" if up else "off"

    async def _balloon(self, vm: _Vm, mb: int) -> None:
        machine = await self._registry(lambda reg: reg.machines.modify(vm.name, balloon_mb=mb))
        # VirtualBox's balloon is memory taken from the guest; QMP's is what it keeps
        await self._qmp(vm, "balloon", value=(machine.memory_mb - mb) << 20)

    async def _plug(self, vm: _Vm, index: int, plug: bool) -> None:
        if plug:
            await self._registry(lambda reg: reg.machines.modify(vm.name, plug_cpu=index))
        else:
            await self._registry(lambda reg: reg.machines.modify(vm.name, unplug_cpu=index))
        try:
            slots = await self._qmp(vm, "query-hotpluggable-cpus")
            slot = next((s for s in slots if s.get("props", {}).get("socket-id") == index
                         or s.get("props", {}).get("core-id") == index and
                         s.get("props", {}).get("socket-id", 0) == 0), None)
            if slot is None:
                raise ControlError(f"{vm.name}: QEMU has no vCPU slot {index}")
            if plug:
                await self._qmp(vm, "device_add", driver=slot["type"], id=f"cpu{index}",
                                **slot["props"])
            else:
                if "qom-path" not in slot:
                    raise ControlError(f"{vm.name}: vCPU {index} is not plugged in QEMU")
                await self._qmp(vm, "device_del", id=slot["qom-path"])
        except BaseException:
            undo = {"unplug_cpu": index} if plug else {"plug_cpu": index}
            with trio.CancelScope(shield=True):
                await self._registry(lambda reg: reg.machines.modify(vm.name, **undo))
            raise

    async def snapshot(self, name: str, snapshot: str, description: str = "",
                       memory: bool = True) -> dict[str, Any]:
        """`vm snapshot NAME take SNAP` while it runs: pause it (QEMU drains
        and flushes its disks), save its memory and device state unless not
        ``memory``, freeze its normal disks in the target (the units move onto
        new layers between two SCSI commands; sessions stay), resume."""
        vm = self._vm(name)
        began = trio.current_time()
        was_running = (await self._qmp(vm, "query-status"))["status"] == "running"
        await self._qmp(vm, "stop")
        state_file = None
        try:
            if memory:
                states = vm.files.dir / "states"
                await trio.to_thread.run_sync(lambda: states.mkdir(exist_ok=True))
                state_file = str(states / f"{snapshot}-{uuid.uuid4().hex[:8]}.state")
                await self._save_state(vm, state_file)
            snap = await self._registry(lambda reg: reg.machines.take_snapshot(
                vm.name, snapshot, description, live=True, state_file=state_file))
            await self.settle()  # the target's units now write to the new layers
        except BaseException:
            if state_file is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(remove_file, state_file)
            raise
        finally:
            if was_running:
                with trio.CancelScope(shield=True):
                    await self._qmp(vm, "cont")
        paused = trio.current_time() - began
        self.log.info("vm %s: snapshot %s taken live (%s), paused %.2f s", vm.name, snapshot,
                      "with memory" if memory else "disks only", paused)
        return {**snap.to_dict(), "paused_s": round(paused, 3)}

    async def _save_state(self, vm: _Vm, path: str) -> None:
        """QEMU's memory and device state into ``path`` (a migration to a file)."""
        await self._qmp(vm, "migrate-set-parameters", **{"max-bandwidth": STATE_BANDWIDTH})
        await self._qmp(vm, "migrate", uri=f"exec:cat > {shlex.quote(path)}")
        with trio.move_on_after(STATE_TIMEOUT_S):
            while True:
                info = await self._qmp(vm, "query-migrate")
                status = info.get("status")
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    raise ControlError(f"{vm.name}: saving its memory failed: "
                                       f"{info.get('error-desc', status)}")
                await trio.sleep(0.02)
        await self._qmp(vm, "migrate_cancel")
        raise ControlError(f"{vm.name}: saving its memory took over {STATE_TIMEOUT_S:g} s")

    async def screenshot(self, name: str, path: str) -> dict[str, Any]:
        """`vm screenshot NAME OUT.png` (QMP screendump)."""
        vm = self._vm(name)
        if not os.path.isabs(path):
            raise ControlError(f"screenshot: {path!r} is not an absolute path")
        await self._qmp(vm, "screendump", filename=path, format="png")
        return {"name": vm.name, "file": path}

    async def runtime(self, name: str) -> dict[str, Any]:
        """What QEMU says of a running headless VM (status, vCPUs, balloon)."""
        vm = self._vm(name)
        out: dict[str, Any] = {"pid": vm.process.pid, "accel": vm.accel,
                               "console": str(vm.files.console), **vm.state}
        status = await self._qmp(vm, "query-status")
        out["status"] = status.get("status")
        out["vcpus"] = len(await self._qmp(vm, "query-cpus-fast"))
        try:
            out["balloon_actual_mb"] = (await self._qmp(vm, "query-balloon"))["actual"] >> 20
        except (ControlError, KeyError, TypeError):
            pass
        return out

    async def metrics(self, name: str | None = None) -> list[dict[str, Any]]:
        """`vm metrics`: each running headless VM's (or ``name``'s) QEMU as the
        host sees it: CPU seconds, resident and KSM-shared memory."""
        vms = [self._vm(name)] if name is not None else list(self.vms.values())
        return [await trio.to_thread.run_sync(_process_metrics, vm) for vm in vms if vm]

    # -- helpers -----------------------------------------------------------------------
    def _vm(self, name: str, required: bool = True) -> _Vm | None:
        vm = self.vms.get(name)
        if vm is None and required:
            raise ControlError(
                f"{name} is not running under this daemon (see: netstore vm list; "
                "VMs started with --type external are run by you)")
        return vm

    async def _qmp(self, vm: _Vm, command: str, **args: Any) -> Any:
        if vm.qmp is None:
            raise ControlError(f"{vm.name}: no QMP connection")
        with trio.move_on_after(QMP_COMMAND_S):
            try:
                return await vm.qmp.execute(command, **args)
            except QmpError as e:
                raise ControlError(f"{vm.name}: {e}") from None
        raise ControlError(f"{vm.name}: QEMU did not answer {command} within "
                           f"{QMP_COMMAND_S:g} s")

    async def _machine(self, name: str, **extra: Any) -> dict[str, Any]:
        machine = await self._registry(lambda reg: reg.machines.get(name))
        return {**machine.to_dict(), **extra}

    async def _registry(self, fn: Callable[[Registry], Any]) -> Any:
        def call() -> Any:
            with Registry.open(self.state_dir, self.registry_url) as reg:
                return fn(reg)

        try:
            return await trio.to_thread.run_sync(call)
        except RegistryError as e:
            raise ControlError(str(e)) from None


def _open_log(files: VmFiles, name: str, argv: list[str]) -> tuple[Any, int]:
    """The VM's log opened for QEMU, with netstore's line first; and where
    QEMU's own words start."""
    logf = open(files.log, "ab")
    logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} netstore starts {name}: "
               f"{' '.join(argv)}\n".encode())
    logf.flush()
    return logf, logf.tell()


def _die_with(parent: int) -> None:
    """In the child before exec: die with the daemon (and not start if it is gone)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _process_metrics(vm: _Vm) -> dict[str, Any]:
    """CPU seconds, RSS and KSM-merged memory of a VM's QEMU (from /proc)."""
    pid = vm.process.pid
    out: dict[str, Any] = {"name": vm.name, "pid": pid, "page_fusion": vm.fusion}
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        out["cpu_s"] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    pages = merging_pages(pid)
    if pages is not None:
        out["shared_mb"] = round(pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20), 1)
    return out

