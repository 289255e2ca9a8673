# How a VM boots, as the registry keeps it: the boot order of its devices
# (VBoxManage's --boot1..4, QEMU's -boot order=) and direct kernel boot (a
# kernel, an initrd and a command line handed to the firmware, QEMU's
# -kernel/-initrd/-append, for appliances and tests). Checking what `vm
# modify` asks and writing it inside machines.py's transaction; the
# machines table's columns boot_order, kernel, initrd, kernel_append
# (migration 6).
"""Boot settings of a VM: order and direct kernel boot."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from netstore.registry.errors import MachineRuleError, MachineStateError

# What a boot order may name, and the letter QEMU's -boot order= gives each.
BOOT_DEVICES = {"disk": "c", "dvd": "d", "net": "n"}
# The kernel command line QEMU takes (the x86 boot protocol's limit).
MAX_APPEND = 2048
# `--kernel none` forgets direct kernel boot (and its initrd and command line).
NONE = "none"


@dataclass(frozen=True, slots=True)
class Boot:
    """A VM's boot settings: ``order`` empty means QEMU's own order."""

    order: tuple[str, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None

    @classmethod
    def from_columns(cls, order: str | None, kernel: str | None, initrd: str | None,
                     append: str | None) -> Boot:
        return cls(tuple(x for x in (order or "").split(",") if x), kernel, initrd, append)

    def qemu_args(self) -> list[str]:
        """-boot / -kernel / -initrd / -append as QEMU takes them."""
        argv: list[str] = []
        if self.order:
            argv += ["-boot", "order=" + "".join(BOOT_DEVICES[d] for d in self.order)]
        if self.kernel:
            argv += ["-kernel", self.kernel]
            if self.initrd:
                argv += ["-initrd", self.initrd]
            if self.append:
                argv += ["-append", self.append]
        return argv


def parse_order(text: str) -> tuple[str, ...]:
    """``disk,dvd,net`` as a boot order; MachineRuleError says what is wrong."""
    order = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in order if x not in BOOT_DEVICES]
    if not order or bad:
        raise MachineRuleError(
            f"boot order {text!r}: name devices among {', '.join(BOOT_DEVICES)}, "
            "separated by commas (e.g. disk,dvd,net)")
    if len(set(order)) != len(order):
        raise MachineRuleError(f"boot order {text!r} names a device twice")
    return order


def _file(what: str, path: str) -> str:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise MachineRuleError(f"{what} {path!r} is not a file")
    if not os.access(full, os.R_OK):
        raise MachineRuleError(f"{what} {path!r} cannot be read")
    return full


def apply_boot(conn: sqlite3.Connection, name: str, running: bool, now: Boot, *,
               order: str | None = None, kernel: str | None = None,
               initrd: str | None = None, append: str | None = None) -> bool:
    """Check and write what `vm modify` asks of the boot settings of
    ``name`` (inside the caller's transaction; nothing is written if any of
    it is refused). Returns whether anything was asked.

    Raises:
        MachineStateError: the VM runs (boot settings change only while off).
        MachineRuleError: a bad order, a file that is not there, an initrd or
            a command line without a kernel, a command line too long.
    """
    if order is None and kernel is None and initrd is None and append is None:
        return False
    if running:
        raise MachineStateError(
            f"{name} is running; its boot settings can be changed only while it is "
            f"powered off (netstore vm stop {name})")
    new_order = now.order if order is None else parse_order(order)
    new_kernel, new_initrd, new_append = now.kernel, now.initrd, now.append
    if kernel == NONE:
        if initrd is not None or append is not None:
            raise MachineRuleError("--kernel none forgets the initrd and command line too; "
                                   "give neither with it")
        new_kernel = new_initrd = new_append = None
    else:
        if kernel is not None:
            new_kernel = _file("kernel", kernel)
        if initrd is not None:
            new_initrd = None if initrd == NONE else _file("initrd", initrd)
        if append is not None:
            if len(append.encode()) >= MAX_APPEND:
                raise MachineRuleError(
                    f"the kernel command line is {len(append.encode())} bytes; "
                    f"at most {MAX_APPEND - 1}")
            new_append = append or None
        if new_kernel is None and (new_initrd is not None or new_append is not None):
            raise MachineRuleError(
                f"an initrd or a kernel command line needs a kernel: "
                f"netstore vm modify {name} --kernel FILE")
    conn.execute("UPDATE machines SET boot_order = ?, kernel = ?, initrd = ?, kernel_append = ?"
                 " WHERE name = ?",
                 (",".join(new_order) or None, new_kernel, new_initrd, new_append, name))
    return True


__all__ = ["BOOT_DEVICES", "Boot", "apply_boot", "parse_order"]
