# The switch process: every configured switch runs here, away from the disks
# (a SYNCHRONIZE CACHE in an iSCSI worker never delays a frame).  The
# supervisor sends the wanted switches as plain SwitchSpecs and asks for
# status; a live capture streams into a socket the supervisor passes along;
# `netstore link` changes a port's impairments, link state and flap at run time.
"""The child side of the switch process."""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio

from netstore.impairments import DIRECTIONS, ImpairmentError, parse_flap, parse_impairment
from netstore.switch.service import SwitchService
from netstore.switch.spec import SwitchSpec


class SwitchHost:
    """Requests the supervisor sends the switch process (see :meth:`handlers`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.log = logging.getLogger("netstore.switch")
        self.nursery: trio.Nursery | None = None
        self.switches: dict[str, SwitchService] = {}
        self._lock = trio.Lock()

    def handlers(self) -> dict[str, Any]:
        return {"set_switches": self.set_switches, "listening": self.listening,
                "switch_list": self.switch_list, "switch_show": self.switch_show,
                "capture": self.capture, "link_set": self.link_set,
                "link_clear": self.link_clear, "link_state": self.link_state,
                "link_flap": self.link_flap, "link_show": self.link_show,
                "stop": self.aclose}

    async def set_switches(self, specs: list[SwitchSpec]) -> dict[str, str]:
        """Run exactly `specs`: new switches start, changed ones are
        reconfigured, the others stop.  Returns {switch: why it did not start}."""
        errors: dict[str, str] = {}
        async with self._lock:
            wanted = {s.name: s for s in specs}
            for name in [n for n in self.switches if n not in wanted]:
                self.log.info("switch %s removed", name)
                await self.switches.pop(name).aclose()
            for name, spec in wanted.items():
                svc = self.switches.get(name)
                if svc is not None:
                    if svc.config != spec:
                        svc.reconfigure(spec)
                    continue
                svc = SwitchService(spec, log=self.log.getChild(name))
                try:
                    await self.nursery.start(self._run, svc)  # type: ignore[union-attr]
                except Exception as e:  # an address in use, no TAP device
                    errors[name] = str(e)
                    continue
                self.switches[name] = svc
        return errors

    async def _run(self, svc: SwitchService, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await svc.run(task_status=task_status)
        finally:
            if self.switches.get(svc.name) is svc:
                del self.switches[svc.name]

    def listening(self) -> dict[str, list[tuple[str, str, str]]]:
        """{switch: [(port, kind, address) a peer can reach]} in configured order."""
        return {name: svc.listening() for name, svc in self.switches.items()}

    def _switch(self, name: Any) -> SwitchService:
        if not isinstance(name, str) or name not in self.switches:
            known = ", ".join(sorted(self.switches)) or "none"
            raise LookupError(f"no switch named {name!r} (switches: {known})")
        return self.switches[name]

    def switch_list(self) -> list[dict[str, Any]]:
        """One summary per switch: ports up, frames, drops."""
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
        """Ports (kind, link, counters) and MACs of one switch."""
        return self._switch(switch).status(macs=bool(macs), ports=bool(ports))

    # -- netstore link: impairments, link state and flap of one port ------------------
    def _link_port(self, switch: Any, port: Any) -> tuple[SwitchService, str]:
        svc = self._switch(switch)
        names = [row["port"] for row in svc.link_show()]
        if not isinstance(port, str) or port not in names:
            known = ", ".join(names) or "none"
            raise LookupError(f"switch {switch} has no port {port!r} (ports: {known})")
        return svc, port

    @staticmethod
    def _directions(directions: Any) -> list[str]:
        if isinstance(directions, str):
            directions = [directions]
        if (not isinstance(directions, list | tuple) or not directions
                or any(d not in DIRECTIONS for d in directions)):
            raise ValueError(f"directions: expected a list of {' and '.join(DIRECTIONS)}, "
                             f"got {directions!r}")
        return list(dict.fromkeys(directions))

    @staticmethod
    def _row(svc: SwitchService, port: str) -> dict[str, Any]:
        return next(row for row in svc.link_show() if row["port"] == port)

    def link_set(self, switch: str, port: str, directions: list[str],
                 table: dict[str, Any]) -> dict[str, Any]:
        """Merge ``table`` (text forms, as parse_impairment reads) into the
        impairments of ``port`` in each direction; returns the port's link_show row.
        Nothing changes unless every direction takes the new settings."""
        svc, port = self._link_port(switch, port)
        wanted = {}
        for d in self._directions(directions):
            try:
                wanted[d] = parse_impairment(table, base=svc.impairment(port, d))
            except ImpairmentError as e:  # its message names the key
                raise ValueError(str(e)) from None
        for d, imp in wanted.items():
            svc.set_impairment(port, d, imp if imp.active else None)
        self.log.info("switch %s: port %s %s now %s", switch, port, "+".join(wanted),
                      "; ".join(imp.describe() for imp in wanted.values()))
        return self._row(svc, port)

    def link_clear(self, switch: str, port: str, directions: list[str]) -> dict[str, Any]:
        """A perfect link again in each direction; returns the port's link_show row."""
        svc, port = self._link_port(switch, port)
        directions = self._directions(directions)
        for d in directions:
            svc.set_impairment(port, d, None)
        self.log.info("switch %s: port %s %s cleared", switch, port, "+".join(directions))
        return self._row(svc, port)

    def link_state(self, switch: str, port: str, up: bool) -> dict[str, Any]:
        """Set the port administratively up or down; returns its link_show row."""
        svc, port = self._link_port(switch, port)
        if not isinstance(up, bool):
            raise ValueError(f"up: expected true or false, got {up!r}")
        svc.set_admin(port, up)
        self.log.info("switch %s: port %s set %s", switch, port, "up" if up else "down")
        return self._row(svc, port)

    def link_flap(self, switch: str, port: str, flap: str | None) -> dict[str, Any]:
        """Start the flap schedule ``flap`` ("down 2s every 30s") on the port, or
        stop flapping (None); returns its link_show row."""
        svc, port = self._link_port(switch, port)
        try:
            schedule = None if flap is None else parse_flap(flap)
        except ImpairmentError as e:
            raise ValueError(str(e)) from None
        svc.set_flap(port, schedule)
        self.log.info("switch %s: port %s %s", switch, port,
                      "flaps " + schedule.describe() if schedule else "stops flapping")
        return self._row(svc, port)

    def link_show(self, switch: str) -> list[dict[str, Any]]:
        """Each forwarding port: link, admin state, flap, and per direction its
        impairment settings and counters."""
        return self._switch(switch).link_show()

    def capture(self, switch: str, port: str | None, fmt: str, count: int | None,
                duration: float | None, *, fds: list[int]) -> dict[str, Any]:
        """Start a live capture streaming into the socket passed along; returns
        its header.  The stream's end closes the socket."""
        sink = socket.socket(fileno=fds[0])
        try:
            live = self._switch(switch).capture_stream(port=port, fmt=fmt, count=count,
                                                       duration=duration)
        except Exception:
            sink.close()
            raise
        self.nursery.start_soon(self._stream, live, sink)  # type: ignore[union-attr]
        return live.header

    async def _stream(self, live: Any, sink: socket.socket) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sink))
        try:
            await live.produce(stream.send_all)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader left
        finally:
            live.close()
            await stream.aclose()

    async def aclose(self) -> None:
        for svc in list(self.switches.values()):
            await svc.aclose()
        self.switches.clear()
