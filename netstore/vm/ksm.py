# netstore/vm/ksm.py - page fusion on Linux's KSM (kernel samepage merging):
# a VM with page fusion runs with `-machine mem-merge=on` (QEMU marks its RAM
# MADV_MERGEABLE), and while at least one such VM runs the host's KSM is on.
# netstore turns KSM on only if it was off, scans faster meanwhile
# (pages_to_scan at least SCAN_PAGES), and puts both back when the last such
# VM ends. The figures are KSM's own: pages_sharing host-wide (pages saved),
# and per process /proc/PID/ksm_merging_pages (Linux 6.1), which is what
# `VBoxManage metrics` calls RAM/VMM/Shared.
"""Host KSM for page fusion: switch it on and off, read what it shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KSM_DIR", "SCAN_PAGES", "Ksm", "ksm_figures", "merging_pages"]

KSM_DIR = Path("/sys/kernel/mm/ksm")
# Pages KSM scans per wake-up while netstore has it on (the kernel's default is 100).
SCAN_PAGES = 1000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read(name: str) -> int | None:
    try:
        return int((KSM_DIR / name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def ksm_figures() -> dict[str, Any]:
    """KSM's state host-wide: run (1 on), pages_shared, pages_sharing, full
    scans, and the memory saved (pages_sharing pages) in MB; {} without KSM."""
    if not KSM_DIR.is_dir():
        return {}
    out: dict[str, Any] = {name: _read(name) for name in
                           ("run", "pages_shared", "pages_sharing", "full_scans",
                            "pages_to_scan")}
    sharing = out.get("pages_sharing") or 0
    out["saved_mb"] = round(sharing * PAGE_SIZE / (1 << 20), 1)
    return out


def merging_pages(pid: int) -> int | None:
    """Pages of process ``pid`` KSM has merged (None where the kernel does not tell)."""
    try:
        return int(Path(f"/proc/{pid}/ksm_merging_pages").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Ksm:
    """netstore's hold on the host's KSM while page-fusion VMs run."""

    users: int = 0
    saved: tuple[int, int] | None = None  # run, pages_to_scan before netstore turned it on

    def acquire(self) -> str | None:
        """A page-fusion VM starts; None, or why KSM could not be turned on."""
        self.users += 1
        if self.users > 1:
            return None
        run, scan = _read("run"), _read("pages_to_scan")
        if run is None:
            return f"{KSM_DIR} is missing: this kernel has no KSM, pages are not shared"
        if run == 1:
            return None  # on already: someone else's, left as it is
        try:
            if scan is not None and scan < SCAN_PAGES:
                (KSM_DIR / "pages_to_scan").write_text(str(SCAN_PAGES))
            (KSM_DIR / "run").write_text("1")
        except OSError as e:
            return f"turning KSM on ({KSM_DIR}/run): {e.strerror}"
        self.saved = (run, scan if scan is not None else SCAN_PAGES)
        return None

    def release(self) -> None:
        """A page-fusion VM ended; the last one puts KSM back as it was."""
        self.users = max(0, self.users - 1)
        if self.users or self.saved is None:
            return
        run, scan = self.saved
        self.saved = None
        try:
            (KSM_DIR / "run").write_text(str(run))
            (KSM_DIR / "pages_to_scan").write_text(str(scan))
        except OSError:
            pass
