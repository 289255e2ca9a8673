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


__all__ = [
    "RegistryError",
    "SchemaVersionError",
    "NotFoundError",
    "NameTakenError",
    "DuplicateMediumError",
    "MediumInUseError",
    "MediumRuleError",
]
