# The errors the registry raises: each is something a user can act on, with
# one line naming the rule and the object in the way.  The CLI prints the
# message and exits 1.  Type-rule refusals come from netstore.disk.media
# (MediumRuleError), image problems from netstore.disk.api (DiskError).
"""Registry errors."""

from __future__ import annotations

from netstore.disk.api import DiskError
from netstore.disk.media import MediumRuleError


class RegistryError(DiskError):
    """A registry operation was refused; the message says why and what to do."""


class SchemaVersionError(RegistryError):
    """registry.db was written by a newer netstore (its schema version is unknown here)."""


class NotFoundError(RegistryError):
    """No medium (or machine layer) of that name or UUID is registered."""


class NameTakenError(RegistryError):
    """A medium of that name is registered already."""


class DuplicateMediumError(RegistryError):
    """The image's UUID, or its file, is registered already (the message names the other file)."""


class MediumInUseError(RegistryError):
    """The medium has child layers or users; the message names them."""


class MachineRuleError(RegistryError):
    """A change to a machine that a rule of semantics.md section 2 refuses (a
    limit, a chipset, a slot, a MAC); the message names the rule and the object."""


class MachineStateError(MachineRuleError):
    """The machine is in the wrong power state for the change (running or off)."""


class MediumBusyError(MachineRuleError):
    """`vm start` (or an attach to a running VM) met a disk another running VM
    holds and whose type runs in one VM at a time; the message names that VM."""


class NicImpairmentError(MachineRuleError):
    """An impairment a NIC cannot take (netstore.impairments.ImpairmentError
    underneath): ``key`` names the setting (``loss``, ``gemodel.p``),
    ``expected`` what would do, ``got`` how the value read, ``direction``
    which way ("in" or "out"). The CLI names the flag and exits 2."""

    def __init__(self, where: str, direction: str, key: str, expected: str, got: str) -> None:
        super().__init__(f"{where}, impairment {direction}: {key}: expected {expected}, got {got}")
        self.direction = direction
        self.key = key
        self.expected = expected
        self.got = got


class MachineWarning(UserWarning):
    """Allowed, but worth saying (vCPUs above the host's cores); the CLI prints
    it on stderr and exits 0."""


__all__ = [
    "MachineRuleError",
    "MachineStateError",
    "MediumBusyError",
    "MachineWarning",
    "NicImpairmentError",
    "RegistryError",
    "SchemaVersionError",
    "NotFoundError",
    "NameTakenError",
    "DuplicateMediumError",
    "MediumInUseError",
    "MediumRuleError",
]
