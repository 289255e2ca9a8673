# netstore/switch/vxlan.py - VXLAN (RFC 7348) as a pure core: the 8-byte
# header codec, the outer UDP header, the outer source port hashed from the
# inner flow, the (VNI, inner MAC) -> remote VTEP learning table with aging,
# and the per-port decisions (decapsulate and learn; encapsulate, check the
# path MTU, pick the VTEPs: the learnt one or every remote). No sockets, no
# clock: the shell (switch/ports/vxlan.py) passes `now` in.
#
# Choices where the RFC leaves one, as Linux's vxlan driver makes them:
# - a VTEP is learnt by its outer source address; frames to it go to the
#   port it listens on (its configured remote's port, else our own port
#   number, as Linux uses one dstport), never to its ephemeral source port;
# - unknown unicast, broadcast and multicast go to every configured remote
#   (head-end replication); a learnt VTEP that is not a remote gets known
#   unicast only;
# - the UDP checksum of sent packets is zero (RFC 7348 section 5, IPv4);
# - packets whose header has the I flag clear or whose VNI the port does not
#   carry are dropped and counted; other flag and reserved bits are ignored
#   on receipt (RFC 7348 section 5: "MUST be ignored") and sent as zero.
"""VXLAN header codec, VTEP learning table and a port's encap/decap decisions."""

from __future__ import annotations

import struct
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable

__all__ = [
    "DROP_CAUSES",
    "ENCAP_LEN",
    "FLAG_I",
    "HEADER_LEN",
    "OUTER_OVERHEAD",
    "SPORT_MAX",
    "SPORT_MIN",
    "VNI_MAX",
    "VXLAN_PORT",
    "VxlanError",
    "VxlanSegment",
    "VtepTable",
    "decode_header",
    "encode_header",
    "source_port",
    "udp_header",
]

VXLAN_PORT = 4789  # IANA-assigned UDP port (RFC 7348 section 5)
HEADER_LEN = 8  # flags (1), reserved (3), VNI (3), reserved (1)
FLAG_I = 0x08  # the "valid VNI" flag; every other flag bit is reserved
VNI_MAX = (1 << 24) - 1
UDP_LEN = 8
IPV4_LEN = 20
# Outer bytes added to the inner frame: IPv4 + UDP + VXLAN headers.
ENCAP_LEN = IPV4_LEN + UDP_LEN + HEADER_LEN
# What a path MTU loses to encapsulation counting the inner Ethernet header
# (Linux's vxlan device: MTU 1450 on a 1500-byte underlay).
OUTER_OVERHEAD = ENCAP_LEN + 14
# RFC 7348 section 5: the source port is a hash of the inner headers, from the
# dynamic/private range 49152-65535.
SPORT_MIN, SPORT_MAX = 49152, 65535
ETH_HLEN = 14

DROP_CAUSES = {
    "vxlan_runt": "a UDP payload shorter than the VXLAN header plus an Ethernet header",
    "vxlan_flags": "a VXLAN header with the I flag clear",
    "vxlan_vni": "a VNI the port does not carry",
    "vxlan_tagged": "an inner frame with an 802.1Q tag on a port mapping VLANs to VNIs",
    "path_mtu": "would exceed the underlay's path MTU once encapsulated (never fragmented)",
    "no_vtep": "no remote VTEP to flood to, and the destination is not learnt",
    "vlan": "leaving a port on a VLAN it maps to no VNI",
}

_HDR = struct.Struct("!B3xI")
_UDP = struct.Struct("!HHHH")
_TAG = struct.Struct("!HH")

Vtep = tuple[str, int]


class VxlanError(ValueError):
    """A packet the codec refuses; ``cause`` is a DROP_CAUSES key."""

    def __init__(self, cause: str) -> None:
        super().__init__(DROP_CAUSES[cause])
        self.cause = cause


def encode_header(vni: int) -> bytes:
    """The 8-byte VXLAN header for ``vni``: I flag set, reserved bits zero."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"a VNI is 0..{VNI_MAX}, got {vni}")
    return _HDR.pack(FLAG_I, vni << 8)


def decode_header(packet: bytes | memoryview) -> int:
    """The VNI of a VXLAN UDP payload (inner frame at HEADER_LEN).

    Raises:
        VxlanError: too short for a header and an Ethernet header, or I flag clear.
    """
    if len(packet) < HEADER_LEN + ETH_HLEN:
        raise VxlanError("vxlan_runt")
    flags, word = _HDR.unpack_from(packet)
    if not flags & FLAG_I:
        raise VxlanError("vxlan_flags")
    return word >> 8


def udp_header(sport: int, dport: int, payload_len: int) -> bytes:
    """An outer UDP header, checksum zero (RFC 7348 section 5 for IPv4)."""
    return _UDP.pack(sport, dport, UDP_LEN + payload_len, 0)


def source_port(frame: bytes) -> int:
    """The outer source port of ``frame``'s flow: a hash of the inner Ethernet
    addresses and, for IPv4, the addresses and (unfragmented TCP/UDP/SCTP) ports,
    in SPORT_MIN..SPORT_MAX; one flow always gets one port (ECMP keeps its order)."""
    key = frame[:12]
    if len(frame) >= 34 and frame[12] == 0x08 and frame[13] == 0x00:
        key += frame[26:34]
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        unfragmented = not ((frame[20] & 0x1F) or frame[21])
        if proto in (6, 17, 132) and unfragmented and len(frame) >= 14 + ihl + 4:
            key += bytes((proto,)) + frame[14 + ihl : 18 + ihl]
    return SPORT_MIN + zlib.crc32(key) % (SPORT_MAX - SPORT_MIN + 1)


class VtepTable:
    """(VNI, MAC) -> the VTEP it was last seen behind, aged and capped.

    Entries age like the switch's MAC table (``aging_s`` after the last frame);
    when full, the oldest entry goes. Pure: ``now`` is given to every call.
    """

    def __init__(self, *, aging_s: float, size: int) -> None:
        if aging_s <= 0 or size < 1:
            raise ValueError("aging must be positive and size at least 1")
        self.aging_s = aging_s
        self.size = size
        # Oldest first; a refreshed entry moves to the end.
        self._entries: OrderedDict[tuple[int, bytes], tuple[Vtep, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, vni: int, mac: bytes, vtep: Vtep, now: float) -> None:
        """``mac`` of ``vni`` was just seen behind ``vtep``."""
        key = (vni, mac)
        entries = self._entries
        if key in entries:
            del entries[key]
        elif len(entries) >= self.size:
            entries.popitem(last=False)
        entries[key] = (vtep, now)

    def lookup(self, vni: int, mac: bytes, now: float) -> Vtep | None:
        """The VTEP behind ``mac`` in ``vni``, or None (an aged entry is removed)."""
        got = self._entries.get((vni, mac))
        if got is None:
            return None
        if now - got[1] >= self.aging_s:
            del self._entries[(vni, mac)]
            return None
        return got[0]

    def expire(self, now: float) -> int:
        """Remove entries aged by ``now``; returns how many."""
        entries = self._entries
        dead = []
        for key, (_, seen) in entries.items():
            if now - seen < self.aging_s:
                break
            dead.append(key)
        for key in dead:
            del entries[key]
        return len(dead)

    def entries(self, now: float) -> list[tuple[int, bytes, Vtep, float]]:
        """Live entries as (vni, mac, vtep, age seconds), sorted by VNI and MAC."""
        return sorted((vni, mac, vtep, now - seen)
                      for (vni, mac), (vtep, seen) in self._entries.items()
                      if now - seen < self.aging_s)


class VxlanSegment:
    """What one vxlan switch port decides, its VTEP table and its drop counters.

    Args:
        vnis: VLAN -> VNI. With ``tagged`` False it has one entry (the access
            port's VLAN) and frames cross untagged; with ``tagged`` True (a
            trunk mapping VLANs to VNIs) frames from the switch carry an
            802.1Q tag that becomes the VNI, and decapsulated frames get the
            tag of their VNI's VLAN.
        remotes: the VTEPs floods go to (head-end replication).
        port: the UDP port a learnt VTEP that is no remote listens on.
        path_mtu: the largest outer IP packet the underlay carries.
    """

    def __init__(self, vnis: dict[int, int], *, tagged: bool, remotes: Iterable[Vtep],
                 port: int = VXLAN_PORT, path_mtu: int = 1500,
                 aging_s: float = 300.0, size: int = 8192) -> None:
        if not vnis or (not tagged and len(vnis) != 1):
            raise ValueError("an access port maps one VLAN to one VNI; a trunk at least one")
        self.vlan_vni = dict(vnis)
        self.vni_vlan = {vni: vlan for vlan, vni in vnis.items()}
        if len(self.vni_vlan) != len(self.vlan_vni):
            raise ValueError("each VNI may carry one VLAN only")
        self.tagged = tagged
        self.remotes: tuple[Vtep, ...] = tuple(dict.fromkeys(remotes))
        self._remote_port = {host: p for host, p in reversed(self.remotes)}
        self.port = port
        self.path_mtu = path_mtu
        self.table = VtepTable(aging_s=aging_s, size=size)
        self.drops: Counter[str] = Counter()
        self._headers = {vni: encode_header(vni) for vni in self.vni_vlan}

    def vtep_of(self, host: str) -> Vtep:
        """Where frames to the VTEP at ``host`` go: its remote's port, else ours."""
        return (host, self._remote_port.get(host, self.port))

    def fits(self, inner_len: int) -> bool:
        """Whether an untagged inner frame of ``inner_len`` bytes fits the path MTU."""
        return inner_len + ENCAP_LEN <= self.path_mtu

    @property
    def inner_mtu(self) -> int:
        """The inner IP MTU the path allows (the Linux device's MTU)."""
        return self.path_mtu - OUTER_OVERHEAD

    # -- from the underlay -------------------------------------------------
    def decapsulate(self, packet: bytes, source: tuple[str, int], now: float) -> bytes | None:
        """A UDP payload from ``source`` -> the frame for the switch, or None
        (dropped and counted). Learns the inner source MAC behind the sender."""
        try:
            vni = decode_header(packet)
        except VxlanError as e:
            self.drops[e.cause] += 1
            return None
        vlan = self.vni_vlan.get(vni)
        if vlan is None:
            self.drops["vxlan_vni"] += 1
            return None
        frame = packet[HEADER_LEN:]
        if not frame[6] & 1:  # never learn a group source
            self.table.learn(vni, frame[6:12], self.vtep_of(source[0]), now)
        if not self.tagged:
            return frame
        if frame[12] == 0x81 and frame[13] == 0x00:
            self.drops["vxlan_tagged"] += 1
            return None
        return frame[:12] + _TAG.pack(0x8100, vlan) + frame[12:]

    # -- to the underlay ---------------------------------------------------
    def encapsulate(self, frame: bytes, now: float) -> tuple[int, bytes, tuple[Vtep, ...]]:
        """A frame the switch sends out of the port -> (outer source port, UDP
        payload: VXLAN header + inner frame, the VTEPs it goes to);
        ``(0, b"", ())`` when dropped (counted). The shell puts
        ``udp_header(sport, vtep port, len(payload))`` before it per VTEP."""
        if self.tagged:
            if len(frame) < ETH_HLEN + 4 or frame[12] != 0x81 or frame[13] != 0x00:
                self.drops["vlan"] += 1
                return 0, b"", ()
            vni = self.vlan_vni.get(((frame[14] << 8) | frame[15]) & 0x0FFF)
            frame = frame[:12] + frame[16:]
        else:
            vni = next(iter(self.vlan_vni.values()))
        if vni is None:
            self.drops["vlan"] += 1
            return 0, b"", ()
        if not self.fits(len(frame)):
            self.drops["path_mtu"] += 1
            return 0, b"", ()
        dst = frame[:6]
        where = None if dst[0] & 1 else self.table.lookup(vni, dst, now)
        vteps = (where,) if where is not None else self.remotes
        if not vteps:
            self.drops["no_vtep"] += 1
            return 0, b"", ()
        return source_port(frame), self._headers[vni] + frame, vteps

    def entries(self, now: float) -> list[tuple[int, int, bytes, Vtep, float]]:
        """Learnt remote MACs as (VLAN, VNI, MAC, VTEP, age seconds)."""
        return [(self.vni_vlan[vni], vni, mac, vtep, age)
                for vni, mac, vtep, age in self.table.entries(now) if vni in self.vni_vlan]
