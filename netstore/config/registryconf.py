# netstore/config/registryconf.py - the [registry] section: where the registry
# lives and who this host is in it.  Without a url the registry is SQLite in
# the state directory (one host, the default); with a PostgreSQL url several
# hosts share it, each under its own name, and a host that has not renewed
# its lease for `lease` seconds counts as gone (its VMs are aborted and it is
# fenced).
"""The ``[registry]`` section of the daemon configuration."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

# How long a host may go without renewing its lease before others fence it.
DEFAULT_LEASE_S = 15.0
LEASE_MIN_S, LEASE_MAX_S = 1.0, 3600.0
URL_SCHEMES = ("postgresql", "postgres")


def default_host() -> str:
    """This machine's name (its hostname up to the first dot)."""
    return socket.gethostname().split(".")[0] or "localhost"


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The ``[registry]`` section: ``url`` None is SQLite in the state directory."""

    url: str | None = None
    host: str = field(default_factory=default_host)
    lease_s: float = DEFAULT_LEASE_S
    media: Path | None = None  # where media are created (shared storage); None: <state_dir>/media

    @property
    def shared(self) -> bool:
        """Whether several hosts share this registry (a database server)."""
        return self.url is not None


__all__ = ["RegistryConfig", "default_host", "DEFAULT_LEASE_S", "LEASE_MIN_S", "LEASE_MAX_S",
           "URL_SCHEMES"]
