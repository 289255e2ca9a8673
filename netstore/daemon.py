# netstore/daemon.py - `netstore serve`, the supervisor: it loads the
# configuration, runs the one registry watcher, owns the control socket and the
# iSCSI portals, and runs the services as child processes it starts, watches
# and restarts (N iSCSI workers, one switch process); it hands them desired
# state as plain values, prints the ready line, and turns signals into a clean
# stop (SIGINT/SIGTERM) or a configuration reload (SIGHUP).
"""The netstore daemon: start the service processes, serve, reload, stop cleanly."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

import trio

from netstore import __version__
from netstore.addresses import format_portal
from netstore.config import Config, ConfigError, load_config
from netstore.control import (
    ControlError,
    DaemonAlreadyRunning,
    Streaming,
    bind_control_socket,
    serve_control,
)
from netstore.processes.logs import configure_logging
from netstore.registry.lookup import registered_medium

__all__ = ["DaemonError", "configure_logging", "run_daemon", "serve"]

log = logging.getLogger("netstore")

# SIGINT/SIGTERM ask sessions to log out and wait for them; past this bound
# the daemon cancels whatever is left, so a stop never hangs (tests want < 5 s).
SHUTDOWN_GRACE_S = 4.0
READY_PREFIX = "netstore ready"
# How long the supervisor waits for a child's answer to a control request.
CHILD_ANSWER_S = 5.0


class DaemonError(Exception):
    """The daemon cannot start (port in use, another daemon, unusable state dir)."""


def _prepare_state_dir(config: Config) -> None:
    try:
        config.daemon.media_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DaemonError(
            f"cannot create the state directory {config.daemon.media_dir}: {e.strerror or e}"
        ) from None


def ready_line(iscsi: list[tuple[str, int]],
               switches: dict[str, list[tuple[str, str, str]]]) -> str:
    """``netstore ready iscsi=H:P ... switch=SW:PORT=ADDRESS ...``.

    A switch appears with each port a peer can reach (udp/stream listen
    address, unixgram path, VDE directory, TAP device); a switch without such
    ports (the default sw0) appears as ``switch=SW``, so every running switch
    is in the line.
    """
    words = [READY_PREFIX]
    words += [f"iscsi={format_portal(h, p)}" for h, p in iscsi]
    for name, listening in switches.items():
        ports = [f"switch={name}:{port}={addr}" for port, _kind, addr in listening]
        words += ports or [f"switch={name}"]
    return " ".join(words)


class _Supervisor:
    """What the supervisor's tasks share: the config in force, the wiring of
    desired state, and the children that serve it."""

    def __init__(self, config: Config, wiring: Any, nics: Any) -> None:
        self.config = config
        self.wiring = wiring  # config + registry -> the target plans
        self.nics = nics  # registry -> the switch ports of VM NICs
        self.workers: list[Any] = []  # Child per iSCSI worker, by index
        self.switch_child: Any = None
        self.runner: Any = None  # netstore.vm.runner.VmRunner
        self.membership: Any = None  # netstore.exports.membership.HostMembership (shared registry)
        self.hosts: tuple[Any, ...] = ()  # the shared registry's hosts (exports.multipath.HostGroup)
        self.bound: list[tuple[str, int]] = []  # the iSCSI portals as bound
        self.owner: dict[str, int] = {}  # target -> worker index
        self.started = time.time()
        # The registry changed what the children should serve (see pusher).
        self._changed = trio.Event()
        self._targets_dirty = False
        self._switches_dirty = False

    # -- desired state -> children -------------------------------------------------
    def _worker_share(self, index: int, owner: dict[str, int]) -> tuple[list[Any], list[Any]]:
        """The plans worker `index` serves, and every target's login entry."""
        plans = self.wiring.plans()
        return ([p for p in plans if owner.get(p.entry.name) == index],
                [p.entry for p in plans])

    async def setup_worker(self, child: Any, restarted: bool) -> None:
        """A new worker process: its settings, then the targets it owns."""
        from netstore.exports.settings import iscsi_settings

        await child.call("start", iscsi_settings(self.config.iscsi), self.bound,
                         str(self.config.daemon.state_dir), restarted, self.config.registry.url)
        owner = self._owners()
        await child.call("set_targets", *self._worker_share(self.workers.index(child), owner))

    async def setup_switches(self, child: Any, restarted: bool) -> None:
        """A new switch process: every configured switch with its VM NIC ports."""
        errors = await child.call("set_switches", self._switch_specs())
        for name, why in errors.items():
            if not restarted:
                raise DaemonError(f"cannot start: {why}")
            log.error("switch %s did not start again: %s", name, why)

    def _switch_specs(self) -> list[Any]:
        from netstore.exports.vteps import with_host_remotes

        specs = [self.nics.with_nics(sw) for sw in self.config.switches]
        if self.config.registry.shared:  # the other hosts' VTEPs join the vxlan ports
            specs = [with_host_remotes(s, self.hosts, self.config.registry.host) for s in specs]
        return specs

    def route(self, target: str) -> int | None:
        return self.owner.get(target)

    def _owners(self) -> dict[str, int]:
        from netstore.processes.acceptor import owners

        return owners(self.wiring.plans(), len(self.workers), self.owner)

    async def push_targets(self) -> None:
        """Send every worker its share; connections are routed by the new
        shares once the workers have them."""
        owner = self._owners()
        for index, child in enumerate(self.workers):
            if not child.ready.is_set():
                continue  # a replacement takes the current share as it starts
            try:
                await child.call("set_targets", *self._worker_share(index, owner), timeout=30)
            except Exception as e:
                log.error("%s: new targets not taken: %s", child.label, e)
        self.owner = owner

    async def push_switches(self) -> None:
        child = self.switch_child
        if child is None or not child.ready.is_set():
            return
        try:
            errors = await child.call("set_switches", self._switch_specs(), timeout=30)
        except Exception as e:
            log.error("the switch process did not take the new switches: %s", e)
            return
        for name, why in errors.items():
            log.error("SIGHUP: switch %s did not start: %s", name, why)

    async def pusher(self) -> None:
        """Hands changed desired state to the children, one change at a time."""
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            await self.push_changes()

    async def push_changes(self) -> None:
        """Hand the children what changed since the last push, now."""
        targets, self._targets_dirty = self._targets_dirty, False
        switches, self._switches_dirty = self._switches_dirty, False
        if targets:
            await self.push_targets()
        if switches:
            await self.push_switches()

    def portal(self) -> str:
        """The portal a VM's QEMU on this host logs in to."""
        host, port = self.bound[0]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return format_portal(host, port)

    # -- the registry: VM targets and VM NIC ports follow it -----------------------
    def apply_targets(self, view: Any) -> None:
        """A new registry view: serve its running VMs as targets."""
        self.wiring.set_registry(view)
        self._targets_dirty = True
        self._changed.set()

    async def isolated(self, isolated: bool) -> None:
        """This host fenced itself, or reaches the shared registry again."""
        self.wiring.set_isolated(isolated)
        self._targets_dirty = True
        self._changed.set()

    def apply_hosts(self, view: Any) -> None:
        """A new registry view: the hosts' VTEPs feed the vxlan ports' remotes."""
        if view.hosts == self.hosts:
            return
        self.hosts = view.hosts
        if any(h.vteps for h in view.hosts):
            self._switches_dirty = True
            self._changed.set()

    def apply_nics(self, view: Any) -> None:
        """A new registry view: add, change and remove the ports of its VM NICs."""
        changed = self.nics.set_registry(view, {sw.name for sw in self.config.switches})
        for name in changed:
            log.info("switch %s: VM NIC ports now %s", name,
                     ", ".join(p.name for p in self.nics.ports.get(name, [])) or "none")
        if changed:
            self._switches_dirty = True
            self._changed.set()

    # -- control requests ------------------------------------------------------------
    async def _ask_switches(self, name: str, *args: Any, fds: tuple[int, ...] = ()) -> Any:
        from netstore.processes.channel import ChannelClosed, RemoteError

        try:
            return await self.switch_child.call(name, *args, fds=fds, timeout=CHILD_ANSWER_S)
        except RemoteError as e:
            raise ControlError(str(e)) from None
        except (ChannelClosed, trio.TooSlowError):
            raise ControlError("the switch process is restarting; try again") from None

    async def switch_list(self) -> list[dict[str, Any]]:
        """The answer to "switch_list": one summary per switch."""
        return await self._ask_switches("switch_list")

    async def switch_show(self, switch: str, macs: bool = True,
                          ports: bool = True) -> dict[str, Any]:
        """The answer to "switch_show": ports (kind, link, counters) and MACs."""
        return await self._ask_switches("switch_show", switch, macs, ports)

    # `netstore link`: the switch process checks and applies; each answers the
    # port's row of link_show (or, for link_show, every port's).
    async def link_set(self, switch: str, port: str, directions: list[str],
                       table: dict[str, Any]) -> dict[str, Any]:
        """The answer to "link_set": ``table`` merged into the port's impairments."""
        return await self._ask_switches("link_set", switch, port, directions, table)

    async def link_clear(self, switch: str, port: str, directions: list[str]) -> dict[str, Any]:
        """The answer to "link_clear": no impairment left in those directions."""
        return await self._ask_switches("link_clear", switch, port, directions)

    async def link_state(self, switch: str, port: str, up: bool) -> dict[str, Any]:
        """The answer to "link_state": the port set administratively up or down."""
        return await self._ask_switches("link_state", switch, port, up)

    async def link_flap(self, switch: str, port: str, flap: str | None) -> dict[str, Any]:
        """The answer to "link_flap": a flap schedule started, or stopped (None)."""
        return await self._ask_switches("link_flap", switch, port, flap)

    async def link_show(self, switch: str) -> list[dict[str, Any]]:
        """The answer to "link_show": every port's link state, impairments, counters."""
        return await self._ask_switches("link_show", switch)

    async def capture(self, switch: str, port: str | None = None, format: str = "pcap",
                      count: int | None = None, duration: float | None = None) -> Streaming:
        """The answer to "capture": pcap/pcapng bytes until count, duration or EOF.

        The switch process writes the records into one end of a socket pair;
        the other end is relayed to the control client.
        """
        import socket as _socket

        mine, theirs = _socket.socketpair()
        try:
            header = await self._ask_switches("capture", switch, port, format, count,
                                              duration, fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(mine))

        async def relay(send: Any) -> None:
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    return
                await send(data)

        return Streaming(header, relay, cleanup=mine.close)

    async def status(self) -> dict[str, Any]:
        """The answer to the control op "status"."""
        iscsi: dict[str, Any] = {"portals": [format_portal(h, p) for h, p in self.bound],
                                 "targets": [], "sessions": [], "workers": []}
        for child in self.workers:
            try:
                st = await child.call("status", timeout=CHILD_ANSWER_S)
            except Exception:
                st = {}
            iscsi["targets"] += st.get("targets", [])
            iscsi["sessions"] += st.get("sessions", [])
            iscsi["workers"].append({"name": child.label, "pid": child.pid,
                                     "running": child.ready.is_set(),
                                     "starts": child.starts,
                                     "targets": [t["iqn"] for t in st.get("targets", [])]})
        try:
            switches = await self.switch_list()
        except ControlError:
            switches = []
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "config": str(self.config.source) if self.config.source else None,
            "state_dir": str(self.config.daemon.state_dir),
            "iscsi": iscsi,
            "switches": switches,
        }

    async def reload(self) -> None:
        """SIGHUP: re-read the file; keep the old settings if the new ones are wrong."""
        source = self.config.source
        if source is None:
            log.warning(
                "SIGHUP: running on the defaults, there is no configuration file to re-read"
            )
            return
        try:  # in a thread: it reads the file and looks media up in the registry
            new = await trio.to_thread.run_sync(
                lambda: load_config(source, resolve_medium=registered_medium))
        except ConfigError as e:
            log.error("SIGHUP: configuration refused, keeping the old one: %s", e)
            return
        for what, old_value, new_value in (
            ("daemon.state_dir", self.config.daemon.state_dir, new.daemon.state_dir),
            ("iscsi.portals", self.config.iscsi.portals, new.iscsi.portals),
            ("iscsi.workers", self.config.iscsi.workers, new.iscsi.workers),
        ):
            if old_value != new_value:
                log.warning("SIGHUP: %s changed; that takes effect at the next start", what)
        try:
            await trio.to_thread.run_sync(self.wiring.set_config, new.iscsi.targets,
                                          new.iscsi.base_iqn)
        except Exception as e:  # a LUN it cannot open
            log.error("SIGHUP: the iSCSI service refused the new configuration: %s", e)
            return
        from netstore.exports.settings import iscsi_settings

        settings = iscsi_settings(new.iscsi)
        for child in self.workers:
            if child.ready.is_set():
                try:
                    await child.call("settings", settings, timeout=CHILD_ANSWER_S)
                except Exception as e:
                    log.error("%s: new settings not taken: %s", child.label, e)
        if new.daemon.log_level != self.config.daemon.log_level:
            configure_logging(new.daemon.log_level)
            for child in [*self.workers, self.switch_child]:
                await child.set_log_level(new.daemon.log_level)
        for sw in self.config.switches:
            if sw.name not in {n.name for n in new.switches}:
                log.info("SIGHUP: switch %s removed", sw.name)
        for sw in new.switches:
            if sw.name not in {o.name for o in self.config.switches}:
                log.info("SIGHUP: switch %s added", sw.name)
        self.config = new
        await self.push_targets()
        await self.push_switches()
        names = ", ".join(t.iqn for t in new.iscsi.targets) or "none"
        log.info("SIGHUP: configuration reloaded from %s; targets: %s", source, names)

    async def stop(self) -> None:
        """The VMs' QEMU quit; every child asked to stop cleanly at once;
        killed past the grace."""
        if self.runner is not None:
            await self.runner.stop_all(SHUTDOWN_GRACE_S)
        if self.membership is not None:
            await self.membership.leave()
        async with trio.open_nursery() as n:
            for child in [*self.workers, self.switch_child]:
                if child is not None:
                    n.start_soon(child.stop, SHUTDOWN_GRACE_S)


async def run_daemon(config: Config) -> None:
    """Run the daemon until SIGINT or SIGTERM, then stop cleanly.

    Creates the state directory (and media/), starts the iSCSI service, every
    configured switch and the control socket, prints one ``netstore ready
    iscsi=HOST:PORT ...`` line (see ready_line) on stdout, then serves. SIGHUP
    reloads the configuration file.

    Raises:
        DaemonError: a listener could not be set up (nothing is left running).
    """
    configure_logging(config.daemon.log_level)
    # Signals are routed to us from the very start, so a SIGTERM during start-up
    # is a clean stop rather than a kill.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        _prepare_state_dir(config)
        sock_path = config.daemon.socket_path
        try:
            listener = bind_control_socket(sock_path)
        except DaemonAlreadyRunning as e:
            raise DaemonError(str(e)) from None
        except OSError as e:
            raise DaemonError(
                f"cannot create the control socket {sock_path}: {e.strerror or e}"
            ) from None
        try:
            await _serve(config, listener, signals)
        finally:
            listener.close()
            try:
                sock_path.unlink()
            except OSError:
                pass


async def _start_all(nursery: trio.Nursery, children: list[Any]) -> None:
    """Start the children at once (each takes a Python start-up); the first
    failure is raised after all have tried."""
    errors: list[Exception] = []

    async def one(child: Any) -> None:
        try:
            await nursery.start(child.run)
        except Exception as e:
            errors.append(e)

    async with trio.open_nursery() as starting:
        for child in children:
            starting.start_soon(one, child)
    if errors:
        raise errors[0]


async def _serve(config: Config, listener: Any, signals: Any) -> None:
    from netstore.exports.membership import HostMembership
    from netstore.exports.ports import NicPorts
    from netstore.exports.targets import TargetWiring
    from netstore.exports.vteps import own_vteps
    from netstore.exports.watcher import RegistryWatcher
    from netstore.processes.acceptor import Acceptor, ListenError
    from netstore.processes.child import Child
    from netstore.vm.runner import VmRunner

    state_dir = config.daemon.state_dir
    url = config.registry.url
    if config.registry.media is not None:  # where this lab's media are created
        from netstore.registry import Registry, RegistryError

        def share() -> None:
            with Registry.open(state_dir, url) as reg:
                reg.share_media(config.registry.media)
        try:
            await trio.to_thread.run_sync(share)
        except RegistryError as e:
            raise DaemonError(f"cannot start: {e}") from None
    wiring = TargetWiring(state_dir, config.iscsi.base_iqn, log=log.getChild("iscsi"),
                          registry_url=url, host=config.registry.host if url else None)
    try:
        await trio.to_thread.run_sync(wiring.set_config, config.iscsi.targets)
    except Exception as e:
        raise DaemonError(f"cannot start the iSCSI target: {e}") from e
    sup = _Supervisor(config, wiring, NicPorts(log))
    watcher = RegistryWatcher(state_dir, log, url)
    watcher.subscribers += [sup.apply_targets, sup.apply_nics, sup.apply_hosts]
    try:
        await watcher.poll()
    except Exception:
        log.exception("reading the registry failed; retrying")
    level = config.daemon.log_level
    sup.workers = [Child("iscsi", f"worker{i + 1}", sup.setup_worker, log, level)
                   for i in range(config.iscsi.workers)]
    sup.switch_child = Child("switches", "switches", sup.setup_switches, log, level)
    sup.owner = sup._owners()
    acceptor = Acceptor(config.iscsi.portals, sup.workers, sup.route, log.getChild("iscsi"))
    async with trio.open_nursery() as nursery:
        try:
            sup.bound = await nursery.start(acceptor.run)
        except ListenError as e:
            raise DaemonError(str(e)) from None
        try:
            await _start_all(nursery, [sup.switch_child, *sup.workers])
        except DaemonError:
            raise
        except Exception as e:
            log.debug("starting the children failed", exc_info=e)
            inner = _innermost(e)
            if isinstance(inner, DaemonError):
                raise inner from None
            raise DaemonError(f"cannot start: {inner}") from None
        nursery.start_soon(sup.pusher)
        nursery.start_soon(watcher.run)

        async def settle() -> None:
            await watcher.poll()
            await sup.push_changes()

        sup.runner = VmRunner(state_dir, accel=config.vms.accel, probe=config.vms.probe_kernel,
                              portal=sup.portal, base_iqn=config.iscsi.base_iqn,
                              settle=settle, log=log.getChild("vm"), registry_url=url,
                              host=config.registry.host if url else None)
        if url:  # a shared registry: join it, keep the lease, run VMs placed here
            sup.membership = HostMembership(state_dir, url, config.registry.host,
                                            config.registry.lease_s, sup.portal,
                                            sup.runner.drop_all, log.getChild("hosts"),
                                            own_vteps(config.switches), sup.isolated)
            await sup.membership.register()
            nursery.start_soon(sup.membership.run)
            watcher.subscribers.append(sup.membership.poke)
            nursery.start_soon(sup.membership.serve_requests, sup.runner.handlers())
        await nursery.start(sup.runner.run)
        handlers = {
            "status": sup.status,
            "ping": lambda: {"pid": os.getpid(), "version": __version__},
            "switch_list": sup.switch_list,
            "switch_show": sup.switch_show,
            "capture": sup.capture,
            "link_set": sup.link_set,
            "link_clear": sup.link_clear,
            "link_state": sup.link_state,
            "link_flap": sup.link_flap,
            "link_show": sup.link_show,
            **sup.runner.handlers(),
        }
        await nursery.start(serve_control, listener, handlers)
        listening = await sup.switch_child.call("listening", timeout=CHILD_ANSWER_S)
        ready = ready_line(sup.bound, listening)
        print(ready, flush=True)
        log.info("%s (pid %d, state %s, %d iSCSI worker(s))", ready, os.getpid(),
                 config.daemon.state_dir, len(sup.workers))

        async for signum in signals:
            if signum == signal.SIGHUP:
                await sup.reload()
                continue
            log.info("%s: stopping", signal.Signals(signum).name)
            break

        nursery.start_soon(_kill_on_second_signal, signals, sup)
        await sup.stop()
        nursery.cancel_scope.cancel()
    log.info("stopped")


async def _kill_on_second_signal(signals: Any, sup: _Supervisor) -> None:
    async for signum in signals:
        if signum != signal.SIGHUP:
            log.warning("%s again: stopping now", signal.Signals(signum).name)
            for child in [*sup.workers, sup.switch_child]:
                if child is not None:
                    child.kill()
            return


def serve(config: Config) -> int:
    """Run the daemon in the foreground; the exit status for ``netstore serve``.

    Returns 0 after a clean stop, 1 when the daemon could not start (one line
    on stderr says why) or failed while running.
    """
    try:
        trio.run(run_daemon, config)
    except KeyboardInterrupt:
        return 0
    except BaseException as e:
        error = _find(e, DaemonError)
        if error is not None:
            print(f"netstore: {error}", file=sys.stderr, flush=True)
            return 1
        if _find(e, KeyboardInterrupt) is not None:
            return 0
        if not isinstance(e, Exception | BaseExceptionGroup):
            raise
        log.error("netstore daemon failed", exc_info=e)
        return 1
    return 0


def _innermost(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first ``kind`` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
