# netstore/registry/lookup.py - read-only look-ups others make in a registry
# they do not own: the file of a registered base medium by name (the config
# loader's resolve_medium, passed in by the CLI and the daemon).
"""Look up a registered base medium's file without creating a registry."""

from __future__ import annotations

from pathlib import Path

from netstore.registry.errors import NotFoundError, RegistryError
from netstore.registry.store import Registry

__all__ = ["registered_medium"]


def registered_medium(state_dir: Path, name: str, url: str | None = None) -> str | None:
    """The file of the registered base medium `name`, or None (no registry,
    no such medium).  Looking does not create a SQLite registry; `url` is a
    shared registry's ([registry] url)."""
    if url is None and not (state_dir / "registry.db").exists():
        return None
    try:
        with Registry.open(state_dir, url) as reg:
            m = reg.medium(name)
    except NotFoundError:
        return None
    except RegistryError:
        return None
    return None if m.is_layer else m.location
