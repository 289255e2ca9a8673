# tests/processes/test_heap.py - a child process keeps its malloc heap
# (netstore/processes/heap.py): with the thresholds set, 128 KiB buffers made
# and dropped one after another, several at a time as a QD16 read stream
# does, reuse the same heap instead of mapping fresh zeroed pages each time
# (counted as minor page faults); without them glibc faults every buffer in.
"""keep_heap: 128 KiB buffers reuse the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import netstore_env

PROBE = r"""
import resource, sys
from netstore.processes.heap import keep_heap
if sys.argv[1] == "keep" and not keep_heap():
    print("no-mallopt"); sys.exit(0)
def churn(rounds):
    for _ in range(rounds):
        held = [bytearray(131072) for _ in range(16)]  # a QD16 stream's Data-In buffers
        del held
churn(50)  # the heap reaches its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(500)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> str:
    p = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                       timeout=60, env=netstore_env())
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_kept_heap_serves_128k_buffers_without_page_faults() -> None:
    kept = faults("keep")
    if kept == "no-mallopt":
        pytest.skip("this C library has no mallopt")
    # 500 rounds x 16 buffers x 32 pages would be 256,000 faults if each were fresh
    assert int(kept) < 1000, kept
    assert int(faults("default")) > 10 * max(int(kept), 100)
