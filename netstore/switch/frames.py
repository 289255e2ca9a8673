# netstore/switch/frames.py - Ethernet II and IEEE 802.1Q framing facts the
# forwarding core needs: header offsets, the tag format, group addresses and
# the reserved 802.1D range. Frames are bytes without preamble and without FCS,
# as QEMU, TAP devices and VDE hand them over.
"""Ethernet and 802.1Q helpers: offsets, tags, address classes, MAC text."""

from __future__ import annotations

import struct

ETH_ALEN = 6  # bytes in a MAC address
ETH_HLEN = 14  # destination, source, EtherType; anything shorter is a runt
VLAN_HLEN = 4  # an 802.1Q tag: TPID (2) + TCI (2), IEEE 802.1Q-2018 9.3
TPID_8021Q = 0x8100  # IEEE 802.1Q C-tag; 802.1ad S-tags (0x88a8) are not tags here
# Room for a frame check sequence the way the brief and vde_switch (1518 B)
# count a maximum frame: a port with MTU m admits m + 18 bytes untagged.
FCS_ALLOWANCE = 4
VID_MASK = 0x0FFF  # TCI bits 0-11: VLAN identifier
PRIO_MASK = 0xF000  # TCI bits 12-15: PCP (3) and DEI (1), kept when re-tagging
VID_PRIORITY_ONLY = 0  # 802.1Q 9.6: VID 0 carries priority only, no VLAN

BROADCAST = b"\xff" * ETH_ALEN
# IEEE 802.1D-2004 7.12.6 / 802.1Q-2018 8.6.3: 01-80-C2-00-00-00..0F are link-local
# (STP, pause, LACP, 802.1X, LLDP); a conformant bridge never forwards them.
RESERVED_PREFIX = b"\x01\x80\xc2\x00\x00"
RESERVED_LAST = 0x0F

_TAG = struct.Struct("!HH")


def max_frame_len(mtu: int, *, tagged: bool = False) -> int:
    """The longest frame a port with payload MTU ``mtu`` carries (no FCS in the bytes)."""
    return mtu + ETH_HLEN + FCS_ALLOWANCE + (VLAN_HLEN if tagged else 0)


def is_group(mac: bytes) -> bool:
    """True for broadcast and multicast addresses (the I/G bit, IEEE 802-2014 8.2)."""
    return bool(mac[0] & 1)


def is_reserved(mac: bytes) -> bool:
    """True for the 802.1D link-local block 01-80-C2-00-00-0x, never forwarded."""
    return mac[:5] == RESERVED_PREFIX and mac[5] <= RESERVED_LAST


def tag_bytes(vid: int, prio_bits: int = 0) -> bytes:
    """The 4-byte 802.1Q tag for ``vid``; ``prio_bits`` are the TCI's top 4 bits in place."""
    return _TAG.pack(TPID_8021Q, (prio_bits & PRIO_MASK) | (vid & VID_MASK))


def add_tag(frame: bytes, vid: int, prio_bits: int = 0) -> bytes:
    """``frame`` (untagged) with an 802.1Q tag inserted after the source address."""
    return frame[:12] + tag_bytes(vid, prio_bits) + frame[12:]


def strip_tag(frame: bytes) -> bytes:
    """``frame`` (tagged) without its outer 802.1Q tag."""
    return frame[:12] + frame[16:]


def tci(frame: bytes) -> int | None:
    """The outer tag's TCI, or None if the frame carries no (complete) 802.1Q tag."""
    if len(frame) >= ETH_HLEN + VLAN_HLEN and frame[12] == 0x81 and frame[13] == 0x00:
        return (frame[14] << 8) | frame[15]
    return None


def mac_text(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` for six bytes."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """Six bytes from ``aa:bb:cc:dd:ee:ff`` or ``aa-bb-...``.

    Raises:
        ValueError: the text is not six hex octets.
    """
    parts = text.replace("-", ":").split(":")
    if len(parts) != ETH_ALEN or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address (six hex octets like 52:54:00:12:34:56): {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(
            f"not a MAC address (six hex octets like 52:54:00:12:34:56): {text!r}"
        ) from None
