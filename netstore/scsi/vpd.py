# INQUIRY data: the standard INQUIRY response and the vital product data
# pages 00h, 80h, 83h, 86h, B0h, B1h, B2h (SPC-4 6.6, 7.8; SBC-3 6.5).
"""Standard INQUIRY data and the VPD pages."""
from __future__ import annotations

import struct
from collections.abc import Callable

from .limits import (
    MAX_COMPARE_AND_WRITE_BLOCKS,
    MAX_TRANSFER_BYTES,
    MAX_UNMAP_BLOCKS,
    MAX_UNMAP_DESCRIPTORS,
    MAX_WRITE_SAME_BYTES,
    OPTIMAL_GRANULARITY_BYTES,
    UNMAP_GRANULARITY_BYTES,
)

STANDARD_INQUIRY_LEN = 96
# SPC-4 version descriptors (SPC-4 table 146), "no version claimed" codes.
VERSION_DESCRIPTORS = (
    0x00A0,  # SAM-5
    0x0960,  # iSCSI
    0x0460,  # SPC-4
    0x04C0,  # SBC-3
)
SPC4_VERSION = 0x06
RESPONSE_DATA_FORMAT = 0x02
HISUP = 0x10
CMDQUE = 0x02
RMB = 0x80  # byte 1: removable medium
TPGS_IMPLICIT = 0x10  # byte 5: implicit ALUA only (REPORT TARGET PORT GROUPS)
PQ_NOT_CONNECTABLE = 0x60  # peripheral qualifier 011b
DEVICE_TYPE_DISK = 0x00  # direct access block device (SBC)
DEVICE_TYPE_UNKNOWN = 0x1F

# Protocol identifier for iSCSI (SPC-4 table 362).
PROTOCOL_ISCSI = 0x5
CODE_SET_BINARY = 0x1
CODE_SET_ASCII = 0x2
CODE_SET_UTF8 = 0x3
ASSOC_LU = 0x00
ASSOC_TARGET_PORT = 0x10
DESIG_T10_VENDOR = 0x1
DESIG_NAA = 0x3
DESIG_RELATIVE_PORT = 0x4
DESIG_PORT_GROUP = 0x5
DESIG_SCSI_NAME = 0x8
PIV = 0x80

NON_ROTATING = 0x0001  # medium rotation rate (SBC-3 table 182)
# Logical block provisioning VPD (SBC-4 6.6.6) byte 5 and provisioning types.
LBPU = 0x80
LBPWS = 0x40
LBPWS10 = 0x20
LBPRZ_VPD = 0x04
PROVISIONING_FULL = 0x0
PROVISIONING_THIN = 0x2
# Page length of fixed-size VPD pages 86h, B0h, B1h.
LONG_PAGE_LEN = 0x3C


def _pad(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def standard_inquiry(
    device_type: int, vendor: str, product: str, revision: str, *, connected: bool = True,
    removable: bool = False, version_descriptors: tuple[int, ...] = VERSION_DESCRIPTORS,
) -> bytes:
    """Standard INQUIRY data, 96 bytes (SPC-4 6.6.2); RMB set for a
    removable medium."""
    b = bytearray(STANDARD_INQUIRY_LEN)
    b[0] = (device_type & 0x1F) if connected else (PQ_NOT_CONNECTABLE | DEVICE_TYPE_UNKNOWN)
    if removable:
        b[1] = RMB
    b[2] = SPC4_VERSION
    b[3] = HISUP | RESPONSE_DATA_FORMAT
    b[4] = STANDARD_INQUIRY_LEN - 5
    if connected:
        b[5] = TPGS_IMPLICIT
    b[7] = CMDQUE
    b[8:16] = _pad(vendor, 8)
    b[16:32] = _pad(product, 16)
    b[32:36] = _pad(revision, 4)
    struct.pack_into(f">{len(version_descriptors)}H", b, 58, *version_descriptors)
    return bytes(b)


def _page(device_type: int, code: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", device_type & 0x1F, code, len(payload)) + payload


def _designator(proto_codeset: int, piv_assoc_type: int, value: bytes) -> bytes:
    return struct.pack(">BBxB", proto_codeset, piv_assoc_type, len(value)) + value


def target_port_name(target_name: str, tpgt: int) -> str:
    """iSCSI target port name (RFC 7143 13.26 / SPC-4 annex): name,t,0xTPGT."""
    return f"{target_name},t,0x{tpgt:04x}"


class VpdSource:
    """What the VPD pages describe: fields of one logical unit."""

    __slots__ = (
        "device_type", "vendor", "serial", "naa", "target_name",
        "relative_port", "port_group", "block_size", "has_volatile_cache", "thin",
    )

    def __init__(
        self, *, device_type: int, vendor: str, serial: str, naa: bytes, target_name: str,
        relative_port: int, port_group: int, block_size: int, has_volatile_cache: bool,
        thin: bool = False,
    ) -> None:
        self.device_type = device_type
        self.vendor = vendor
        self.serial = serial
        self.naa = naa
        self.target_name = target_name
        self.relative_port = relative_port
        self.port_group = port_group
        self.block_size = block_size
        self.has_volatile_cache = has_volatile_cache
        self.thin = thin


def supported_pages(src: VpdSource) -> bytes:
    """VPD 00h: the list of supported pages, ascending."""
    return _page(src.device_type, 0x00, bytes(sorted(PAGES)))


def unit_serial_number(src: VpdSource) -> bytes:
    """VPD 80h: unit serial number, ASCII."""
    return _page(src.device_type, 0x80, src.serial.encode("ascii", "replace"))


def device_identification(src: VpdSource) -> bytes:
    """VPD 83h: NAA, T10 vendor ID, relative target port, target port group
    and SCSI name string of the target port designators."""
    naa = src.naa
    t10 = _pad(src.vendor, 8) + src.serial.encode("ascii", "replace")
    name = target_port_name(src.target_name, src.relative_port).encode("utf-8") + b"\0"
    name += bytes(-len(name) % 4)  # SPC-4 7.8.6.11: null-terminated, multiple of 4
    proto = PROTOCOL_ISCSI << 4
    payload = b"".join((
        _designator(CODE_SET_BINARY, ASSOC_LU | DESIG_NAA, naa),
        _designator(CODE_SET_ASCII, ASSOC_LU | DESIG_T10_VENDOR, t10),
        _designator(proto | CODE_SET_BINARY, PIV | ASSOC_TARGET_PORT | DESIG_RELATIVE_PORT,
                    struct.pack(">xxH", src.relative_port)),
        _designator(proto | CODE_SET_BINARY, PIV | ASSOC_TARGET_PORT | DESIG_PORT_GROUP,
                    struct.pack(">xxH", src.port_group)),
        _designator(proto | CODE_SET_UTF8, PIV | ASSOC_TARGET_PORT | DESIG_SCSI_NAME, name),
    ))
    return _page(src.device_type, 0x83, payload)


def extended_inquiry(src: VpdSource) -> bytes:
    """VPD 86h: extended INQUIRY data (SPC-4 7.8.7)."""
    b = bytearray(LONG_PAGE_LEN)
    b[1] = 0x07  # HEADSUP, ORDSUP, SIMPSUP: task attributes accepted
    b[2] = 0x01 if src.has_volatile_cache else 0x00  # V_SUP
    b[3] = 0x01  # LUICLR: SPC-4 requires it set
    b[9] = 18  # maximum supported sense data length
    return _page(src.device_type, 0x86, bytes(b))


def block_limits(src: VpdSource) -> bytes:
    """VPD B0h: block limits (SBC-3 6.5.3)."""
    max_blocks = MAX_TRANSFER_BYTES // src.block_size
    gran = max(1, OPTIMAL_GRANULARITY_BYTES // src.block_size)
    b = bytearray(LONG_PAGE_LEN)
    # WSNZ: fully provisioned units refuse WRITE SAME of 0 blocks; thin ones
    # take it as "through the last LBA" (unmapping a tail in one command).
    b[0] = 0x00 if src.thin else 0x01
    b[1] = MAX_COMPARE_AND_WRITE_BLOCKS
    struct.pack_into(">HII", b, 2, gran, max_blocks, max_blocks)
    if src.thin:
        # MAXIMUM UNMAP LBA COUNT, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT,
        # OPTIMAL UNMAP GRANULARITY; alignment not reported (UGAVALID 0).
        unmap_gran = max(1, UNMAP_GRANULARITY_BYTES // src.block_size)
        struct.pack_into(">III", b, 16, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, unmap_gran)
    # MAXIMUM WRITE SAME LENGTH; MAXIMUM ATOMIC TRANSFER LENGTH (WRITE
    # ATOMIC(16)), no alignment or granularity, no atomic boundaries.
    struct.pack_into(">QI", b, 32, MAX_WRITE_SAME_BYTES // src.block_size, max_blocks)
    return _page(src.device_type, 0xB0, bytes(b))


def block_device_characteristics(src: VpdSource) -> bytes:
    """VPD B1h: medium rotation rate 1 (non-rotating); on thin units
    WABEREQ 01b: a read after SANITIZE BLOCK ERASE returns (zero) data."""
    b = bytearray(LONG_PAGE_LEN)
    struct.pack_into(">H", b, 0, NON_ROTATING)
    if src.thin:
        b[3] = 0x40
    return _page(src.device_type, 0xB1, bytes(b))


def logical_block_provisioning(src: VpdSource) -> bytes:
    """VPD B2h (SBC-4 6.6.6): a thin logical unit has UNMAP, WRITE SAME
    10/16 with UNMAP, and unmapped blocks read as zeros; a fully provisioned
    one reports none of them."""
    if not src.thin:
        return _page(src.device_type, 0xB2, bytes((0, 0, PROVISIONING_FULL, 0)))
    flags = LBPU | LBPWS | LBPWS10 | LBPRZ_VPD
    return _page(src.device_type, 0xB2, bytes((0, flags, PROVISIONING_THIN, 0)))


PAGES: dict[int, Callable[[VpdSource], bytes]] = {
    0x00: supported_pages,
    0x80: unit_serial_number,
    0x83: device_identification,
    0x86: extended_inquiry,
    0xB0: block_limits,
    0xB1: block_device_characteristics,
    0xB2: logical_block_provisioning,
}
