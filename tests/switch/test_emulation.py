# tests/switch/test_emulation.py - the link emulator against the figures it is
# configured with: proportions within their 99% binomial interval, delay
# moments, Gilbert-Elliott bursts, rate spacing, the queue limit, one flipped
# bit, and the same decisions for the same seed. Seeded, so each run is the
# same run; the bounds are the statistical ones a fair coin would pass.
"""LinkEmulator (netem's model, pure) against its configured values."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.impairments import parse_impairment
from netstore.switch.emulation import LinkEmulator, link_rng


def emulator(seed: int = 1, **table: object) -> LinkEmulator:
    return LinkEmulator(parse_impairment(table), random.Random(seed))


def frames(n: int, size: int = 100) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


def run(em: LinkEmulator, items: list[bytes], gap_s: float = 0.0) -> list[tuple[float, bytes]]:
    """Offer each frame at t = i * gap_s; (time left, frame) of all that leave."""
    out: list[tuple[float, bytes]] = []
    for i, f in enumerate(items):
        now = i * gap_s
        while em.next_due is not None and em.next_due <= now:
            t = em.next_due
            out.extend((t, g) for g in em.release(t))
        out.extend((now, g) for g in em.offer(f, now))
    # then let every held frame out exactly when due
    while em.next_due is not None:
        t = em.next_due
        out.extend((t, g) for g in em.release(t))
    return out


def within_binomial(hits: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(hits - n * p) <= 2.576 * sd + 1


def test_random_loss_is_within_the_99_percent_interval() -> None:
    em = emulator(loss="10%")
    out = run(em, frames(20_000))
    lost = 20_000 - len(out)
    assert within_binomial(lost, 20_000, 0.10), lost
    assert em.counters["loss"] == lost and em.counters["passed"] == len(out)


def test_correlated_loss_keeps_its_rate_and_comes_in_runs() -> None:
    em = emulator(loss="10%", loss_correlation="50%")
    sent = frames(50_000)
    kept = {f for _, f in run(em, sent)}
    lost = [f not in kept for f in sent]
    rate = sum(lost) / len(lost)
    assert 0.085 < rate < 0.115, rate
    after_loss = [b for a, b in zip(lost, lost[1:], strict=False) if a]
    # P(loss | loss) = p + rho (1 - p) = 0.55 instead of 0.10
    assert 0.5 < sum(after_loss) / len(after_loss) < 0.6


def test_gilbert_elliott_bursts_last_one_over_r() -> None:
    em = emulator(gemodel={"p": "2%", "r": "25%"})
    sent = frames(40_000)
    kept = {f for _, f in run(em, sent)}
    bursts, run_len = [], 0
    for f in sent:
        if f not in kept:
            run_len += 1
        elif run_len:
            bursts.append(run_len)
            run_len = 0
    mean = statistics.mean(bursts)
    assert abs(mean - 4.0) <= 0.4, mean  # 1/r within 10%


@pytest.mark.parametrize("dist", ["normal", "uniform", "pareto", "paretonormal"])
def test_delay_and_jitter_have_the_configured_moments(dist: str) -> None:
    em = emulator(delay="20ms", jitter="2ms", distribution=dist)
    sent = frames(5_000)
    start = {f: i * 0.001 for i, f in enumerate(sent)}
    delays = [t - start[f] for t, f in run(em, sent, gap_s=0.001)]
    assert len(delays) == 5_000
    mean, sd = statistics.mean(delays), statistics.stdev(delays)
    assert abs(mean - 0.020) <= 0.020 * 0.02, (dist, mean)
    want_sd = 0.002 / math.sqrt(3) if dist == "uniform" else 0.002  # uniform is +/- jitter
    assert abs(sd - want_sd) <= 0.15 * want_sd, (dist, sd)
    if dist == "uniform":
        assert 0.018 - 1e-9 <= min(delays) and max(delays) <= 0.022 + 1e-9


def test_no_jitter_means_one_delay_for_all() -> None:
    em = emulator(delay="20ms")
    sent = frames(1000)
    start = {f: i * 0.0005 for i, f in enumerate(sent)}
    delays = [t - start[f] for t, f in run(em, sent, gap_s=0.0005)]
    assert max(delays) - min(delays) < 1e-9 and abs(delays[0] - 0.020) < 1e-9


def test_correlated_jitter_moves_slowly_but_keeps_its_spread() -> None:
    em = emulator(delay="20ms", jitter="2ms", distribution="normal", delay_correlation="90%")
    sent = frames(20_000)
    start = {f: i * 0.01 for i, f in enumerate(sent)}
    by_frame = {f: t - start[f] for t, f in run(em, sent, gap_s=0.01)}
    d = [by_frame[f] for f in sent]
    assert abs(statistics.stdev(d) - 0.002) < 0.0004
    steps = statistics.mean(abs(a - b) for a, b in zip(d, d[1:], strict=False))
    assert steps < 0.001  # uncorrelated normal steps average 2/sqrt(pi) sd = 2.26 ms


@pytest.mark.parametrize("what,key", [("duplicated", "duplicate"), ("corrupted", "corrupt")])
def test_duplicate_and_corrupt_proportions(what: str, key: str) -> None:
    em = emulator(**{key: "5%"})
    sent = frames(20_000)
    out = run(em, sent)
    assert within_binomial(em.counters[what], 20_000, 0.05), em.counters
    if key == "duplicate":
        assert len(out) == 20_000 + em.counters["duplicated"]
    else:
        assert sum(1 for (_, f), g in zip(out, sent, strict=True) if f != g) == \
            em.counters["corrupted"]


def test_a_corrupt_frame_differs_in_exactly_one_bit() -> None:
    em = emulator(corrupt="100%")
    for _, f in [(0, f) for f in frames(500, size=64)]:
        (g,) = em.offer(f, 0.0)
        diff = int.from_bytes(f, "big") ^ int.from_bytes(g, "big")
        assert len(g) == len(f) and diff and diff & (diff - 1) == 0


def test_reorder_sends_the_picked_frames_at_once() -> None:
    em = emulator(delay="10ms", reorder="25%")
    sent = frames(20_000)
    out = run(em, sent, gap_s=0.001)
    assert within_binomial(em.counters["reordered"], 20_000, 0.25), em.counters
    start = {f: i * 0.001 for i, f in enumerate(sent)}
    at_once = sum(1 for t, f in out if t == start[f])
    assert at_once == em.counters["reordered"]


def test_reorder_gap_picks_only_every_nth_frame() -> None:
    em = emulator(delay="10ms", reorder="100%", gap=5)
    sent = frames(100)
    out = run(em, sent, gap_s=0.001)
    start = {f: i for i, f in enumerate(sent)}
    at_once = sorted(start[f] for t, f in out if t == start[f] * 0.001)
    assert at_once == list(range(4, 100, 5))


def test_rate_spaces_frames_by_their_bits() -> None:
    em = emulator(rate="1mbit", overhead=24)
    sent = frames(200, size=1000)
    out = run(em, sent)  # all offered at once
    times = [t for t, _ in out]
    steps = {round(b - a, 9) for a, b in zip(times, times[1:], strict=False)}
    assert steps == {round((1000 + 24) * 8 / 1e6, 9)}
    assert [f for _, f in out] == sent[: len(out)]


def test_the_limit_bounds_what_the_link_holds() -> None:
    em = emulator(rate="1mbit", limit=50)
    held_max = 0
    for f in frames(500):
        em.offer(f, 0.0)
        held_max = max(held_max, em.held)
    assert held_max == 50 and em.counters["overflow"] == 450


def test_same_seed_same_drops_other_seed_other_drops() -> None:
    def dropped(seed: int) -> set[bytes]:
        em = LinkEmulator(parse_impairment({"loss": "10%", "corrupt": "1%"}),
                          link_rng(seed, "sw0", "a", "out"))
        sent = frames(5000)
        return set(sent) - {f for _, f in run(em, sent)}

    assert dropped(7) == dropped(7)
    assert dropped(7) != dropped(8)


def test_overflow_timing_does_not_shift_later_decisions() -> None:
    """Each frame draws the same randomness whatever happens to it, so a frame
    dropped by the limit in one run does not change the fate of later ones."""
    spec = parse_impairment({"loss": "20%", "rate": "1mbit", "limit": 10})
    a = LinkEmulator(spec, random.Random(3))
    b = LinkEmulator(spec, random.Random(3))
    sent = frames(300)
    lost_a, lost_b = [], []
    for i, f in enumerate(sent):
        before = a.counters["loss"]
        a.offer(f, i * 1.0)  # slow: never overflows
        lost_a.append(a.counters["loss"] > before)
        before = b.counters["loss"]
        b.offer(f, 0.0)  # all at once: overflows
        lost_b.append(b.counters["loss"] > before)
    assert b.counters["overflow"] > 0 and lost_a == lost_b


@settings(max_examples=60, deadline=None)
@given(table=st.fixed_dictionaries({}, optional={
    "delay": st.sampled_from(["0", "1ms", "20ms"]),
    "loss": st.sampled_from(["0%", "30%", "100%"]),
    "duplicate": st.sampled_from(["0%", "50%"]),
    "corrupt": st.sampled_from(["0%", "50%"]),
    "rate": st.sampled_from(["1mbit", "100mbit"]),
    "limit": st.integers(1, 20),
}), sizes=st.lists(st.integers(0, 1600), max_size=80), seed=st.integers(0, 2**32))
def test_every_frame_is_accounted_for(table: dict, sizes: list[int], seed: int) -> None:
    if table.get("delay") == "0":
        table["delay"] = 0
    em = LinkEmulator(parse_impairment(table), random.Random(seed))
    out = run(em, [bytes(n) for n in sizes], gap_s=0.0001)
    c = em.counters
    copies = len(sizes) + c["duplicated"]
    assert len(out) == c["passed"]
    # a duplicate that is lost leaves one copy: each loss removes one copy
    assert c["passed"] + c["loss"] + c["overflow"] == copies
    assert em.held == 0
