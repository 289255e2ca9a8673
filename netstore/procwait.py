# netstore/procwait.py - waiting for a child process to end from a Trio loop:
# a pidfd the loop waits on (Linux 5.3+), or a thread where there is none.
# Used for the supervisor's service processes and the QEMU of headless VMs.
"""Wait for a subprocess to end without blocking the loop."""

from __future__ import annotations

import os
import subprocess

import trio

__all__ = ["wait_process"]


async def wait_process(process: subprocess.Popen) -> int:
    """Wait for `process` to end without blocking the loop; its exit status
    (negative: the signal that killed it)."""
    if process.returncode is not None:
        return process.returncode
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return process.wait()
