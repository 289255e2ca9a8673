# netstore/registry/startup.py - VM groups and their start order, as an OVF
# VirtualSystemCollection's StartupSection describes them (DSP0243: each
# member's order and the delay after it starts): a VM belongs to at most one
# group; `vm start --group NAME` starts the group's VMs by order (then name),
# waiting each one's delay before the next. Changeable in any power state.
"""VM groups: which group, in what order, with what delay."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from netstore.registry.errors import MachineRuleError, NotFoundError

__all__ = ["GROUP_RE", "MAX_START_DELAY_S", "Startup", "check_startup", "group_members",
           "set_startup"]

GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A day: a longer wait between two starts is a mistake, not a plan.
MAX_START_DELAY_S = 86400
MAX_START_ORDER = 65535


@dataclass(frozen=True, slots=True)
class Startup:
    """A VM's place in its group's start: ``group`` None when in none."""

    group: str | None = None
    order: int = 0
    delay_s: int = 0


def set_startup(conn: sqlite3.Connection, vm_id: int, name: str, *, group: str | None,
                order: int | None, delay_s: int | None) -> None:
    """Change what is given (``group=""`` leaves the group); refusals change nothing."""
    check_startup(name, group=group, order=order, delay_s=delay_s)
    if group is not None:
        conn.execute("UPDATE machines SET start_group = ? WHERE id = ?", (group or None, vm_id))
    if order is not None:
        conn.execute("UPDATE machines SET start_order = ? WHERE id = ?", (order, vm_id))
    if delay_s is not None:
        conn.execute("UPDATE machines SET start_delay_s = ? WHERE id = ?", (delay_s, vm_id))


def check_startup(name: str, *, group: str | None, order: int | None,
                  delay_s: int | None) -> None:
    """Raise MachineRuleError naming what is wrong with these settings of VM ``name``."""
    if group is not None and group != "" and not GROUP_RE.fullmatch(group):
        raise MachineRuleError(f"{group!r} is not a group name (1-64 letters, digits, '.', "
                               "'_', '-', starting with a letter or digit)")
    if order is not None and not 0 <= order <= MAX_START_ORDER:
        raise MachineRuleError(f"{name}: start order {order} is outside 0..{MAX_START_ORDER}")
    if delay_s is not None and not 0 <= delay_s <= MAX_START_DELAY_S:
        raise MachineRuleError(
            f"{name}: start delay {delay_s} s is outside 0..{MAX_START_DELAY_S} s")


def group_members(conn: sqlite3.Connection, group: str) -> list[tuple[str, int, int]]:
    """The group's VMs as (name, order, delay_s), in start order.  Raises NotFoundError."""
    rows = conn.execute("SELECT name, start_order, start_delay_s FROM machines "
                        "WHERE start_group = ? ORDER BY start_order, name", (group,)).fetchall()
    if not rows:
        raise NotFoundError(f"no VM is in group {group!r} (netstore vm modify VM --group "
                            f"{group})")
    return [(r[0], r[1], r[2]) for r in rows]
