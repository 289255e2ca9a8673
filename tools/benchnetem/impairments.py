# tools/benchnetem/impairments.py - sections 1 to 4 of tools/bench-netem:
# delay and jitter against the unimpaired path, random and Gilbert-Elliott
# loss, duplicate/corrupt/reorder proportions (corrupt frames compared bit by
# bit with what was sent), and the same seed dropping the same frames.
"""Sections delay, loss, fates and seed of tools/bench-netem."""

from __future__ import annotations

import math
import statistics
import struct
from typing import Any

from benchnetem.common import (
    MIN_FRAME,
    RX_MAC,
    SEQ_AT,
    TAIL,
    TX_MAC,
    Z99,
    Section,
    frame_seq,
    lat_stats,
    make_frame,
)
from benchnetem.harness import Bench, Flow, binomial_check, flow, lost_seqs, other_drops, udp

# -- 1. delay and jitter ---------------------------------------------------------------------


def sec_delay(b: Bench, sec: Section) -> None:
    d = b.daemon("delay", "nd", [udp("a"), udp("b")])
    a, r = d.addr("a"), d.addr("b")
    rate = 2000
    base = flow(b.tmp, a, r, count=b.n(3000, 1000), rate=rate)
    d.cli("link", "nd:b", "--out", "--delay", "20ms", "--jitter", "2ms",
          "--distribution", "normal")
    jit = flow(b.tmp, a, r, count=b.n(5000, 2000), rate=rate, drain=0.5)
    d.cli("link", "nd:b", "--out", "--jitter", "0")
    fix = flow(b.tmp, a, r, count=b.n(5000, 2000), rate=rate, drain=0.5)
    overflow = d.counters("b", "out").get("overflow", 0)
    res: dict[str, Any] = {}
    for label, f in (("baseline", base), ("jitter", jit), ("fixed", fix)):
        user, kern = f.latencies()
        res[label] = {"sent": f.sent, "received": len(f.firsts()),
                      "user": lat_stats(user), "kernel": lat_stats(kern)}
    sec.details.update(res)
    for clock in ("user", "kernel"):
        bs, js, fs = res["baseline"][clock], res["jitter"][clock], res["fixed"][clock]
        if not bs.get("n") or not js.get("n") or not fs.get("n"):
            continue
        tag = "" if clock == "user" else " (kernel stamp)"
        judge = clock == "user"  # monotonic at send .. after recv, as an application sees it
        sec.info(f"unimpaired path{tag}", f"p50 {bs['p50']:.3f} ms, p99 {bs['p99']:.3f} ms, "
                 f"sd {bs['sd']:.3f} ms ({bs['n']} frames)")
        mean_c = js["mean"] - bs["p50"]
        tol = 0.02 * 20 + 0.2
        sec.check(f"mean delay, 20ms jitter 2ms normal{tag}",
                  f"{mean_c:.3f} ms corrected (raw {js['mean']:.3f} - {bs['p50']:.3f})",
                  f"20 ± {tol:.1f} ms", abs(mean_c - 20) <= tol if judge else None,
                  {"corrected": mean_c, "raw": js["mean"]})
        sd_c = math.sqrt(max(0.0, js["sd"] ** 2 - bs["sd"] ** 2))
        sec.check(f"sd of delay{tag}", f"{sd_c:.3f} ms corrected (raw {js['sd']:.3f})",
                  "2 ± 0.3 ms (15 %)", abs(sd_c - 2) <= 0.3 if judge else None,
                  {"corrected": sd_c, "raw": js["sd"]})
        spread = fs["p99"] - fs["p50"]
        sec.check(f"jitter 0: p99 - p50{tag}",
                  f"{spread:.3f} ms (p50 {fs['p50']:.3f}, corrected {fs['p50'] - bs['p50']:.3f};"
                  f" p99 {fs['p99']:.3f}; unimpaired p99-p50 {bs['p99'] - bs['p50']:.3f})",
                  "< 1 ms", spread < 1.0 if judge else None,
                  {"spread": spread, "p50": fs["p50"], "p99": fs["p99"],
                   "p50_corrected": fs["p50"] - bs["p50"]})
    lost = sum(r["sent"] - r["received"] for r in res.values())
    sec.check("frames lost in the three runs", f"{lost} (overflow {overflow})", "0", lost == 0)


# -- 2. loss -----------------------------------------------------------------------------------


def bursts_of(lost: list[int]) -> list[int]:
    """Lengths of the runs of consecutive lost sequence numbers."""
    out: list[int] = []
    prev = None
    for s in lost:
        if prev is not None and s == prev + 1:
            out[-1] += 1
        else:
            out.append(1)
        prev = s
    return out


def sec_loss(b: Bench, sec: Section) -> None:
    d = b.daemon("loss", "nl", [udp("a", **{"in": {"loss": "10%"}}), udp("b")])
    a, r = d.addr("a"), d.addr("b")
    rate = b.n(5000, 2000)  # quick: gentler, for a loaded test machine's socket buffers
    f = flow(b.tmp, a, r, count=b.n(20_000, 5000), rate=rate, burst=5)
    lost = lost_seqs(f)
    binomial_check(sec, "random loss 10%", len(lost), f.sent, 0.10)
    other_drops(sec, f, d.counters("a", "in").get("loss", 0), "loss 10%")
    sec.details["random"] = {"sent": f.sent, "lost": len(lost)}

    p, r_ = 0.02, 0.25
    d.cli("link", "nl:a", "clear", "--in")
    d.cli("link", "nl:a", "--in", "--gemodel", "2%,25%")
    g = flow(b.tmp, a, r, count=b.n(40_000, 10_000), rate=rate, burst=5)
    glost = lost_seqs(g)
    bursts = bursts_of(glost)
    mean = statistics.fmean(bursts) if bursts else 0.0
    sd = statistics.pstdev(bursts) if len(bursts) > 1 else 0.0
    half = Z99 * sd / math.sqrt(len(bursts)) if bursts else 0.0
    sec.check("gemodel p 2% r 25%: mean burst of lost frames",
              f"{mean:.3f} frames over {len(bursts)} bursts (99 % CI ±{half:.2f})",
              f"1/r = {1 / r_:.1f} ± 10 %", bool(bursts) and abs(mean - 1 / r_) <= 0.1 / r_,
              {"mean": mean, "bursts": len(bursts), "ci99_half": half})
    stationary = p / (p + r_)
    sec.info("gemodel: long-run loss", f"{len(glost) / g.sent:.3%} of {g.sent} "
             f"(the model's p/(p+r) = {stationary:.2%})")
    other_drops(sec, g, d.counters("a", "in").get("loss", 0), "gemodel")
    sec.details["gemodel"] = {"sent": g.sent, "lost": len(glost), "bursts": len(bursts),
                              "mean_burst": mean, "longest": max(bursts, default=0)}


# -- 3. duplicate, corrupt, reorder ----------------------------------------------------------------


def expected_frame(f: Flow, seq: int) -> bytes:
    assert f.stamps is not None
    return make_frame(RX_MAC, TX_MAC, seq, f.stamps[2 * seq], f.stamps[2 * seq + 1], f.size)


def bit_distance(a: bytes, b: bytes) -> int:
    if len(a) != len(b):
        return 8 * max(len(a), len(b))
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def sec_fates(b: Bench, sec: Section) -> None:
    d = b.daemon("fates", "nf", [udp("a"), udp("b", out={"duplicate": "5%"})])
    a, r = d.addr("a"), d.addr("b")
    n = b.n(20_000, 5000)
    # duplicate
    f = flow(b.tmp, a, r, count=n, rate=5000, burst=5)
    firsts = f.firsts()
    extra = len(f.frames) - len(firsts)
    same = all(data == firsts[frame_seq(data)][2] for _, _, data in f.frames
               if frame_seq(data) is not None)
    binomial_check(sec, "duplicate 5%: extra copies", extra, f.sent, 0.05)
    sec.check("duplicate: copies identical to the original", "yes" if same else "no", "yes", same)
    other_drops(sec, f, 0, "duplicate")
    # corrupt: 128-byte frames, the receiver keeps every byte, the sender logs its stamps
    d.cli("link", "nf:b", "clear", "--out")
    d.cli("link", "nf:b", "--out", "--corrupt", "5%")
    f = flow(b.tmp, a, r, count=n, rate=5000, burst=5, size=128, log_stamps=True)
    dist: dict[int, int] = {}
    seen: set[int] = set()
    offsets: list[int] = []
    for _, _, data in f.frames:
        cands = {struct.unpack_from("!Q", data, SEQ_AT)[0] if len(data) >= MIN_FRAME else -1,
                 TAIL.unpack_from(data, len(data) - 8)[0] if len(data) >= 8 else -1}
        cands = {c for c in cands if 0 <= c < f.sent}
        if not cands:
            dist[-1] = dist.get(-1, 0) + 1  # neither copy of the number survived
            continue
        best = min(cands, key=lambda c: bit_distance(data, expected_frame(f, c)))
        exp = expected_frame(f, best)
        k = bit_distance(data, exp)
        dist[k] = dist.get(k, 0) + 1
        seen.add(best)
        if k == 1:
            offsets.append(next(i for i in range(len(data)) if data[i] != exp[i]))
    corrupted = dist.get(1, 0)
    worse = sum(v for k, v in dist.items() if k != 0 and k != 1)
    binomial_check(sec, "corrupt 5%: frames changed", corrupted + worse, len(f.frames), 0.05)
    sec.check("corrupt: every changed frame differs in exactly one bit",
              f"{corrupted} one-bit, {worse} otherwise", "all one-bit", worse == 0,
              {"by_bits": {str(k): v for k, v in sorted(dist.items())}})
    if offsets:
        sec.info("corrupt: flipped bytes spread over", f"offsets {min(offsets)}..{max(offsets)} "
                 f"of {f.size}, {len(set(offsets))} distinct")
    c = d.counters("b", "out")
    sec.info("corrupt: the link's counter", f"{c.get('corrupted')} corrupted")
    missing = f.sent - len(seen)  # frames told apart by their nearest sent frame
    sec.check("corrupt: frames lost", f"{missing} of {f.sent}", "0", missing == 0)
    # reorder: a delay of 10 ms, 5 % of frames go at once
    d.cli("link", "nf:b", "clear", "--out")
    d.cli("link", "nf:b", "--out", "--delay", "10ms", "--reorder", "5%")
    f = flow(b.tmp, a, r, count=n, rate=5000, burst=5, drain=0.5)
    firsts = f.firsts()
    user, _ = f.latencies()
    at_once = sum(1 for x in user if x < 5.0)  # half the delay
    order = [frame_seq(data) for _, _, data in sorted(firsts.values())]
    ahead, low = 0, math.inf
    for s in reversed(order):  # a frame is ahead when one sent before it arrives later
        if s is not None and low < s:
            ahead += 1
        low = min(low, s) if s is not None else low
    # A frame sent at once arrives ahead of the ~50 held frames sent before it,
    # and a delayed one never overtakes: "ahead" counts the frames reordered.
    binomial_check(sec, "reorder 5% (delay 10ms): frames that arrived ahead of one sent "
                   "before them", ahead, len(firsts), 0.05)
    sec.info("reorder: frames that arrived within half the delay",
             f"{at_once} (a stalled receiver or switch makes this fewer)")
    sec.info("reorder: the link's counter", f"{d.counters('b', 'out').get('reordered')} reordered")
    other_drops(sec, f, 0, "reorder")
    sec.details.update({"extra_copies": extra, "corrupt_by_bits": dist, "at_once": at_once,
                        "ahead": ahead, "frames": n})


# -- 4. seeds --------------------------------------------------------------------------------------


def sec_seed(b: Bench, sec: Section) -> None:
    n = b.n(10_000, 3000)
    runs: list[tuple[int, set[int]]] = []
    for i, seed in enumerate((42, 42, 43)):
        d = b.daemon(f"seed{i}", "ns", [udp("a", **{"in": {"loss": "10%"}}), udp("b")],
                     seed=seed)
        f = flow(b.tmp, d.addr("a"), d.addr("b"), count=n, rate=4000, burst=4)
        dropped = set(lost_seqs(f))
        other_drops(sec, f, d.counters("a", "in").get("loss", 0), f"seed {seed} run {i + 1}")
        runs.append((seed, dropped))
        d.stop()
    (s1, d1), (_, d2), (s3, d3) = runs
    sec.check(f"seed {s1} twice: the same frames dropped",
              f"{len(d1)} and {len(d2)} dropped, {len(d1 ^ d2)} differ", "identical", d1 == d2)
    sec.check(f"seed {s3}: other frames dropped",
              f"{len(d3)} dropped, {len(d1 ^ d3)} differ from seed {s1}", "different", d1 != d3)
    sec.details.update({"frames": n, "dropped": [len(d1), len(d2), len(d3)],
                        "first_dropped_seed42": sorted(d1)[:20]})

