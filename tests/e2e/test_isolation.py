# tests/e2e/test_isolation.py - a loose check of "a slow disk never slows the
# network" (issue 10): frames through a udp-to-udp switch path keep flowing
# while an initiator writes with a SYNCHRONIZE CACHE every 32 MiB and reads it
# back cold. The bound is loose on purpose (200 ms, no loss); the figures of
# the issue (p99 within 2 ms of idle, max 20 ms) are measured by
# tools/bench-isolation, whose probe, config and loads this test reuses from
# tools/benchkit.py.
"""The switch forwards every probe frame, none very late, while the target writes, syncs, reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.harness import REPO
from tests.peers import need

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SIZE = 256 << 20
RATE = 500
LOOSE_MAX_MS = 200.0


def _benchkit():
    """tools/benchkit.py as a module (tools/ is no package)."""
    if "benchkit" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchkit", REPO / "tools" / "benchkit.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchkit"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["benchkit"]


def test_probe_frames_flow_while_the_target_writes_syncs_and_reads_back(netstore_daemon):
    need("qemu-io")
    bk = _benchkit()
    tmp: Path = netstore_daemon.tmp
    image = tmp / "write.img"  # pytest's tmp: on disk here, so the flushes reach one
    bk.make_image(image, SIZE, fill=False)
    daemon = netstore_daemon(bk.config_text(Path("{state_dir}"), [image]))
    ready = bk.Ready.parse(daemon.ready_line)
    url = ready.url(0)
    try:
        probe = bk.Probe(ready.switch_ports["probe:a"], ready.switch_ports["probe:b"],
                         rate=RATE, max_seconds=240)
        probe.start()
        try:
            wrote = bk.write_with_sync(url, SIZE, timeout=120)
            bk.drop_cache(image)
            read = bk.read_back(url, SIZE, timeout=120)
        finally:
            figures = probe.stop()
    finally:
        bk.kill_children()
    print(f"\nprobe at {RATE}/s: {figures['received']}/{figures['sent']} frames, "
          f"p50 {figures['p50_ms']:.3f} p99 {figures['p99_ms']:.3f} max {figures['max_ms']:.3f} "
          f"ms; {wrote.what} at {wrote.mb_s or 0:.0f} MB/s, {read.what} at {read.mb_s or 0:.0f} "
          "MB/s")
    assert wrote.error is None, wrote.error
    assert read.error is None, read.error
    assert figures["sent"] > 0 and figures["lost"] == 0, figures
    assert figures["max_ms"] < LOOSE_MAX_MS, figures
    assert daemon.running
