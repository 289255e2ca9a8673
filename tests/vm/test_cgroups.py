# tests/vm/test_cgroups.py - the execution cap of a running VM: where the
# cgroup v2 hierarchy offers the cpu controller, a real process is put in the
# VM's cgroup with cpu.max = PCT % of a period per vCPU; where it does not (a
# host whose cpu controller is bound to cgroup v1), the refusal says why.
"""netstore.vm.cgroups on this host's real cgroup hierarchy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netstore.vm import cgroups


def _cpu_controller() -> bool:
    root = cgroups.cgroup2_root()
    try:
        return root is not None and "cpu" in (root / "cgroup.controllers").read_text().split()
    except OSError:
        return False


@pytest.mark.skipif(_cpu_controller(), reason="this host's cgroup v2 has the cpu controller")
def test_cap_is_refused_naming_what_the_host_lacks():
    with pytest.raises(OSError) as e:
        cgroups.cap_cpu("capped", os.getpid(), 50, 1)
    msg = str(e.value)
    assert "cgroup v2" in msg and ("no cpu controller" in msg or "no cgroup v2" in msg), msg


@pytest.mark.skipif(not _cpu_controller() or os.geteuid() != 0,
                    reason="needs root and cgroup v2's cpu controller")
def test_cap_puts_the_process_in_its_cgroup_with_cpu_max():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        group = cgroups.cap_cpu("netstore-test-cap", p.pid, 50, 2)
        assert (group / "cpu.max").read_text().split() == ["100000", "100000"]
        assert str(p.pid) in (group / "cgroup.procs").read_text().split()
    finally:
        p.kill()
        p.wait()
        cgroups.remove_group("netstore-test-cap")
