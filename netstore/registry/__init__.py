# netstore's registry: one SQLite database per state directory
# (<state_dir>/registry.db) holding media, machines, controllers,
# attachments, NICs and snapshots.  One module per record, imports pointing
# one way: db.py (connection, transactions, generation; schema.py the
# migrations) <- media.py <- layers.py <- vm.py (the VM record; host.py the
# host report) <- attachments.py, nics.py <- snapshots.py <- machines.py (the
# VM API, reg.machines) <- store.py (the Registry).  errors.py holds what a
# user can meet.
"""The registry of media and machines kept in the state directory."""

from netstore.registry.attachments import BUSES, Attachment, Controller
from netstore.registry.db import DB_NAME
from netstore.registry.errors import (
    DuplicateMediumError,
    MachineRuleError,
    MachineStateError,
    MachineWarning,
    MediumBusyError,
    MediumInUseError,
    MediumRuleError,
    NameTakenError,
    NicImpairmentError,
    NotFoundError,
    RegistryError,
    SchemaVersionError,
)
from netstore.registry.host import host_report
from netstore.registry.layers import machine_dir_name
from netstore.registry.machines import Machines
from netstore.registry.media import USER_SOURCES, Medium, MediumUser
from netstore.registry.nics import Nic
from netstore.registry.schema import MIGRATIONS, schema_version
from netstore.registry.snapshots import Snapshot, Snapshots
from netstore.registry.store import Registry
from netstore.registry.vm import Machine

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
    "NicImpairmentError",
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
