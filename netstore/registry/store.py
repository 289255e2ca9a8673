# The Registry: one state directory's registry.db with everything in it.  It
# is the database (db.py), its media (media.py) and their layers (layers.py),
# and reaches the machines (machines.py, which reaches their storage, NICs
# and snapshots) as reg.machines.  This is the top of the package: nothing in
# netstore.registry imports it; the CLI, the daemon, the exports, ovf and
# config open a Registry.
"""The registry of one state directory: media, layers and machines."""

from __future__ import annotations

from netstore.registry.db import BUSY_TIMEOUT_MS, DB_NAME
from netstore.registry.hosts import Hosts
from netstore.registry.layers import Layers, machine_dir_name
from netstore.registry.machines import Machines
from netstore.registry.media import USER_SOURCES, Medium, MediumUser, UserSource


class Registry(Layers):
    """The registry of one state directory.

    Open it with :meth:`open` (a context manager).  Methods taking ``ref``
    accept a medium's name or UUID.  Every method raising is a refusal that
    changed nothing.
    """

    @property
    def machines(self) -> Machines:
        """The machines (VMs) of this registry."""
        return Machines(self)

    @property
    def hosts(self) -> Hosts:
        """The hosts sharing this registry (one, or several on PostgreSQL)."""
        return Hosts(self)


# Registry with the names importers took from this module before the split.
__all__ = [
    "Registry",
    "Medium",
    "MediumUser",
    "USER_SOURCES",
    "UserSource",
    "DB_NAME",
    "BUSY_TIMEOUT_MS",
    "machine_dir_name",
]
