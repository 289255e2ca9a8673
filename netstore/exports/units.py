# Opening logical units on images: format detection, the backend each format
# needs, thin provisioning where the backend can deallocate, CD/DVD units, and
# a cache so a unit whose description did not change is the same object (its
# sessions, reservations and unit attentions go on).
"""Logical units on images, described by plain values (:class:`UnitSpec`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from netstore.disk.api import DiskError
from netstore.disk.images import detect_format, open_image
from netstore.disk.raw import RawImage
from netstore.scsi.lun import LogicalUnit
from netstore.scsi.mmc import MMC_BLOCK_SIZE, OpticalUnit

from .identity import RegistryReservations, lun_identity, reservation_file


class ExportError(Exception):
    """A target cannot be exported as described (a LUN missing or unusable)."""


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """Everything that decides one logical unit; equal specs are one unit.

    Attributes:
        target: the target's name (part of the unit's identity).
        index: the LUN number (for messages).
        path: the image file the unit reads and writes.
        kind: "disk" (SBC) or "dvd" (MMC, read-only 2048-byte blocks).
        readonly: writes fail with DATA PROTECT / WRITE PROTECTED.
        removable: RMB=1, PREVENT ALLOW MEDIUM REMOVAL, eject and load.
        thin: True/False forces thin provisioning; None: thin when the
            backend can deallocate.
        identity_path: the file that names the unit (the medium's base, so a
            new top layer keeps the unit's NAA); default: ``path``.
        owner: the machine whose own unit this is (immutable, multiattach).
        epoch: anything whose change must give a new unit (a VM's start time).
        group: the target port group (and relative port) of this host
            (ALUA; the host's number in a shared registry, 1 on one host).
        shared: several hosts export the unit (its reservations live in the registry).
        writer: the host that owns the unit's writes; when it changes, the
            unit is opened afresh (this host's copy of the image's metadata
            may be stale).
    """

    target: str
    index: int
    path: str
    kind: str = "disk"
    readonly: bool = False
    removable: bool = False
    thin: bool | None = None
    identity_path: str | None = None
    owner: str | None = None
    epoch: object = None
    group: int = 1
    shared: bool = False
    writer: str | None = None


class UnitCache:
    """Opens units from specs and hands the same unit back for the same spec."""

    def __init__(self, state_dir: Path, log: logging.Logger | None = None,
                 registry_url: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.registry_url = registry_url
        self.log = log or logging.getLogger("netstore.exports")
        self._units: dict[UnitSpec, LogicalUnit] = {}

    def get(self, spec: UnitSpec) -> LogicalUnit:
        """The unit `spec` describes, opened now unless it is open already."""
        lu = self._units.get(spec)
        if lu is None:
            lu = open_unit(spec, self.state_dir, self.registry_url)
            self._units[spec] = lu
        return lu

    def close(self, spec: UnitSpec) -> None:
        """Flush and close the unit of `spec`, if open."""
        lu = self._units.pop(spec, None)
        if lu is not None:
            lu.close()

    def retain(self, keep: set[UnitSpec]) -> None:
        """Close every open unit whose spec is not in `keep`."""
        for spec in [s for s in self._units if s not in keep]:
            self.close(spec)

    def flush_all(self) -> None:
        """Flush every open unit (a clean stop)."""
        for lu in self._units.values():
            try:
                lu.backend.flush()
            except Exception:
                self.log.exception("flushing a LUN failed")


def check_image(spec: UnitSpec) -> None:
    """Refuse a spec whose image the unit could not be opened on (missing,
    unreadable, an unknown format, thin where it cannot be); opens and closes
    the image, so call it from a worker thread."""
    if spec.kind == "dvd":
        _exists(spec)
        return
    _thin_backend(spec).close()


def _exists(spec: UnitSpec) -> None:
    if not os.path.exists(spec.path):
        raise ExportError(f"target {spec.target}: LUN {spec.index} {spec.path!r} "
                          "is not an existing image file")


def _thin_backend(spec: UnitSpec):
    """The spec's backend, checked for the thin setting; and whether it is thin."""
    _exists(spec)
    backend = open_backend(spec.path, read_only=spec.readonly)
    # Thin (UNMAP, LBPME) when the backend can deallocate, unless the LUN says
    # thin = false.
    can_discard = callable(getattr(backend, "discard", None)) and not backend.read_only
    if spec.thin and not can_discard:
        backend.close()
        raise ExportError(f"target {spec.target}: LUN {spec.index} {spec.path!r} cannot be "
                          "thin (read-only, or its format cannot deallocate)")
    return backend


def open_unit(spec: UnitSpec, state_dir: Path, registry_url: str | None = None) -> LogicalUnit:
    """A logical unit on the image at ``spec.path`` (any format netstore reads)."""
    _exists(spec)
    named_by = spec.identity_path or spec.path
    identity = lun_identity(spec.target, named_by, spec.owner)
    identity.port_group = identity.relative_port = spec.group
    store: Path | RegistryReservations = reservation_file(state_dir, spec.target, named_by,
                                                          spec.owner)
    if spec.shared:  # the next host serving it takes its reservations over
        store = RegistryReservations(state_dir, registry_url, store.stem)
    if spec.kind == "dvd":
        backend = RawImage(spec.path, read_only=True, block_size=MMC_BLOCK_SIZE)
        return OpticalUnit(backend, identity, reservation_store=store)
    backend = _thin_backend(spec)
    can_discard = callable(getattr(backend, "discard", None)) and not backend.read_only
    return LogicalUnit(backend, identity, reservation_store=store,
                       thin=can_discard if spec.thin is None else spec.thin,
                       removable=spec.removable)


def open_backend(path: str, *, read_only: bool):
    """A LUN backend for the image at `path` in any format netstore reads
    (raw and qcow2 read-write, the others read-only)."""
    try:
        return open_image(path, read_only=read_only, format=detect_format(path))
    except DiskError as e:
        raise ExportError(str(e)) from e
