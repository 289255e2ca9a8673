# What a logical unit's parts (reservations.py, sbc.py, thin.py, xcopy.py, alua.py)
# see of it: the outcome of a command (ScsiResponse), how the unit names
# itself (LunIdentity) and the Unit protocol, the unit's public face. The
# parts are given the unit; they import this module, never lun.py.  NOWAIT
# and WouldBlock: a READ tried page-cache-only.
"""ScsiResponse, LunIdentity and the Unit protocol a logical unit's parts are given."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netstore.disk.api import DiskImage

from .sense import Sense


@dataclass(slots=True)
class ScsiResponse:
    """Outcome of one command.

    status: SAM status (GOOD, CHECK CONDITION, ...).
    data: Data-In payload, already cut to the CDB's allocation length.
    sense: 18 bytes of fixed-format sense data with CHECK CONDITION.
    """

    status: int
    data: bytes | memoryview = b""
    sense: bytes = b""


class _NoWait:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOWAIT"


# The Data-Out argument of a READ that may only be answered from the page
# cache (LogicalUnit.execute raises WouldBlock otherwise).
NOWAIT = _NoWait()


class WouldBlock(Exception):
    """A NOWAIT read's blocks are not all cached: run it where it may wait."""


@dataclass(kw_only=True)
class LunIdentity:
    """How a logical unit names itself in INQUIRY and VPD pages."""

    vendor: str = "NETSTORE"
    product: str = "VDISK"
    revision: str = "0001"
    serial: str
    naa: bytes  # 8-byte NAA IEEE Registered (type 5) designator
    target_name: str
    # This host's target port and target port group (VPD 83h designators);
    # with several hosts, the own group of the unit's PortGroups (alua.py).
    relative_port: int = 1
    port_group: int = 1


class Unit(Protocol):
    """The logical unit as its parts use it (LogicalUnit implements it)."""

    backend: DiskImage
    identity: LunIdentity
    device_type: int
    # Nexuses seen with no unit attention pending (the hot path's test).
    attention_clear: set[str]
    # Every command may run: its own target port group is active (alua.py).
    accessible: bool

    @property
    def block_size(self) -> int:
        """Bytes per logical block."""
        ...

    @property
    def num_blocks(self) -> int:
        """Logical blocks of the medium."""
        ...

    @property
    def max_blocks(self) -> int:
        """Blocks one command may transfer at most."""
        ...

    @property
    def read_only(self) -> bool:
        """Writes are refused (read-only backend or software write protect)."""
        ...

    @property
    def write_cache(self) -> bool:
        """WCE: writes may stay in the cache (else each is flushed)."""
        ...

    @property
    def thin(self) -> bool:
        """Thin provisioning (LBPME=1)."""
        ...

    @property
    def medium_loaded(self) -> bool:
        """The medium is in."""
        ...

    def read_blocks(self, lba: int, n: int) -> bytes:
        """`n` blocks at `lba`; UNRECOVERED READ ERROR on an I/O error."""
        ...

    def write_blocks(self, lba: int, data: bytes | memoryview, sync: bool) -> None:
        """Write `data` at `lba`, flushed when `sync` or WCE=0; WRITE ERROR
        on an I/O error."""
        ...

    def write_range(self, lba: int, n: int, data: bytes | memoryview | None, len_byte: int,
                    sync: bool) -> ScsiResponse:
        """WRITE of `n` blocks at `lba` (transfer length at CDB byte `len_byte`)."""
        ...

    def conflicts(self, nexus: str, cdb: bytes | memoryview) -> bool:
        """Whether `cdb` from `nexus` meets a RESERVATION CONFLICT here."""
        ...

    def establish_unit_attention(self, sense: Sense) -> None:
        """Queue unit attention `sense` for every nexus the unit knows."""
        ...
