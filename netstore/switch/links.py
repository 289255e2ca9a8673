# netstore/switch/links.py - the links of one switch's ports as the user sets
# them: an emulator per impaired direction (switch/emulation.py), the timer
# that lets delayed frames out, the administrative link state and the flap
# schedules. Part of the switch's Trio shell: SwitchService owns one Links and
# routes frames through it; nothing here sleeps in the frame path (delayed
# frames wait in their emulator, one timerfd wakes the loop when the next is
# due, at the kernel's timer precision rather than epoll's millisecond).
"""Links: impaired directions, link state and flaps of a switch's ports."""

from __future__ import annotations

import ctypes
import logging
import os
from typing import TYPE_CHECKING, Any

import trio

from netstore.impairments import DIRECTIONS, Flap, Impairment
from netstore.switch.emulation import COUNTERS, LinkEmulator, link_rng

if TYPE_CHECKING:
    from netstore.switch.ports import Port
    from netstore.switch.service import SwitchService

__all__ = ["LINK_COUNTERS", "Links", "Timer"]

_CLOCK_MONOTONIC = 1  # time.monotonic's clock on Linux
_TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = os.O_NONBLOCK, os.O_CLOEXEC, 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timer:
    """A timerfd on the monotonic clock: readable once the time armed has come.

    Python 3.11 has no os.timerfd_*; libc's are called through ctypes.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self.armed: float | None = None

    def arm(self, when: float | None) -> None:
        """Fire at monotonic time ``when`` (at once if past); None disarms."""
        spec = _Itimerspec()
        if when is not None:
            sec = int(when)
            spec.it_value.tv_sec = sec
            spec.it_value.tv_nsec = max(1, int((when - sec) * 1e9)) if when > 0 else 1
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed = when

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Links:
    """The user's side of a switch's port links (see the module doc).

    Args:
        service: the SwitchService whose ports these are (frames released from
            an inbound link go to its ``forward``; outbound ones to the port).
        seed: the switch's seed (None: runs differ).
    """

    def __init__(self, service: SwitchService, seed: int | None,
                 log: logging.Logger | None = None) -> None:
        self.service = service
        self.seed = seed
        self.log = log or service.log
        self.inbound: dict[str, LinkEmulator] = {}
        self.outbound: dict[str, LinkEmulator] = {}
        self.admin_down: set[str] = set()
        self.flap_down: set[str] = set()
        self.flaps: dict[str, tuple[Flap, trio.CancelScope]] = {}
        self.timer: Timer | None = None
        self._wake = trio.Event()  # a timer armed while none existed
        self._nursery: trio.Nursery | None = None

    @property
    def impaired(self) -> bool:
        return bool(self.inbound or self.outbound)

    def is_down(self, port: str) -> bool:
        """Down by the user or by its flap schedule."""
        return port in self.admin_down or port in self.flap_down

    # -- settings -------------------------------------------------------------------
    def impairment(self, port: str, direction: str) -> Impairment | None:
        em = self._table(direction).get(port)
        return em.spec if em is not None else None

    def set_impairment(self, port: str, direction: str, imp: Impairment | None) -> None:
        """Impair one direction of ``port`` (None or a perfect link: no emulator).

        Raises:
            ValueError: an unknown port or direction.
        """
        p = self._port(port)
        table = self._table(direction)
        em = table.get(port)
        if imp is None or not imp.active:
            if em is not None:
                del table[port]
                if direction == "in":
                    self.service.forward(port, em.drain())
                else:
                    self._transmit(p, em.drain())
                    p.egress = None
                    self.service.switch.tap_on_send(port, False)
                self.log.info("port %s: %s link perfect again", port, direction)
        elif em is not None:
            em.retune(imp)
            self.log.info("port %s: %s link %s", port, direction, imp.describe())
        else:
            em = table[port] = LinkEmulator(
                imp, link_rng(self.seed, self.service.name, port, direction))
            cause = "rx" if direction == "in" else "tx"
            em.on_drop = lambda frame, why, _p=port, _d=cause: self._dropped(_p, _d, frame, why)
            if direction == "out":
                p.egress = lambda frame, _p=p, _em=em: self._send(_p, _em, frame)
                self.service.switch.tap_on_send(port, True)
            self.log.info("port %s: %s link %s", port, direction, imp.describe())
        self.service._update_offloads()

    def set_admin(self, port: str, up: bool) -> None:
        """The user sets the link down (nothing in, nothing out) or up."""
        self._port(port)
        (self.admin_down.discard if up else self.admin_down.add)(port)
        self._apply_state(port)

    def set_flap(self, port: str, flap: Flap | None) -> None:
        """Take the link down for ``flap.down_s`` every ``flap.every_s`` (None: stop)."""
        self._port(port)
        old = self.flaps.pop(port, None)
        if old is not None:
            old[1].cancel()
        if port in self.flap_down:
            self.flap_down.discard(port)
            self._apply_state(port)
        if flap is None:
            return
        scope = trio.CancelScope()
        self.flaps[port] = (flap, scope)
        if self._nursery is not None:
            self._nursery.start_soon(self._flap, port, flap, scope)

    def forget(self, port: str) -> None:
        """A port left the switch: its links, state and flap go with it."""
        self.inbound.pop(port, None)
        self.outbound.pop(port, None)
        self.admin_down.discard(port)
        self.flap_down.discard(port)
        old = self.flaps.pop(port, None)
        if old is not None:
            old[1].cancel()

    def apply_spec(self, port: str, spec: Any) -> None:
        """The links a PortSpec configures (impair_in/out, link, flap)."""
        self.set_impairment(port, "in", spec.impair_in)
        self.set_impairment(port, "out", spec.impair_out)
        self.set_admin(port, spec.link != "down")
        current = self.flaps.get(port)
        if (current[0] if current else None) != spec.flap:
            self.set_flap(port, spec.flap)

    # -- frames ---------------------------------------------------------------------
    def admit(self, port: str, frames: list[bytes], now: float) -> list[bytes]:
        """Frames received on ``port`` through its inbound link: those that
        enter the switch now (the held ones follow from the timer)."""
        em = self.inbound[port]
        out: list[bytes] = []
        offer = em.offer
        for f in frames:
            out.extend(offer(f, now))
        self._armed_for(em)
        return out

    def _send(self, p: Port, em: LinkEmulator, frame: bytes) -> None:
        """A frame the switch sends out of ``p``, into its outbound link."""
        c = em.counters
        before = c["duplicated"] - c["loss"]
        out = em.offer(frame, self.service.switch.now)
        extra = c["duplicated"] - c["loss"] - before  # copies beyond the one the core counted
        if extra:
            self.service.switch.recount_tx(p.name, extra, extra * len(frame))
        if out:
            self._transmit(p, out)
        if em._held:
            self._armed_for(em)

    def _transmit(self, p: Port, frames: list[bytes]) -> None:
        taps = self.service.switch.taps
        for f in frames:
            for fn in taps:
                fn(p.name, "tx", f)
            p.transmit(f)

    def _dropped(self, port: str, direction: str, frame: bytes, why: str) -> None:
        if direction == "tx" and why == "overflow":  # counted as sent by the core, never sent
            self.service.switch.recount_tx(port, -1, -len(frame))
        for fn in self.service.switch.taps:
            fn(port, direction, frame, f"netstore: dropped by {why}")

    def _armed_for(self, em: LinkEmulator) -> None:
        due = em.next_due
        if due is None or self.timer is None:
            return
        armed = self.timer.armed
        if armed is None or due < armed:
            self.timer.arm(due)
            if armed is None:
                self._wake.set()

    def release(self, now: float) -> None:
        """Let out every held frame due by ``now``; arm the timer for the next."""
        svc = self.service
        svc.switch.now = now
        nxt: float | None = None
        for port, em in list(self.inbound.items()):
            if em._held:
                frames = em.release(now)
                if frames:
                    svc.forward(port, frames)
                nxt = _earliest(nxt, em.next_due)
        for port, em in list(self.outbound.items()):
            if em._held:
                frames = em.release(now)
                p = svc.ports.get(port)
                if frames and p is not None:
                    self._transmit(p, frames)
                nxt = _earliest(nxt, em.next_due)
        if self.timer is not None:
            self.timer.arm(nxt)

    async def run(self) -> None:
        """Release held frames when due, run flap schedules; until cancelled."""
        self.timer = Timer()
        clock = self.service.clock
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for port, (flap, scope) in self.flaps.items():
                    nursery.start_soon(self._flap, port, flap, scope)
                while True:
                    if self.timer.armed is None:
                        self._wake = trio.Event()
                        await self._wake.wait()
                    await trio.lowlevel.wait_readable(self.timer.fd)
                    self.timer.clear()
                    self.release(clock())
        finally:
            self._nursery = None
            self.timer.close()
            self.timer = None

    async def _flap(self, port: str, flap: Flap, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    await trio.sleep(flap.every_s - flap.down_s)
                    self.flap_down.add(port)
                    self._apply_state(port)
                    await trio.sleep(flap.down_s)
                    self.flap_down.discard(port)
                    self._apply_state(port)
            finally:
                if port in self.flap_down:
                    self.flap_down.discard(port)
                    self._apply_state(port)

    def _apply_state(self, port: str) -> None:
        p = self.service.ports.get(port)
        if p is None:
            return
        up = not self.is_down(port)
        if p.admin_up == up:
            return
        self.log.info("port %s: link set %s", port, "up" if up else "down")
        p.set_admin(up)
        if not up:  # a cut link loses what it carried
            em = self.inbound.get(port)
            if em is not None:
                em.drain()
            em = self.outbound.get(port)
            if em is not None:
                lost = em.drain()
                self.service.switch.recount_tx(port, -len(lost), -sum(map(len, lost)))
        self.service.link_changed(port, p.link_up)

    # -- status ---------------------------------------------------------------------
    def describe(self, port: str) -> dict[str, Any]:
        """What ``link show`` and ``switch show`` say of one port's links."""
        out: dict[str, Any] = {
            "admin": "down" if port in self.admin_down else "up",
            "flap": self.flaps[port][0].describe() if port in self.flaps else None,
            "flapping_down": port in self.flap_down,
        }
        for d in DIRECTIONS:
            em = self._table(d).get(port)
            out[d] = None if em is None else {
                "settings": em.spec.to_table(), "text": em.spec.describe(),
                "counters": {**em.counters, "held": em.held}}
        return out

    # -- internals ------------------------------------------------------------------
    def _table(self, direction: str) -> dict[str, LinkEmulator]:
        if direction == "in":
            return self.inbound
        if direction == "out":
            return self.outbound
        raise ValueError(f"a link direction is in or out, not {direction!r}")

    def _port(self, name: str) -> Port:
        p = self.service.ports.get(name)
        if p is None or not p.forwards:
            known = ", ".join(n for n, q in self.service.ports.items() if q.forwards) or "none"
            raise ValueError(f"switch {self.service.name} has no port {name!r} (ports: {known})")
        return p


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


# What each counter of a link counts, for the docs and `link show`.
LINK_COUNTERS: dict[str, str] = {**COUNTERS, "held": "frames in the link now"}
