# What names a logical unit across restarts: its NAA designator and serial
# number (VPD 83h/80h) and where its persistent reservations live: a file of
# this host's, or the shared registry for a unit several hosts export.
"""Identity of an exported logical unit, derived from where it is exported."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from netstore.registry import Registry
from netstore.registry import reservations as kept
from netstore.scsi.lun import LunIdentity

RESERVATIONS_DIR = "reservations"


def lun_digest(target: str, path: str, owner: str | None = None) -> bytes:
    """What names a LUN across restarts: its target, its image's real path
    and, for a unit of one machine's own (immutable, multiattach), that machine.

    A private unit is a logical unit of its own (its own layer, its own
    contents), so it gets its own NAA and its own APTPL file: SPC-4 keeps
    registrations per logical unit, and EXTENDED COPY finds units by NAA.
    """
    key = f"{target}\0{os.path.realpath(path)}"
    if owner is not None:
        key += f"\0{owner}"
    return hashlib.sha256(key.encode()).digest()


def lun_identity(target: str, path: str, owner: str | None = None) -> LunIdentity:
    """The NAA designator and serial number of a LUN (stable across restarts)."""
    digest = lun_digest(target, path, owner)
    # NAA type 6 would need a 16-byte designator; type 5 (IEEE registered) with
    # a locally derived value is what tgt and LIO do for file-backed LUNs.
    naa = bytes([0x50 | (digest[0] & 0x0F)]) + digest[1:8]
    return LunIdentity(serial=digest[8:16].hex(), naa=naa, target_name=target)


def reservation_file(state_dir: Path, target: str, path: str,
                     owner: str | None = None) -> Path:
    """Where a LUN's persistent reservations live (APTPL, SPC-4 5.13.4)."""
    name = lun_digest(target, path, owner).hex()[:24]
    return Path(state_dir) / RESERVATIONS_DIR / f"{name}.json"


class RegistryReservations:
    """A netstore.scsi.reservations.ReservationStore in the registry of
    ``(state_dir, url)``, for a unit several hosts export: every change is
    kept (``shared``), so the host taking the unit over starts from it.  Its
    calls open the registry: they run where the unit's commands run, off the
    event loop."""

    shared = True

    def __init__(self, state_dir: Path, url: str | None, unit: str) -> None:
        self.state_dir, self.url, self.unit = Path(state_dir), url, unit

    def _with(self, fn: Any) -> Any:
        with Registry.open(self.state_dir, self.url) as reg:
            return fn(reg)

    def load(self) -> bytes | None:
        return self._with(lambda reg: kept.load(reg, self.unit))  # type: ignore[no-any-return]

    def save(self, data: bytes) -> None:
        self._with(lambda reg: kept.save(reg, self.unit, data))
