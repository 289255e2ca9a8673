# netstore's registry: one SQLite database per state directory
# (<state_dir>/registry.db) holding media now and, with issue 5, machines,
# controllers, attachments, NICs and snapshots.  store.py is the Registry,
# schema.py the migrations, errors.py what a user can meet.
"""The registry of media (and, later, machines) kept in the state directory."""

from netstore.registry.errors import (
    DuplicateMediumError,
    MediumInUseError,
    MediumRuleError,
    NameTakenError,
    NotFoundError,
    RegistryError,
    SchemaVersionError,
)
from netstore.registry.schema import MIGRATIONS, schema_version
from netstore.registry.store import (
    DB_NAME,
    USER_SOURCES,
    Medium,
    MediumUser,
    Registry,
    machine_dir_name,
)

__all__ = [
    "Registry",
    "Medium",
    "MediumUser",
    "USER_SOURCES",
    "MIGRATIONS",
    "DB_NAME",
    "schema_version",
    "machine_dir_name",
    "RegistryError",
    "SchemaVersionError",
    "NotFoundError",
    "NameTakenError",
    "DuplicateMediumError",
    "MediumInUseError",
    "MediumRuleError",
]
