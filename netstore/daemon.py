# netstore/daemon.py - the Trio nursery that is `netstore serve`: it owns the
# iSCSI service, the switches and the control socket, prints the ready line, and turns
# signals into a clean stop (SIGINT/SIGTERM) or a configuration reload (SIGHUP).
"""The netstore daemon: start the services, serve, reload, stop cleanly."""

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
from netstore.registry.lookup import registered_medium

__all__ = ["DaemonError", "configure_logging", "run_daemon", "serve"]

log = logging.getLogger("netstore")

# SIGINT/SIGTERM ask sessions to log out and wait for them; past this bound
# the daemon cancels whatever is left, so a stop never hangs (tests want < 5 s).
SHUTDOWN_GRACE_S = 4.0
READY_PREFIX = "netstore ready"
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


class DaemonError(Exception):
    """The daemon cannot start (port in use, another daemon, unusable state dir)."""


def configure_logging(level: str) -> None:
    """Send netstore's log lines, with timestamps, to stderr at ``level``."""
    root = logging.getLogger("netstore")
    for handler in list(root.handlers):
        if getattr(handler, "_netstore", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    handler._netstore = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def _prepare_state_dir(config: Config) -> None:
    try:
        config.daemon.media_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DaemonError(
            f"cannot create the state directory {config.daemon.media_dir}: {e.strerror or e}"
        ) from None


# The services and the wiring layer are imported when the daemon starts, so that
# `netstore --help` and config errors do not pay for (or depend on) the whole
# protocol stack.
def _switch_service() -> Any:
    from netstore.switch.service import SwitchService

    return SwitchService


def ready_line(iscsi: list[tuple[str, int]], switches: dict[str, Any]) -> str:
    """``netstore ready iscsi=H:P ... switch=SW:PORT=ADDRESS ...``.

    A switch appears with each port a peer can reach (udp/stream listen
    address, unixgram path, VDE directory, TAP device); a switch without such
    ports (the default sw0) appears as ``switch=SW``, so every running switch
    is in the line.
    """
    words = [READY_PREFIX]
    words += [f"iscsi={format_portal(h, p)}" for h, p in iscsi]
    for name, svc in switches.items():
        ports = [f"switch={name}:{port}={addr}" for port, _kind, addr in svc.listening()]
        words += ports or [f"switch={name}"]
    return " ".join(words)


class _Daemon:
    """What the nursery's tasks share: the config in force and the services."""

    def __init__(self, config: Config, service: Any, wiring: Any, nics: Any) -> None:
        self.config = config
        self.service = service  # the iSCSI service
        self.wiring = wiring  # config + registry -> the targets it serves
        self.nics = nics  # registry -> the switch ports of VM NICs
        self.switches: dict[str, Any] = {}
        self.nursery: trio.Nursery | None = None
        self.started = time.time()

    # -- switches ----------------------------------------------------------------
    def _switch(self, name: Any) -> Any:
        if not isinstance(name, str) or name not in self.switches:
            known = ", ".join(sorted(self.switches)) or "none"
            raise ControlError(f"no switch named {name!r} (switches: {known})")
        return self.switches[name]

    def switch_list(self) -> list[dict[str, Any]]:
        """The answer to "switch_list": one summary per switch."""
        out = []
        for svc in self.switches.values():
            st = svc.status(macs=False, ports=True)
            ports = [p for p in st.pop("ports") if "rx_frames" in p]
            st["ports_up"] = sum(1 for p in ports if p["link"] == "up")
            st["rx_frames"] = sum(p["rx_frames"] for p in ports)
            st["tx_frames"] = sum(p["tx_frames"] for p in ports)
            st["drops"] = sum(sum(p["drops"].values()) for p in ports)
            out.append(st)
        return out

    def switch_show(self, switch: str, macs: bool = True, ports: bool = True) -> dict[str, Any]:
        """The answer to "switch_show": ports (kind, link, counters) and MACs."""
        return self._switch(switch).status(macs=bool(macs), ports=bool(ports))

    def capture(self, switch: str, port: str | None = None, format: str = "pcap",
                count: int | None = None, duration: float | None = None) -> Streaming:
        """The answer to "capture": pcap/pcapng bytes until count, duration or EOF.

        The switch service knows nothing of the control socket: it hands back a
        LiveCapture (header, produce, close) that is sent as a Streaming answer.
        """
        live = self._switch(switch).capture_stream(port=port, fmt=format, count=count,
                                                   duration=duration)
        return Streaming(live.header, live.produce, cleanup=live.close)

    async def _add_switch(self, cfg: Any) -> None:
        svc = _switch_service()(cfg, log=log.getChild(f"switch.{cfg.name}"))
        self.switches[cfg.name] = svc
        try:
            await svc.run()
        except Exception as e:
            log.error("SIGHUP: switch %s did not start: %s", cfg.name, e)
        finally:
            if self.switches.get(cfg.name) is svc:
                del self.switches[cfg.name]

    # -- the registry: VM targets and VM NIC ports follow it -----------------------
    def apply_targets(self, view: Any) -> None:
        """A new registry view: serve its running VMs as targets."""
        self.wiring.set_registry(view)
        self.service.set_targets(self.wiring.exports())

    def apply_nics(self, view: Any) -> None:
        """A new registry view: add, change and remove the ports of its VM NICs."""
        changed = self.nics.set_registry(view, set(self.switches))
        for name in changed:
            svc = self.switches.get(name)
            cfg = next((c for c in self.config.switches if c.name == name), None)
            if svc is not None and cfg is not None:
                svc.reconfigure(self.nics.with_nics(cfg))
                log.info("switch %s: VM NIC ports now %s", name,
                         ", ".join(p.name for p in self.nics.ports.get(name, [])) or "none")

    def _reload_switches(self, new: Config) -> None:
        wanted = {sw.name: self.nics.with_nics(sw) for sw in new.switches}
        for name, svc in list(self.switches.items()):
            if name not in wanted:
                log.info("SIGHUP: switch %s removed", name)
                del self.switches[name]
                self.nursery.start_soon(svc.aclose)  # type: ignore[union-attr]
        for name, cfg in wanted.items():
            if name in self.switches:
                self.switches[name].reconfigure(cfg)
            elif self.nursery is not None:
                log.info("SIGHUP: switch %s added", name)
                self.nursery.start_soon(self._add_switch, cfg)

    def status(self) -> dict[str, Any]:
        """The answer to the control op "status"."""
        iscsi = self.service.status()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "config": str(self.config.source) if self.config.source else None,
            "state_dir": str(self.config.daemon.state_dir),
            "iscsi": iscsi,
            "switches": self.switch_list(),
        }

    def reload(self) -> None:
        """SIGHUP: re-read the file; keep the old settings if the new ones are wrong."""
        source = self.config.source
        if source is None:
            log.warning(
                "SIGHUP: running on the defaults, there is no configuration file to re-read"
            )
            return
        try:
            new = load_config(source, resolve_medium=registered_medium)
        except ConfigError as e:
            log.error("SIGHUP: configuration refused, keeping the old one: %s", e)
            return
        for what, old_value, new_value in (
            ("daemon.state_dir", self.config.daemon.state_dir, new.daemon.state_dir),
            ("iscsi.portals", self.config.iscsi.portals, new.iscsi.portals),
        ):
            if old_value != new_value:
                log.warning("SIGHUP: %s changed; that takes effect at the next start", what)
        try:
            self.wiring.set_config(new.iscsi.targets, new.iscsi.base_iqn)
        except Exception as e:  # a LUN it cannot open
            log.error("SIGHUP: the iSCSI service refused the new configuration: %s", e)
            return
        from netstore.exports.settings import iscsi_settings

        self.service.reconfigure(iscsi_settings(new.iscsi))
        self.service.set_targets(self.wiring.exports())
        if new.daemon.log_level != self.config.daemon.log_level:
            configure_logging(new.daemon.log_level)
        self._reload_switches(new)
        self.config = new
        names = ", ".join(t.iqn for t in new.iscsi.targets) or "none"
        log.info("SIGHUP: configuration reloaded from %s; targets: %s", source, names)


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


async def _serve(config: Config, listener: Any, signals: Any) -> None:
    from netstore.exports.ports import NicPorts
    from netstore.exports.settings import iscsi_settings
    from netstore.exports.targets import TargetWiring
    from netstore.exports.watcher import RegistryWatcher
    from netstore.iscsi.server import IscsiService

    state_dir = config.daemon.state_dir
    wiring = TargetWiring(state_dir, config.iscsi.base_iqn, log=log.getChild("iscsi"))
    try:
        wiring.set_config(config.iscsi.targets)
        service = IscsiService(iscsi_settings(config.iscsi), log=log.getChild("iscsi"))
        service.set_targets(wiring.exports())
    except Exception as e:
        raise DaemonError(f"cannot start the iSCSI target: {e}") from e
    daemon = _Daemon(config, service, wiring, NicPorts(log))
    watcher = RegistryWatcher(state_dir, log)
    watcher.subscribers += [daemon.apply_targets, daemon.apply_nics]
    async with trio.open_nursery() as nursery:
        try:
            bound = await nursery.start(service.run)
        except OSError as e:
            raise DaemonError(f"cannot listen for iSCSI: {e.strerror or e}") from None
        except Exception as e:
            # The service reports a portal in use as its own error type.
            raise DaemonError(str(e)) from None
        daemon.nursery = nursery
        switch_service = _switch_service()
        for cfg in config.switches:
            svc = switch_service(cfg, log=log.getChild(f"switch.{cfg.name}"))
            try:
                await nursery.start(svc.run)
            except Exception as e:  # SwitchServiceError: an address in use, no TAP
                raise DaemonError(f"cannot start: {e}") from None
            daemon.switches[cfg.name] = svc
        handlers = {
            "status": daemon.status,
            "ping": lambda: {"pid": os.getpid(), "version": __version__},
            "switch_list": daemon.switch_list,
            "switch_show": daemon.switch_show,
            "capture": daemon.capture,
        }
        try:
            await watcher.poll()
        except Exception:
            log.exception("reading the registry failed; retrying")
        nursery.start_soon(watcher.run)
        await nursery.start(serve_control, listener, handlers)
        ready = ready_line(bound, daemon.switches)
        print(ready, flush=True)
        log.info("%s (pid %d, state %s)", ready, os.getpid(), config.daemon.state_dir)

        async for signum in signals:
            if signum == signal.SIGHUP:
                daemon.reload()
                continue
            log.info("%s: stopping", signal.Signals(signum).name)
            break

        with trio.move_on_after(SHUTDOWN_GRACE_S) as scope:
            nursery.start_soon(_cancel_on_second_signal, signals, scope)
            for svc in list(daemon.switches.values()):
                await svc.aclose()
            await service.aclose()
        wiring.flush()
        if scope.cancelled_caught:
            log.warning(
                "stop: sessions did not close within %g s; cancelling them", SHUTDOWN_GRACE_S
            )
        nursery.cancel_scope.cancel()
    log.info("stopped")


async def _cancel_on_second_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        if signum != signal.SIGHUP:
            log.warning("%s again: stopping now", signal.Signals(signum).name)
            scope.cancel()
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
