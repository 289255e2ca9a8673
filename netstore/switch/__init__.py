# netstore/switch/__init__.py - the learning virtual switch: a pure forwarding
# core (core, mactable, frames), capture writers (capture), and Trio port
# shells (ports/) that feed it frames.
"""netstore's learning virtual switch."""

from netstore.switch.core import DROP_CAUSES, PortCounters, PortSettings, Switch
from netstore.switch.mactable import MacTable

__all__ = ["DROP_CAUSES", "MacTable", "PortCounters", "PortSettings", "Switch"]
