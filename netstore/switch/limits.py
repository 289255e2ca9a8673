# netstore/switch/limits.py - the switch's domain limits and defaults, one place
# each: VLAN ids, MTU, MAC-table aging and size, storm limit, port kinds,
# interface name length. The config loader imports them to validate a file.
"""Limits and defaults of the learning switch (802.1Q, MTU, MAC table, ports)."""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAC_AGING_S",
    "DEFAULT_MAC_TABLE_SIZE",
    "DEFAULT_MTU",
    "IFNAMSIZ",
    "MAC_TABLE_SIZE_MAX",
    "MTU_MAX",
    "MTU_MIN",
    "PORT_KINDS",
    "STORM_PPS_MAX",
    "VLAN_MAX",
    "VLAN_MIN",
]

# IEEE 802.1Q: VLAN 0 means "priority tag only" and 4095 is reserved.
VLAN_MIN, VLAN_MAX = 1, 4094
# 68 is the IPv4 minimum MTU (RFC 791); 65535 the largest TAP/UDP payload.
MTU_MIN, MTU_MAX, DEFAULT_MTU = 68, 65535, 1500
DEFAULT_MAC_AGING_S = 300.0  # Open vSwitch and the Linux bridge (vde_switch: 100 s)
DEFAULT_MAC_TABLE_SIZE = 8192  # Open vSwitch's default cap (MAC_DEFAULT_MAX)
MAC_TABLE_SIZE_MAX = 1 << 24  # the largest cap a configuration may ask for
# A storm limit above this is no limit (a 100 Gbit/s link moves ~150 Mpps of
# 64-byte frames; a Python switch forwards well under 1 Mpps).
STORM_PPS_MAX = 10_000_000
IFNAMSIZ = 16  # Linux interface names hold 15 bytes plus NUL
# How a port reaches its peer; switch/ports/ has one module per kind.
PORT_KINDS = ("udp", "unixgram", "stream", "tap", "vde")
