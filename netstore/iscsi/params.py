# The negotiated state of an iSCSI session and the target's side of every
# negotiation: SessionParams (the values in force, RFC 7143 13 defaults) and
# TargetLimits (what this target offers or allows).
"""Session parameters and target limits of iSCSI key negotiation.

The login machine (login.py), the key negotiator (text.py) and the session
(session.py) all read these; they hold values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SessionParams", "TargetLimits"]


@dataclass
class SessionParams:
    """Operational values in force for a session/connection (RFC 7143 13 defaults).

    ``target_mrdsl`` is what the target declared it can receive (8192 until it
    declares); ``initiator_mrdsl`` is what the initiator declared: the target
    must never send a data segment longer than that.
    """

    header_digest: bool = False
    data_digest: bool = False
    target_mrdsl: int = 8192
    initiator_mrdsl: int = 8192
    first_burst_length: int = 65536
    max_burst_length: int = 262144
    immediate_data: bool = True
    initial_r2t: bool = True
    max_outstanding_r2t: int = 1
    max_connections: int = 1
    error_recovery_level: int = 0
    default_time2wait: int = 2
    default_time2retain: int = 20
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    session_type: str = "Normal"
    initiator_name: str | None = None
    initiator_alias: str | None = None
    target_name: str | None = None


@dataclass
class TargetLimits:
    """What this target offers or allows; the other half of every negotiation."""

    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 262144
    max_connections: int = 8
    max_outstanding_r2t: int = 16
    immediate_data: bool = True
    # OR function: False lets the initiator choose unsolicited data (its Yes wins).
    initial_r2t: bool = False
    # OR function with Yes: we always require in-order data (simplest for ERL 0).
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 2
    default_time2retain: int = 20
    # Only ERL 0 is implemented; MIN function makes every offer end at 0.
    error_recovery_level: int = 0
    digests: list[str] = field(default_factory=lambda: ["CRC32C", "None"])
