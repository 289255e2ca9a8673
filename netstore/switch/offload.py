# netstore/switch/offload.py - what the switch needs to carry TAP offloads:
# the virtio-net header (linux/virtio_net.h) a TAP device with IFF_VNET_HDR
# puts before every frame, and software segmentation and checksumming for
# when a frame the kernel left "offloaded" (a 64 KiB TCP segment, or a
# partial checksum) must leave through a port that only takes real frames
# (udp, unixgram, stream, vde, a plain TAP) or be seen by a capture.
#
# struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
#                         le16 csum_start; le16 csum_offset; }   (10 bytes)
# flags: NEEDS_CSUM (the L4 checksum from csum_start is to be completed: the
# field at csum_start + csum_offset holds the pseudo-header sum), DATA_VALID
# (the kernel already checked it). gso_type: NONE, TCPV4, UDP, TCPV6, | ECN.
"""virtio-net headers; TCP segmentation and checksum completion in software."""

from __future__ import annotations

import struct
from typing import Any

__all__ = [
    "VNET_HDR",
    "VNET_HDR_LEN",
    "OFFLOAD_ERRORS",
    "ZERO_HDR",
    "checksum",
    "complete_checksum",
    "gso_head_len",
    "segment",
    "TcpMerge",
]

VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10: no num_buffers (no VIRTIO_NET_F_MRG_RXBUF)
ZERO_HDR = bytes(VNET_HDR_LEN)  # a real frame, nothing to do

F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80

_ETH_VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``, ready to store.

    The ones' complement sum of 16-bit words is congruent to the big-endian
    number the bytes spell modulo 2**16 - 1 (65536 = 1 mod 65535), which
    int.from_bytes computes at C speed.
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    s = n % 0xFFFF
    return 0xFFFF - s if s else 0


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """``frame`` with its partial (NEEDS_CSUM) L4 checksum completed."""
    at = csum_start + csum_offset
    if at + 2 > len(frame) or csum_start >= len(frame):
        raise ValueError("checksum offsets beyond the frame")
    c = checksum(memoryview(frame)[csum_start:])
    if c == 0 and csum_offset == 6:  # UDP: 0 means "no checksum" (RFC 768)
        c = 0xFFFF
    return frame[:at] + _U16.pack(c) + frame[at + 2 :]


def gso_head_len(gso_type: int, csum_start: int, frame: bytes) -> int:
    """Bytes of headers before a TCP GSO frame's payload (L4 offset + TCP header)."""
    if (gso_type & ~GSO_ECN) not in (GSO_TCPV4, GSO_TCPV6) or csum_start + 20 > len(frame):
        raise ValueError("not a TCP GSO frame")
    return csum_start + (frame[csum_start + 12] >> 4) * 4


def segment(hdr: bytes | bytearray | memoryview, frame: bytes) -> list[bytes]:
    """Real frames (each at most the GSO size of payload, every checksum done) for
    ``frame`` as described by its virtio-net header ``hdr``.

    Raises:
        ValueError: a GSO type other than TCP, or headers that do not parse.
    """
    flags, gso_type, _hl, gso_size, cs, co = VNET_HDR.unpack_from(hdr)
    gt = gso_type & ~GSO_ECN
    if gt == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            return [complete_checksum(frame, cs, co)]
        return [frame]
    if gt not in (GSO_TCPV4, GSO_TCPV6) or gso_size == 0:
        raise ValueError(f"GSO type {gso_type} is not segmented here")
    l3 = 14
    while frame[l3 - 2 : l3] in _ETH_VLAN_TYPES:
        l3 += 4
    l4 = cs
    hlen = gso_head_len(gso_type, cs, frame)
    thl = hlen - l4
    v4 = gt == GSO_TCPV4
    if v4:
        if frame[l3] >> 4 != 4:
            raise ValueError("TCPV4 GSO without an IPv4 header")
        ihl = (frame[l3] & 15) * 4
        ip_id = _U16.unpack_from(frame, l3 + 4)[0]
        addrs = frame[l3 + 12 : l3 + 20]
    else:
        if frame[l3] >> 4 != 6:
            raise ValueError("TCPV6 GSO without an IPv6 header")
        ihl = 0
        ip_id = 0
        addrs = frame[l3 + 8 : l3 + 40]
    seq0 = _U32.unpack_from(frame, l4 + 4)[0]
    tcp_flags = frame[l4 + 13]
    head = bytearray(frame[:hlen])
    head[l4 + 16 : l4 + 18] = b"\0\0"
    payload = memoryview(frame)[hlen:]
    n = len(payload)
    out: list[bytes] = []
    off = 0
    i = 0
    while off < n or (n == 0 and i == 0):
        chunk = payload[off : off + gso_size]
        size = len(chunk)
        last = off + size >= n
        h = bytearray(head)
        _U32.pack_into(h, l4 + 4, (seq0 + off) & 0xFFFFFFFF)
        fl = tcp_flags
        if not last:
            fl &= ~(_TCP_FIN | _TCP_PSH)
        if off:
            fl &= ~_TCP_CWR
        h[l4 + 13] = fl
        if v4:
            _U16.pack_into(h, l3 + 2, hlen - l3 + size)
            _U16.pack_into(h, l3 + 4, (ip_id + i) & 0xFFFF)
            h[l3 + 10 : l3 + 12] = b"\0\0"
            _U16.pack_into(h, l3 + 10, checksum(h[l3 : l3 + ihl]))
            pseudo = addrs + struct.pack("!BBH", 0, 6, thl + size)
        else:
            _U16.pack_into(h, l3 + 4, hlen - l3 - 40 + size)
            pseudo = addrs + struct.pack("!I3xB", thl + size, 6)
        tcp = bytes(h[l4:]) + chunk
        _U16.pack_into(h, l4 + 16, checksum(pseudo + tcp))
        out.append(bytes(h) + chunk)
        off += size
        i += 1
        if size == 0:
            break
    return out


def _merge_fields(hlen: int) -> struct.Struct:
    """What must match in segments merged (``hlen`` bytes of headers): Ethernet,
    IP version/TOS; fragment, TTL, protocol; addresses and ports; the sequence
    (the one expected next); ACK number and data offset; flags; options."""
    return struct.Struct(f"!16s4x4s2x12sI5sB6x{hlen - 54}s")


_MERGE_FIELDS: dict[int, struct.Struct] = {}
# The fewest bytes a frame needs to start a merge (smaller ones, ACKs, go alone).
MERGE_MIN = 576
_MERGE_MAX_PAYLOAD = 65535 - 20 - 60  # IPv4 total length, the longest TCP header


class TcpMerge:
    """Consecutive real IPv4 TCP segments of one flow, all bound for one TAP port
    with virtio-net headers, written as one TCP GSO frame (software GRO).

    Only what the kernel's GRO would merge: no IP options or fragments, the same
    headers bar IP length/ID/checksum, TCP sequence, window and checksum; ACK
    only (PSH on the last); contiguous sequence; every segment but the last of
    the first one's size. The receiving kernel then takes one skb for many
    segments (and acknowledges them at once). Frames are not changed before
    ``flush``, which sends them: merged if more than one, else the frame itself.
    """

    __slots__ = ("port", "frames", "fields", "expect", "hlen", "mss", "total", "open")

    @classmethod
    def start(cls, port: object, f: bytes) -> TcpMerge | None:
        """A merge beginning with ``f``, or None when ``f`` cannot start one."""
        if (f[12] != 8 or f[13] != 0 or f[14] != 0x45 or f[23] != 6 or f[47] != 0x10
                or f[20] & 0x3F or f[21] or (f[16] << 8 | f[17]) + 14 != len(f)):
            return None
        hlen = 34 + (f[46] >> 4) * 4
        mss = len(f) - hlen
        if mss <= 0 or hlen < 54:
            return None
        fields = _MERGE_FIELDS.get(hlen)
        if fields is None:
            fields = _MERGE_FIELDS[hlen] = _merge_fields(hlen)
        e = fields.unpack_from(f)
        m = cls()
        m.port = port
        m.frames = [f]
        m.fields = fields
        m.expect = (e[0], e[1], e[2], (e[3] + mss) & 0xFFFFFFFF, e[4], 0x10, e[6])
        m.hlen = hlen
        m.mss = mss
        m.total = mss
        m.open = True
        return m

    def add(self, f: bytes) -> bool:
        """Take ``f`` as the next segment; False (nothing taken) when it does not fit."""
        if not self.open:
            return False
        n = len(f) - self.hlen
        if (n <= 0 or n > self.mss or self.total + n > _MERGE_MAX_PAYLOAD
                or (f[16] << 8 | f[17]) + 14 != len(f)):
            return False
        t = self.fields.unpack_from(f)
        e = self.expect
        if t != e:  # PSH may end the merge; nothing else may differ
            if t[5] != 0x18 or t[:5] != e[:5] or t[6] != e[6]:
                return False
            self.open = False
        self.frames.append(f)
        self.total += n
        if n < self.mss:
            self.open = False
        else:
            self.expect = (e[0], e[1], e[2], (e[3] + n) & 0xFFFFFFFF, e[4], 0x10, e[6])
        return True

    def flush(self) -> None:
        """Send what was taken to the port: one frame as it is, more as one."""
        port: Any = self.port
        frames = self.frames
        if len(frames) == 1:
            port.send(frames[0])
            return
        hlen = self.hlen
        last = frames[-1]
        h = bytearray(frames[0][:hlen])
        tcp_len = hlen - 34 + self.total
        _U16.pack_into(h, 16, 20 + tcp_len)
        h[24:26] = b"\0\0"
        _U16.pack_into(h, 24, checksum(h[14:34]))
        h[47] = last[47]
        h[48:50] = last[48:50]
        # CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not complemented
        _U16.pack_into(h, 50, 0xFFFF - checksum(h[26:34] + _U32.pack(6 << 16 | tcp_len)))
        vh = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, hlen, self.mss, 34, 16)
        port.send_vnet(vh, bytes(h), *[memoryview(f)[hlen:] for f in frames])


# What a malformed offloaded frame raises in the helpers above.
OFFLOAD_ERRORS = (ValueError, IndexError, struct.error)
