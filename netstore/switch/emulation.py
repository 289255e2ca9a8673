# netstore/switch/emulation.py - the emulator of one direction of one impaired
# link: frames in, each one's fate decided as it enters (lost, duplicated,
# corrupted, reordered, when it leaves), frames out when their time comes.
# Pure: no sockets, no clock (the shell gives it the time and arms a timer
# for next_due), randomness from a random.Random the shell seeds.
#
# The model is tc-netem(8)'s, in its order: duplicate, loss, corrupt, the
# queue limit, then delay (jitter from a distribution) or reorder, with rate
# serialising frames onto the link. Where netem's own maths is known to be
# off, the configured figure wins: a correlation here is a two-state Markov
# chain that keeps the percentage as the long-run proportion (netem's
# "correlated random" skews it), and correlated jitter is an AR(1) Gaussian
# copula that keeps the distribution. Every frame draws the same number of
# random values whatever befalls it, so one seed and one sequence of frames
# give the same decisions even when a queue overflow depends on timing.
"""LinkEmulator: one direction of a link impaired as netem would (delay, loss, rate...)."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from statistics import NormalDist

from netstore.impairments import Impairment

__all__ = ["COUNTERS", "LinkEmulator", "link_rng"]

# What the counters of a link count (netstore link show).
COUNTERS = {
    "passed": "frames that left the link",
    "delayed": "frames that waited (delay, jitter or rate)",
    "loss": "frames dropped by loss (random or gemodel)",
    "overflow": "frames dropped because the link held its limit",
    "duplicated": "extra copies sent",
    "corrupted": "frames sent with one bit flipped",
    "reordered": "frames sent at once, ahead of delayed ones",
}

_PARETO_ALPHA = 3.0  # netem's pareto table is built with alpha 3
_PARETO_MEAN = _PARETO_ALPHA / (_PARETO_ALPHA - 1)
_PARETO_SD = math.sqrt(_PARETO_ALPHA / ((_PARETO_ALPHA - 1) ** 2 * (_PARETO_ALPHA - 2)))
_PN = math.hypot(0.25, 0.75)  # paretonormal: 1/4 normal + 3/4 pareto, sd 1 again
_STD = NormalDist()
_PHI = _STD.cdf
_INV = _STD.inv_cdf
_TINY = 1e-12


def link_rng(seed: int | None, switch: str, port: str, direction: str) -> random.Random:
    """The random source of one link: from the switch's seed when it has one
    (the same link repeats the same decisions), from the OS otherwise."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}/{switch}/{port}/{direction}")


class _Chance:
    """A yes/no outcome with probability ``p`` whose outcomes repeat with
    correlation ``rho`` (a two-state Markov chain: the long-run rate stays p)."""

    __slots__ = ("p", "stay", "last")

    def __init__(self, p: float, rho: float) -> None:
        self.p = p
        self.stay = rho
        self.last = False

    def __call__(self, u: float) -> bool:
        p, rho = self.p, self.stay
        if rho:
            p = p + rho * (1 - p) if self.last else p * (1 - rho)
        self.last = hit = u < p
        return hit


class LinkEmulator:
    """One direction of an impaired link.

    ``offer(frame, now)`` returns the frames that leave at once (none, one, or
    two with a duplicate); the others wait until ``release(now)`` hands them
    out, in time order. ``next_due`` is when the next one is due (for the
    shell's timer). ``on_drop(frame, cause)``, when set, is told of every frame
    the link drops (a capture records them with the cause).
    """

    def __init__(self, spec: Impairment, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.on_drop: Callable[[bytes, str], None] | None = None
        self._held: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._busy_until = 0.0  # the rate: when the link finishes sending what it has
        self._last_due = 0.0
        self._reorder_count = 0
        self._z = 0.0  # the jitter's AR(1) state
        self._loss = _Chance(spec.loss, spec.loss_correlation)
        self._dup = _Chance(spec.duplicate, spec.duplicate_correlation)
        self._corrupt = _Chance(spec.corrupt, spec.corrupt_correlation)
        self._reorder = _Chance(spec.reorder, spec.reorder_correlation)
        self._bad = False  # the gemodel's state
        self._immediate = not spec.holds

    @property
    def held(self) -> int:
        """Frames waiting in the link now."""
        return len(self._held)

    @property
    def next_due(self) -> float | None:
        return self._held[0][0] if self._held else None

    def retune(self, spec: Impairment) -> None:
        """New settings for a link already carrying frames: those held keep
        their times, the random state carries on."""
        self.spec = spec
        self._loss = _Chance(spec.loss, spec.loss_correlation)
        self._dup = _Chance(spec.duplicate, spec.duplicate_correlation)
        self._corrupt = _Chance(spec.corrupt, spec.corrupt_correlation)
        self._reorder = _Chance(spec.reorder, spec.reorder_correlation)
        self._immediate = not spec.holds

    def drain(self) -> list[bytes]:
        """Every held frame at once, in order (the link stops emulating)."""
        out = [f for _, _, f in sorted(self._held)]
        self._held.clear()
        return out

    def offer(self, frame: bytes, now: float) -> list[bytes]:
        """Frame enters the link at ``now``: the frames that leave at once."""
        spec = self.spec
        rand = self.rng.random
        c = self.counters
        dup = self._dup(rand())
        lost = self._lose(rand)
        copies = 1 + dup - lost
        u_corrupt, u_byte, u_bit = rand(), rand(), rand()
        if dup:
            c["duplicated"] += 1
        if copies <= 0:
            c["loss"] += 1
            self._dropped(frame, "loss")
            return []
        if lost:
            c["loss"] += 1
        out: list[bytes] = []
        for n in range(copies):
            f = frame
            if self._corrupt(u_corrupt if n == 0 else rand()) and f:
                i = int((u_byte if n == 0 else rand()) * len(f))
                bit = int((u_bit if n == 0 else rand()) * 8)
                b = bytearray(f)
                b[i] ^= 1 << bit
                f = bytes(b)
                c["corrupted"] += 1
            u_reorder, u_delay = rand(), self._jitter(rand)
            if self._immediate:
                out.append(f)
                continue
            if len(self._held) >= spec.limit:
                c["overflow"] += 1
                self._dropped(f, "overflow")
                continue
            due = self._due(f, now, u_reorder, u_delay)
            if due is None:
                c["reordered"] += 1
                out.append(f)
                continue
            c["delayed"] += 1
            self._seq += 1
            heapq.heappush(self._held, (due, self._seq, f))
        c["passed"] += len(out)
        return out

    def release(self, now: float) -> list[bytes]:
        """The held frames due by ``now``, in the order they are due."""
        held = self._held
        out: list[bytes] = []
        while held and held[0][0] <= now:
            out.append(heapq.heappop(held)[2])
        self.counters["passed"] += len(out)
        return out

    def _dropped(self, frame: bytes, cause: str) -> None:
        if self.on_drop is not None:
            self.on_drop(frame, cause)

    # -- decisions ----------------------------------------------------------------
    def _lose(self, rand: Callable[[], float]) -> bool:
        ge = self.spec.gemodel
        u1, u2 = rand(), rand()
        if ge is None:
            return self._loss(u1) if self.spec.loss else False
        # netem's loss_gilb_ell: move between the states, then lose with the
        # chance of the state the frame arrived in.
        if not self._bad:
            if u1 < ge.p:
                self._bad = True
            return u2 < ge.good_loss
        if u1 < ge.r:
            self._bad = False
        return u2 < ge.bad_loss

    def _jitter(self, rand: Callable[[], float]) -> float:
        """This frame's delay in seconds, drawn whether it is used or not."""
        spec = self.spec
        u = rand()
        g = _INV(min(max(u, _TINY), 1 - _TINY))
        u2 = rand()
        if not spec.jitter:
            return spec.delay
        rho = spec.delay_correlation
        z = self._z = rho * self._z + math.sqrt(1 - rho * rho) * g if rho else g
        dist = spec.distribution
        if dist == "normal":
            x = z
        elif dist == "uniform":
            x = 2 * _PHI(z) - 1 if rho else 2 * u - 1  # +/- jitter, as netem
        else:
            p = ((max(1 - _PHI(z), _TINY)) ** (-1 / _PARETO_ALPHA) - _PARETO_MEAN) / _PARETO_SD
            if dist == "pareto":
                x = p
            else:  # paretonormal
                n = _INV(min(max(u2, _TINY), 1 - _TINY))
                x = (0.25 * n + 0.75 * p) / _PN
        return max(0.0, spec.delay + x * spec.jitter)

    def _due(self, frame: bytes, now: float, u_reorder: float, delay: float) -> float | None:
        """When ``frame`` leaves, or None to send it at once (reordered)."""
        spec = self.spec
        if spec.reorder:
            # netem: with gap N, only every Nth frame may be picked; picked
            # ones leave at once, ahead of the delayed others.
            gap = spec.gap or 1
            if self._reorder_count >= gap - 1 and self._reorder(u_reorder):
                self._reorder_count = 0
                return None
            self._reorder_count += 1
        if spec.rate:
            start = max(now, self._busy_until)
            done = start + (len(frame) + spec.overhead) * 8 / spec.rate
            self._busy_until = done
            due = max(done + delay, self._last_due)  # a serial link keeps its order
            self._last_due = due
            return due
        return now + delay
