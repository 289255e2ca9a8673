# netstore's registry: one SQLite database per state directory
# (<state_dir>/registry.db) holding media, machines, controllers,
# attachments, NICs and snapshots.  store.py is the Registry (media),
# machines.py the VMs (reg.machines), snapshots.py their snapshots,
# schema.py the migrations, errors.py what a user can meet.
"""The registry of media and machines kept in the state directory."""

from netstore.registry.errors import (
    DuplicateMediumError,
    MachineRuleError,
    MachineStateError,
    MachineWarning,
    MediumBusyError,
    MediumInUseError,
    MediumRuleError,
    NameTakenError,
    NotFoundError,
    RegistryError,
    SchemaVersionError,
)

# machines registers its USER_SOURCES hook (attachments, snapshots) on import
from netstore.registry.machines import (  # noqa: E402
    BUSES,
    Attachment,
    Controller,
    Machine,
    Machines,
    Nic,
    host_report,
)
from netstore.registry.schema import MIGRATIONS, schema_version
from netstore.registry.snapshots import Snapshot, Snapshots  # noqa: E402
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
    "Machines",
    "Machine",
    "Controller",
    "Attachment",
    "Nic",
    "Snapshots",
    "Snapshot",
    "BUSES",
    "host_report",
    "MachineRuleError",
    "MachineStateError",
    "MediumBusyError",
    "MachineWarning",
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
