# tools/benchiscsi/figures.py - the figures of tools/bench-iscsi: a run's
# per-operation accounting (wall, target CPU by process role, initiator CPU,
# the rest of the machine), the line logged after each run, the medians of
# rounds, the netstore/tgt ratios and the table printed at the end.
"""Per-operation figures of a run, their medians, and the report of tools/bench-iscsi."""

from __future__ import annotations

import statistics
import sys
from typing import Any

from benchiscsi.model import FIGURES, Sample, Test, log
from benchiscsi.targets import Meter


def _account(smp: Sample, test: Test, window: dict[str, Any] | None, own_cpu: float,
             wall: float, meter: Meter | None) -> Sample:
    """Fill in the per-operation figures of a sample whose iops/ops/seconds are known."""
    assert smp.ops and smp.seconds
    smp.wall_s = wall
    smp.wall_us_per_op = smp.seconds * 1e6 / smp.ops
    smp.latency_us = test.depth * smp.wall_us_per_op
    smp.initiator_cpu_s = own_cpu
    smp.initiator_cpu_us_per_op = own_cpu * 1e6 / smp.ops
    if window is None or meter is None:
        return smp
    smp.target_cpu_s = window["cpu_s"]
    # The rest of the machine over the window: other users, and kernel threads
    # (writeback, some of the network's softirq work) that our runs cause too.
    machine = window["machine"]
    smp.rest_cpu_pct = 100.0 * max(0.0, machine["busy_s"] - window["cpu_s"] - own_cpu
                                   ) / window["seconds"]
    smp.others_cpu_pct = 100.0 * machine["others_s"] / window["seconds"]
    smp.others_top = [f"{lbl} ({100 * cpu / window['seconds']:.0f} %)"
                      for _pid, lbl, cpu in machine["others"][:3]
                      if cpu >= 0.01 * window["seconds"]]
    smp.target_cpu_pct = 100.0 * window["cpu_s"] / window["seconds"]
    smp.cpu_us_per_op = window["cpu_s"] * 1e6 / smp.ops
    roles: dict[str, float] = {}
    for pid, cpu in sorted(window["per_pid"].items()):
        role = meter.role(pid)
        roles[role] = roles.get(role, 0.0) + cpu
        smp.processes.append({"pid": pid, "role": role, "cpu_s": round(cpu, 3)})
    smp.gone = list(window["gone"])
    if meter.target == "netstore":
        smp.roles_us_per_op = {r: c * 1e6 / smp.ops for r, c in sorted(roles.items())}
        smp.worker_cpu_us_per_op = smp.roles_us_per_op.get("worker", 0.0)
    return smp


def report(smp: Sample) -> None:
    if smp.error:
        log(f"    error: {smp.error}")
        return
    worker = ("" if smp.worker_cpu_us_per_op is None
              else f" (workers {smp.worker_cpu_us_per_op:.1f})")
    log(f"    {smp.iops:,.0f} IOPS  {smp.mbps:,.1f} MB/s  {smp.wall_us_per_op:.1f} wall µs/op  "
        f"{_fmt(smp.cpu_us_per_op, '.1f')} CPU µs/op{worker}  "
        f"initiator {_fmt(smp.initiator_cpu_us_per_op, '.1f')} µs/op  "
        f"rest {_fmt(smp.rest_cpu_pct, '.0f')} % (others {_fmt(smp.others_cpu_pct, '.0f')} %)")


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def median(samples: list[Sample]) -> Sample:
    """Each figure the median of the samples that ran (IOPS and CPU per op apart)."""
    good = [s for s in samples if s.iops is not None]
    if not good:
        errs = [s.error for s in samples if s.error]
        return Sample(error=errs[-1] if errs else "not run")
    med = Sample(**{f: _median([getattr(s, f) for s in good]) for f in FIGURES})
    med.error = None if len(good) == len(samples) else f"{len(samples) - len(good)} run(s) failed"
    roles = sorted({r for s in good for r in s.roles_us_per_op})
    med.roles_us_per_op = {r: _median([s.roles_us_per_op.get(r, 0.0) for s in good]) or 0.0
                           for r in roles}
    med.gone = sorted({p for s in good for p in s.gone})
    return med


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# -- the report -------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]], which: list[str], info: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 220)
    con.print(f"iSCSI: netstore vs tgt, {info['seconds']} s per read run, median of "
              f"{info['repeat']}; netstore workers {_fmt(info['workers_found'], 'd')}; load average "
              f"{info['loadavg_before'][0]:.2f} before, {info['loadavg_after'][0]:.2f} after")
    t = Table(box=box.MARKDOWN)
    cols = [("test", "left"), ("target", "left"), ("IOPS", "right"), ("MB/s", "right"),
            ("wall µs/op", "right"), ("QD x wall µs", "right"), ("CPU µs/op", "right"),
            ("workers µs/op", "right"), ("target CPU %", "right"), ("initiator µs/op", "right"),
            ("rest CPU %", "right"), ("others CPU %", "right"),
            ("IOPS n/t", "right"), ("CPU/op n/t", "right"), ("floor", "left"), ("note", "left")]
    for name, justify in cols:
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        for name in which:
            r = row[name]
            last = name == which[-1]
            iops_ratio = _fmt(row["iops_ratio"], ".2f") if last else ""
            cpu_ratio = _fmt(row["cpu_ratio"], ".2f") if last else ""
            floor = ""
            if last and row["floor"] is not None:
                floor = {None: f">= {row['floor']}", True: f"PASS >= {row['floor']}",
                         False: f"FAIL >= {row['floor']}"}[row["pass"]]
            note = r["error"] or ""
            if r.get("gone"):
                note = (note + f" processes ended in a run: {r['gone']}").strip()
            limit = info["quiet"] or 10.0  # % of a core that other processes may take
            if busy := sum(1 for x in r["samples"] if (x["others_cpu_pct"] or 0) > limit):
                note = (note + f" {busy} run(s) with others > {limit:g} %").strip()
            t.add_row(row["test"], name, _fmt(r["iops"], ".0f"), _fmt(r["mbps"], ".1f"),
                      _fmt(r["wall_us_per_op"], ".1f"), _fmt(r["latency_us"], ".0f"),
                      _fmt(r["cpu_us_per_op"], ".1f"),
                      _fmt(r["worker_cpu_us_per_op"], ".1f") if name == "netstore" else "",
                      _fmt(r["target_cpu_pct"], ".0f"), _fmt(r["initiator_cpu_us_per_op"], ".1f"),
                      _fmt(r["rest_cpu_pct"], ".0f"), _fmt(r["others_cpu_pct"], ".0f"),
                      iops_ratio, cpu_ratio, floor, note[:60])
    con.print(t)
    if "netstore" in which:
        roles = sorted({k for row in rows for k in row["netstore"].get("roles_us_per_op", {})})
        if roles:
            con.print("\nnetstore CPU µs/op by process (serve: the supervisor, which accepts; "
                      "worker: the iSCSI workers; switch: the switch process)")
            p = Table(box=box.MARKDOWN)
            p.add_column("test", no_wrap=True)
            for r in roles:
                p.add_column(r, justify="right", no_wrap=True)
            for row in rows:
                got = row["netstore"].get("roles_us_per_op", {})
                p.add_row(row["test"], *[_fmt(got.get(r), ".2f") for r in roles])
            con.print(p)
    con.print("\nwall µs/op = seconds * 1e6 / ops (= 1e6/IOPS; at QD1 the latency); "
              "QD x wall = mean latency by Little's law; CPU µs/op = the target's processes' "
              "utime+stime over the run / ops; rest CPU % = the machine's other busy CPU over the run "
              "(other users, and the kernel: writeback, softirq), % of one core; others CPU % = "
              "the part of it in other user-space processes; n/t = netstore/tgt.")

