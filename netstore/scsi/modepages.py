# Mode parameters: the caching (08h), control (0Ah) and informational
# exceptions control (1Ch) pages, MODE SENSE data assembly (headers, block
# descriptors) and MODE SELECT parameter list checking (SPC-4 7.5, SBC-3 6.4).
"""Mode pages, mode parameter data and MODE SELECT parsing."""
from __future__ import annotations

import struct

from .sense import SAVING_NOT_SUPPORTED, ScsiError, cdb_error, param_error

CACHING_PAGE = 0x08
CONTROL_PAGE = 0x0A
INFO_EXCEPTIONS_PAGE = 0x1C
ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF

PC_CURRENT = 0
PC_CHANGEABLE = 1
PC_DEFAULT = 2
PC_SAVED = 3

WCE = 0x04  # caching page byte 2
WP = 0x80  # device-specific parameter: write protected
DPOFUA = 0x10  # device-specific parameter: DPO and FUA supported
LONGLBA = 0x01

SHORT_BLOCK_DESCRIPTOR_LEN = 8
LONG_BLOCK_DESCRIPTOR_LEN = 16
MODE6_HEADER_LEN = 4
MODE10_HEADER_LEN = 8
MAX_SHORT_BLOCKS = 0xFFFFFFFF  # short descriptor: 32-bit block count, saturates

_PS_SPF_MASK = 0x3F  # page code bits of a page's first byte
_SPF = 0x40


def caching_page(wce: bool) -> bytes:
    """Caching mode page, 20 bytes (SBC-3 6.4.5)."""
    b = bytearray(20)
    b[0], b[1] = CACHING_PAGE, 0x12
    if wce:
        b[2] = WCE
    return bytes(b)


# Control page byte 4: SWP, software write protect (SPC-4 7.5.8).
SWP = 0x08


def control_page(swp: bool = False) -> bytes:
    """Control mode page, 12 bytes (SPC-4 7.5.8): fixed sense, GLTSD,
    unrestricted reordering, unlimited busy timeout; SWP as given."""
    return bytes((CONTROL_PAGE, 0x0A, 0x02, 0x10, SWP if swp else 0, 0, 0, 0, 0xFF, 0xFF,
                  0, 0))


def info_exceptions_page() -> bytes:
    """Informational exceptions control page, 12 bytes: DEXCPT, nothing reported."""
    return bytes((INFO_EXCEPTIONS_PAGE, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def _changeable(page: bytes, swp_changeable: bool) -> bytes:
    b = bytearray(len(page))
    b[0], b[1] = page[0], page[1]
    if page[0] == CACHING_PAGE:
        b[2] = WCE
    elif page[0] == CONTROL_PAGE and swp_changeable:
        b[4] = SWP
    return bytes(b)


def pages_for(page_code: int, pc: int, wce: bool, default_wce: bool,
              extra: dict[int, bytes] | None = None, *, swp: bool = False,
              swp_changeable: bool = False) -> bytes:
    """The mode page(s) `page_code` for page control `pc`.

    Raises:
        ScsiError: unsupported page (INVALID FIELD IN CDB, byte 2) or saved
            values (SAVING PARAMETERS NOT SUPPORTED).
    """
    if pc == PC_SAVED:
        raise ScsiError(SAVING_NOT_SUPPORTED)
    cache_wce = default_wce if pc == PC_DEFAULT else wce
    control_swp = swp and pc == PC_CURRENT
    builders = {
        CACHING_PAGE: lambda: caching_page(cache_wce),
        CONTROL_PAGE: lambda: control_page(control_swp),
        INFO_EXCEPTIONS_PAGE: info_exceptions_page,
    }
    for code, page in (extra or {}).items():  # device-type pages (MMC 2Ah)
        builders[code] = lambda page=page: page
    if page_code == ALL_PAGES:
        pages = [builders[c]() for c in sorted(builders)]
    elif page_code in builders:
        pages = [builders[page_code]()]
    else:
        raise cdb_error(2, 5)
    if pc == PC_CHANGEABLE:
        pages = [_changeable(p, swp_changeable) for p in pages]
    return b"".join(pages)


def block_descriptor(num_blocks: int, block_size: int, long: bool) -> bytes:
    """A short (8-byte) or long (16-byte) LBA mode parameter block descriptor
    (SBC-3 6.4.2); the short one's 32-bit block count saturates."""
    if long:
        return struct.pack(">Q4xI", num_blocks, block_size)
    return struct.pack(">IxBH", min(num_blocks, MAX_SHORT_BLOCKS), block_size >> 16,
                       block_size & 0xFFFF)


def mode_parameters(pages: bytes, *, ten: bool, dbd: bool, long: bool, num_blocks: int,
                    block_size: int, read_only: bool) -> bytes:
    """MODE SENSE(6) or (10) parameter data: header, block descriptor
    (unless DBD; the long one with LLBAA in MODE SENSE(10)), `pages`."""
    bd = b"" if dbd else block_descriptor(num_blocks, block_size, long)
    devspec = device_specific(read_only)
    if ten:
        total = MODE10_HEADER_LEN + len(bd) + len(pages)
        header = struct.pack(">HBBBxH", total - 2, 0, devspec, LONGLBA if long and bd else 0,
                             len(bd))
    else:
        total = MODE6_HEADER_LEN + len(bd) + len(pages)
        header = struct.pack(">BBBB", total - 1, 0, devspec, len(bd))
    return header + bd + pages


def device_specific(read_only: bool) -> int:
    """Device-specific parameter byte of the mode parameter header."""
    return DPOFUA | (WP if read_only else 0)


def parse_mode_select(
    params: bytes | memoryview, header_len: int, *, wce: bool, block_size: int,
    swp: bool = False, swp_changeable: bool = False,
) -> tuple[bool, bool]:
    """Check a MODE SELECT parameter list and return the new (WCE, SWP).

    Only the caching page's WCE bit and (when changeable) the control page's
    SWP bit may change; every other page must equal its current value.
    Nothing is applied unless the whole list is valid.

    Raises:
        ScsiError: INVALID FIELD IN PARAMETER LIST pointing at the offending byte.
    """
    p = bytes(params)
    if len(p) < header_len:
        raise param_error(0)
    if header_len == MODE6_HEADER_LEN:
        bd_len = p[3]
    else:
        bd_len = struct.unpack_from(">H", p, 6)[0]
    pos = header_len
    if bd_len:
        long = header_len == MODE10_HEADER_LEN and bool(p[4] & LONGLBA)
        size = LONG_BLOCK_DESCRIPTOR_LEN if long else SHORT_BLOCK_DESCRIPTOR_LEN
        if bd_len % size or pos + bd_len > len(p):
            raise param_error(header_len - 1 if header_len == MODE6_HEADER_LEN else 6)
        for off in range(pos, pos + bd_len, size):
            blen_off = off + (12 if long else 4)
            blen = struct.unpack_from(">I", p, blen_off)[0] & (
                0xFFFFFFFF if long else 0xFFFFFF
            )
            if blen != block_size:
                raise param_error(blen_off)
        pos += bd_len
    new_wce = wce
    new_swp = swp
    current = {
        CONTROL_PAGE: control_page(swp),
        INFO_EXCEPTIONS_PAGE: info_exceptions_page(),
    }
    while pos < len(p):
        if pos + 2 > len(p):
            raise param_error(pos)
        code = p[pos] & _PS_SPF_MASK
        if p[pos] & _SPF:
            raise param_error(pos, 6)
        length = p[pos + 1] + 2
        page = p[pos:pos + length]
        if len(page) < length:
            raise param_error(pos + 1)
        if code == CACHING_PAGE:
            ref = caching_page(wce)
            if length != len(ref):
                raise param_error(pos + 1)
            for i in range(2, length):
                mask = 0xFF & ~WCE if i == 2 else 0xFF
                if (page[i] ^ ref[i]) & mask:
                    raise param_error(pos + i)
            new_wce = bool(page[2] & WCE)
        elif code in current:
            ref = current[code]
            if length != len(ref):
                raise param_error(pos + 1)
            for i in range(2, length):
                mask = 0xFF & ~SWP if (code == CONTROL_PAGE and i == 4 and swp_changeable) \
                    else 0xFF
                if (page[i] ^ ref[i]) & mask:
                    raise param_error(pos + i)
            if code == CONTROL_PAGE and swp_changeable:
                new_swp = bool(page[4] & SWP)
        else:
            raise param_error(pos, 5)
        pos += length
    return new_wce, new_swp
