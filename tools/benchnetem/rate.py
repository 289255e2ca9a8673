# tools/benchnetem/rate.py - sections 5 and 8 of tools/bench-netem, the rate
# limit under load: isolation (a pair saturating delay 50 ms + rate 1 Mbit/s
# beside benchkit's latency probe) and rate on TAP ports in two network
# namespaces (iperf3 through 20, 100, 500 Mbit/s and the path's ceilings).
"""Sections isolation and rate of tools/bench-netem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import benchkit as bk

from benchnetem.common import LOAD_RX_MAC, LOAD_TX_MAC, TAP_ADDR, TAP_NET, Section, log
from benchnetem.harness import Bench, FlowRun, Poller, udp

# -- 5. isolation ----------------------------------------------------------------------------------


def sec_isolation(b: Bench, sec: Section) -> None:
    limit = 1000
    d = b.daemon("iso", "ni", [udp("a"), udp("b"), udp("lt"),
                               udp("lr", out={"delay": "50ms", "rate": "1mbit"})])
    idle_s, load_s = (4.0, 6.0) if not b.quick else (2.0, 3.0)
    probe = bk.Probe(d.addr("a"), d.addr("b"), rate=1000, max_seconds=60)
    probe.start()
    time.sleep(idle_s)
    idle = probe.stop()
    size, rate = 1000, 2000  # 16 Mbit/s offered into a 1 Mbit/s link
    load = FlowRun(b.tmp, d.addr("lt"), d.addr("lr"), count=int(rate * load_s), rate=rate,
                   burst=4, size=size, tx_mac=LOAD_TX_MAC, rx_mac=LOAD_RX_MAC, keep=64,
                   max_seconds=load_s + 2, drain=0.2, stop_within=0.5)
    probe = bk.Probe(d.addr("a"), d.addr("b"), rate=1000, max_seconds=60)
    probe.start()
    with Poller(d, "lr", "out") as poll:
        load.start()
        f = load.finish()
    busy = probe.stop()
    counters = d.counters("lr", "out")
    for label, p in (("idle", idle), ("under load", busy)):
        sec.info(f"probe {label}", f"p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms, "
                 f"max {p['max_ms']:.3f} ms; {p['received']}/{p['sent']} frames, "
                 f"kernel p99 {p['kernel_p99_ms']:.3f} ms")
    diff = busy["p99_ms"] - idle["p99_ms"]
    sec.check("probe p99 under load - idle p99", f"{diff:+.3f} ms", "<= 1 ms", diff <= 1.0,
              {"idle_p99": idle["p99_ms"], "load_p99": busy["p99_ms"]})
    sec.check("probe frames lost under load", str(busy["lost"]), "0", busy["lost"] == 0)
    arrivals = sorted(t for t, _, _ in f.frames)
    offered = f.send["sent"] * size * 8 / max(1e-9, (f.send["last_ns"] - f.send["first_ns"]) / 1e9)
    sec.info("load offered", f"{f.send['sent']} frames of {size} B, {offered / 1e6:.1f} Mbit/s")
    if len(arrivals) > 10:
        got = (len(arrivals) - 1) * size * 8 / ((arrivals[-1] - arrivals[0]) / 1e9)
        sec.check("load delivered through rate 1mbit", f"{got / 1e6:.4f} Mbit/s "
                  f"({len(arrivals)} frames)", "1 Mbit/s ± 5 %", abs(got / 1e6 - 1) <= 0.05,
                  got)
    sec.check("the impaired link's held frames (polled)", f"max {poll.max_held} of "
              f"{len(poll.samples)} polls; overflow drops {counters.get('overflow')}",
              f"<= limit {limit}", poll.max_held <= limit and bool(poll.samples),
              {"max_held": poll.max_held, "overflow": counters.get("overflow")})
    sec.details.update({"idle": {k: v for k, v in idle.items() if k != "worst"},
                        "load": {k: v for k, v in busy.items() if k != "worst"},
                        "link_counters": counters})



# -- 8. rate on TAP ports in two namespaces --------------------------------------------------------


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def netns_cleanup() -> None:
    for ns in TAP_NET:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    for ns in TAP_NET:
        subprocess.run(["ip", "link", "del", ns], capture_output=True, timeout=30)


def iperf(seconds: int) -> dict[str, Any]:
    r = sh("ip", "netns", "exec", "nsnA", "iperf3", "-c", TAP_ADDR["nsnB"], "-t", str(seconds),
           "-O", "1", "-J", check=False, timeout=seconds + 60)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 printed no JSON: {r.stderr.strip()[-300:]}") from None
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    mss = j["start"].get("tcp_mss_default") or 1448
    return {"goodput": j["end"]["sum_received"]["bits_per_second"],
            "retransmits": j["end"]["sum_sent"].get("retransmits"), "mss": mss}


def sec_rate(b: Bench, sec: Section) -> None:
    why = (None if os.geteuid() == 0 else "needs root") or next(
        (f"{tool} is not installed" for tool in ("ip", "iperf3") if shutil.which(tool) is None),
        None) or (None if os.path.exists("/dev/net/tun") else "no /dev/net/tun")
    if why:
        sec.skipped = why
        log(f"  skipped: {why}")
        return
    seconds = 3 if b.quick else 5
    netns_cleanup()
    try:
        for ns in TAP_NET:
            sh("ip", "tuntap", "add", "dev", ns, "mode", "tap")
        d = b.daemon("rate", "nr", [
            {"name": "a", "kind": "tap", "device": "nsnA"},
            {"name": "b", "kind": "tap", "device": "nsnB", "out": {"rate": "20mbit"}}])
        for _ in range(100):
            for ns in TAP_NET:
                sh("ip", "link", "set", ns, "up", check=False)
            if all(Path(f"/sys/class/net/{ns}/carrier").read_text().strip() == "1"
                   for ns in TAP_NET if Path(f"/sys/class/net/{ns}/carrier").exists()):
                break
            time.sleep(0.1)
        for ns in TAP_NET:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", ns, "netns", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ns, "up")
            sh("ip", "-n", ns, "addr", "add", f"{TAP_ADDR[ns]}/24", "dev", ns)
        ping = sh("ip", "netns", "exec", "nsnA", "ping", "-c", "3", "-i", "0.2", "-W", "2",
                  TAP_ADDR["nsnB"], check=False)
        if ping.returncode != 0:
            raise RuntimeError("nsnA cannot ping nsnB through the switch")
        server = bk.spawn(["ip", "netns", "exec", "nsnB", "iperf3", "-s"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        rows: list[dict[str, Any]] = []

        def measure(label: str, target_mbit: float | None) -> dict[str, Any]:
            pids = d.ns.pids()
            cpu0 = {p: bk.cpu_seconds(p) for p in pids}
            t0 = time.monotonic()
            with Poller(d, "b", "out", every=0.2) as poll:
                before = d.counters("b", "out")
                res = iperf(seconds)
                after = d.counters("b", "out")
            wall = time.monotonic() - t0
            busiest, who = 0.0, "-"
            for p in pids:
                c1, c0 = bk.cpu_seconds(p), cpu0.get(p)
                if c1 is not None and c0 is not None and (c1 - c0) / wall > busiest:
                    busiest, who = (c1 - c0) / wall, bk.label(p, 60)
            mss = res["mss"]
            frame = mss + 14 + 20 + 32  # Ethernet, IPv4, TCP with timestamps
            wire = res["goodput"] * frame / mss
            row = {"label": label, "target_mbit": target_mbit, "goodput_mbit": res["goodput"] / 1e6,
                   "wire_mbit": wire / 1e6, "mss": mss, "retransmits": res["retransmits"],
                   "max_held": poll.max_held, "polls": len(poll.samples),
                   "overflow": after.get("overflow", 0) - before.get("overflow", 0),
                   "busiest_cpu": busiest, "busiest": who}
            rows.append(row)
            log(f"  {label}: goodput {row['goodput_mbit']:.2f} Mbit/s, wire {row['wire_mbit']:.2f},"
                f" held max {row['max_held']}, busiest process {busiest:.0%} CPU ({who})")
            return row

        for mbit in (20, 100, 500):
            if mbit != 20:
                d.cli("link", "nr:b", "--out", "--rate", f"{mbit}mbit")
            row = measure(f"rate {mbit}mbit", mbit)
            err = row["wire_mbit"] / mbit - 1
            frame = f"{row['mss'] + 66}/{row['mss']}"
            sec.check(f"rate {mbit}mbit: wire rate (iperf3 goodput x {frame})",
                      f"{row['wire_mbit']:.2f} Mbit/s ({err:+.1%}); goodput "
                      f"{row['goodput_mbit']:.2f}; busiest process {row['busiest_cpu']:.0%} CPU",
                      f"{mbit} ± 5 %", abs(err) <= 0.05, row)
            sec.check(f"rate {mbit}mbit: held frames (polled {row['polls']}x)",
                      f"max {row['max_held']}, overflow drops {row['overflow']}, "
                      f"TCP retransmits {row['retransmits']}", "<= limit 1000",
                      row["max_held"] <= 1000 and row["polls"] > 0)
        # the ceilings: the emulator on the path with nothing to hold frames back
        # (offloads off, as for any impaired link), and the plain path
        d.cli("link", "nr:b", "--out", "--rate", "10gbit")
        row = measure("ceiling, rate 10gbit", None)
        sec.info("ceiling: impaired path (rate 10gbit, offloads off)",
                 f"wire {row['wire_mbit']:.1f} Mbit/s, goodput {row['goodput_mbit']:.1f}; busiest "
                 f"process {row['busiest_cpu']:.0%} CPU", row)
        d.cli("link", "nr:b", "clear")
        row = measure("ceiling, plain", None)
        sec.info("ceiling: plain path (no impairment, TAP offloads on)",
                 f"goodput {row['goodput_mbit']:.1f} Mbit/s; busiest process "
                 f"{row['busiest_cpu']:.0%} CPU", row)
        sec.details["runs"] = rows
        bk.end(server)
    finally:
        b.stop_daemons()
        netns_cleanup()

