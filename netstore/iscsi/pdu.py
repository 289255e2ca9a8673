# The iSCSI PDU codec (RFC 7143 section 11): opcodes, the incremental reader
# that cuts a byte stream into PDUs, and builders for every PDU a target sends.
# Pure: bytes in, bytes out; no sockets.
"""iSCSI PDU codec.

A PDU is a 48-byte Basic Header Segment (BHS), optional Additional Header
Segments (AHS), an optional header digest, a data segment padded to 4 bytes
and an optional data digest (RFC 7143 11.1).  :class:`PduReader` parses as many
PDUs as a buffer holds so that the connection loop can answer them all with
one send; the ``build_*`` functions produce the target's PDUs as lists of
buffers ready for ``sendmsg`` so that read data is never copied again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c as _crc32c

# -- opcodes (RFC 7143 11.2.1.2) -------------------------------------------
OP_NOP_OUT = 0x00
OP_SCSI_CMD = 0x01
OP_TASK_MGMT_REQ = 0x02
OP_LOGIN_REQ = 0x03
OP_TEXT_REQ = 0x04
OP_DATA_OUT = 0x05
OP_LOGOUT_REQ = 0x06
OP_SNACK = 0x10

OP_NOP_IN = 0x20
OP_SCSI_RSP = 0x21
OP_TASK_MGMT_RSP = 0x22
OP_LOGIN_RSP = 0x23
OP_TEXT_RSP = 0x24
OP_DATA_IN = 0x25
OP_LOGOUT_RSP = 0x26
OP_R2T = 0x31
OP_ASYNC = 0x32
OP_REJECT = 0x3F

INITIATOR_OPCODES = frozenset(
    {OP_NOP_OUT, OP_SCSI_CMD, OP_TASK_MGMT_REQ, OP_LOGIN_REQ, OP_TEXT_REQ, OP_DATA_OUT,
     OP_LOGOUT_REQ, OP_SNACK}
)

OPCODE_NAMES = {
    OP_NOP_OUT: "NOP-Out", OP_SCSI_CMD: "SCSI Command", OP_TASK_MGMT_REQ: "Task Management",
    OP_LOGIN_REQ: "Login", OP_TEXT_REQ: "Text", OP_DATA_OUT: "Data-Out",
    OP_LOGOUT_REQ: "Logout", OP_SNACK: "SNACK",
}

# -- flags --------------------------------------------------------------------
FLAG_IMMEDIATE = 0x40  # byte 0: the I bit
FLAG_FINAL = 0x80  # byte 1: the F bit (T bit in login)
FLAG_CONTINUE = 0x40  # byte 1 of Login/Text: the C bit
CMD_READ = 0x40  # byte 1 of SCSI Command: R
CMD_WRITE = 0x20  # byte 1 of SCSI Command: W
TASK_ATTR_MASK = 0x07  # byte 1 of SCSI Command: ATTR (RFC 7143 11.3.1)
# Untagged and SIMPLE tasks may complete in any order (SAM-5 8.6); ORDERED,
# HEAD OF QUEUE and ACA ones keep their place.
UNORDERED_TASK_ATTRS = (0, 1)
DATA_ACK = 0x40  # byte 1 of Data-In: A
DATA_STATUS = 0x01  # byte 1 of Data-In: S
RESID_OVERFLOW = 0x04  # byte 1 of SCSI Response / Data-In: O
RESID_UNDERFLOW = 0x02  # byte 1 of SCSI Response / Data-In: U

RESERVED_TAG = 0xFFFFFFFF  # ITT/TTT meaning "none" (RFC 7143 11.2.1.8)

# -- limits ------------------------------------------------------------------
BHS_LEN = 48
DIGEST_LEN = 4
# DataSegmentLength is 24 bits, but no negotiated MaxRecvDataSegmentLength may
# exceed 2**24-1 (RFC 7143 13.12); the reader enforces the negotiated value.
MAX_DATA_SEGMENT = (1 << 24) - 1
# Login PDUs are limited to 8192 bytes of data before MaxRecvDataSegmentLength
# is negotiated (RFC 7143 13.12: the default value applies during login).
LOGIN_MAX_DATA_SEGMENT = 8192
# TotalAHSLength counts 4-byte words in one byte: at most 1020 bytes.
MAX_AHS_LEN = 255 * 4

# Reject reasons (RFC 7143 11.17.1)
REJECT_DATA_DIGEST = 0x02
REJECT_SNACK = 0x03
REJECT_PROTOCOL_ERROR = 0x04
REJECT_NOT_SUPPORTED = 0x05
REJECT_IMMEDIATE = 0x06
REJECT_TASK_IN_PROGRESS = 0x07
REJECT_INVALID_DATA_ACK = 0x08
REJECT_INVALID_FIELD = 0x09
REJECT_OUT_OF_RESOURCES = 0x0A
REJECT_WAITING_FOR_LOGOUT = 0x0C

_BHS = struct.Struct(">BBBBB3s8sI28s")
_U32 = struct.Struct(">I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more: the connection must close.

    Raised for a BHS whose lengths lie, a data segment above the negotiated
    maximum, a header digest mismatch.  The message says what was wrong.
    """


class DataDigestError(Exception):
    """A PDU arrived intact except for its data digest (RFC 7143 7.8: reject it)."""

    def __init__(self, pdu: Pdu) -> None:
        super().__init__(f"data digest mismatch in {OPCODE_NAMES.get(pdu.opcode, hex(pdu.opcode))} PDU")
        self.pdu = pdu


# The iSCSI CRC32C (Castagnoli) of bytes-like data, as an int (the C function
# itself: the fast path calls it per PDU).
crc32c = _crc32c.crc32c


# A digest as it goes on the wire (least significant byte first, see digest_bytes):
# DIGEST_WIRE.pack(crc32c(x)) == digest_bytes(x), DIGEST_WIRE.unpack_from(buf, off)
# reads one; the fast path uses these (one call each, no list of parts).
DIGEST_WIRE = struct.Struct("<I")


def digest_bytes(*parts: bytes | bytearray | memoryview) -> bytes:
    """The 4-byte digest of the concatenation of ``parts``, as it goes on the wire.

    RFC 7143 11.1 and Appendix B: the CRC is sent least significant byte first
    (it is little-endian on the wire), unlike every other field.
    """
    crc = 0
    for part in parts:
        crc = _crc32c.crc32c(part, crc)
    return crc.to_bytes(4, "little")


@dataclass(slots=True)
class Pdu:
    """One received PDU: its BHS (48 bytes), AHS bytes and data segment (unpadded)."""

    bhs: bytes
    ahs: bytes
    data: bytes

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & FLAG_IMMEDIATE)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def itt(self) -> int:
        return _U32.unpack_from(self.bhs, 16)[0]

    def u32(self, offset: int) -> int:
        """The big-endian 32-bit field at ``offset`` of the BHS."""
        return _U32.unpack_from(self.bhs, offset)[0]

    @property
    def lun(self) -> int:
        return decode_lun(self.bhs[8:16])


def decode_lun(raw: bytes) -> int:
    """LUN number from the 8-byte SAM LUN field (peripheral and flat addressing)."""
    method = raw[0] >> 6
    if method in (0, 1):  # peripheral device / flat space addressing (SAM-5 4.7)
        return ((raw[0] & 0x3F) << 8) | raw[1]
    return 0xFFFF_FFFF  # an addressing method we do not use: matches no LUN


class PduReader:
    """Cuts a byte stream into PDUs.

    Feed received bytes with :meth:`feed`; :meth:`next` returns the next
    complete PDU or ``None`` when more bytes are needed.  Digests and the data
    segment limit change after login (``header_digest``, ``data_digest``,
    ``max_data``).
    """

    __slots__ = ("_buf", "_pos", "header_digest", "data_digest", "max_data")

    def __init__(self, max_data: int = LOGIN_MAX_DATA_SEGMENT) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.header_digest = False
        self.data_digest = False
        self.max_data = max_data

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._pos and self._pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as PDUs."""
        return len(self._buf) - self._pos

    def next(self) -> Pdu | None:
        """The next complete PDU, or None.

        Raises:
            ProtocolError: the stream is broken (the caller closes the
                connection; the reader is not usable afterwards).
            DataDigestError: a PDU whose data digest is wrong; the PDU has been
                consumed and the stream stays in sync, so the caller may
                reject it and go on.
        """
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < BHS_LEN:
            return None
        op = buf[pos] & 0x3F
        ahs_len = buf[pos + 4] * 4
        dlen = (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
        # Unknown opcodes are cut by the same length rules: the caller rejects
        # them (RFC 7143 11.17) once the length field has been found sane.
        limit = LOGIN_MAX_DATA_SEGMENT if op == OP_LOGIN_REQ else self.max_data
        if dlen > limit:
            raise ProtocolError(
                f"{OPCODE_NAMES.get(op, f'opcode {op:#04x}')} PDU announces a {dlen}-byte data "
                f"segment, above the negotiated MaxRecvDataSegmentLength {limit}"
            )
        hd = DIGEST_LEN if self.header_digest else 0
        dd = DIGEST_LEN if (self.data_digest and dlen) else 0
        header_end = BHS_LEN + ahs_len
        total = header_end + hd + ((dlen + 3) & ~3) + dd
        if avail < total:
            return None
        mv = memoryview(buf)
        try:
            if hd:
                got = bytes(mv[pos + header_end : pos + header_end + hd])
                if got != digest_bytes(mv[pos : pos + header_end]):
                    raise ProtocolError("header digest mismatch")
            bhs = bytes(mv[pos : pos + BHS_LEN])
            ahs = bytes(mv[pos + BHS_LEN : pos + header_end]) if ahs_len else b""
            dstart = pos + header_end + hd
            data = bytes(mv[dstart : dstart + dlen]) if dlen else b""
            if dd:
                padded = mv[dstart : dstart + ((dlen + 3) & ~3)]
                got = bytes(mv[pos + total - DIGEST_LEN : pos + total])
                bad = got != digest_bytes(padded)
            else:
                bad = False
        finally:
            mv.release()
        self._pos = pos + total
        pdu = Pdu(bhs, ahs, data)
        if bad:
            raise DataDigestError(pdu)
        return pdu


# -- builders ------------------------------------------------------------------
# Each builder returns the BHS as a bytearray; `frame` adds digests and padding
# and returns the list of buffers to send.

def frame(bhs: bytearray, data: bytes | memoryview = b"", *, header_digest: bool = False,
          data_digest: bool = False) -> list[bytes | bytearray | memoryview]:
    """Wire buffers for one PDU: BHS (+digest), data (+padding, +digest).

    Sets the DataSegmentLength field of ``bhs`` from ``data``.
    """
    dlen = len(data)
    bhs[5] = (dlen >> 16) & 0xFF
    bhs[6] = (dlen >> 8) & 0xFF
    bhs[7] = dlen & 0xFF
    if header_digest:
        bhs += digest_bytes(bhs)
    if not dlen:
        return [bhs]
    pad = _PAD[dlen & 3]
    if data_digest:
        return [bhs, data, pad + digest_bytes(data, pad)] if pad else [bhs, data, digest_bytes(data)]
    return [bhs, data, pad] if pad else [bhs, data]


def _bhs(opcode: int, flags: int) -> bytearray:
    b = bytearray(BHS_LEN)
    b[0] = opcode
    b[1] = flags
    return b


_SEQ = struct.Struct(">III")  # StatSN, ExpCmdSN, MaxCmdSN at offset 24


def build_scsi_response(itt: int, status: int, sense: bytes, statsn: int, expcmdsn: int,
                        maxcmdsn: int, *, expdatasn: int = 0, resid_flags: int = 0,
                        residual: int = 0, response: int = 0) -> tuple[bytearray, bytes]:
    """SCSI Response (RFC 7143 11.4): BHS and data segment (sense with its length)."""
    b = _bhs(OP_SCSI_RSP, FLAG_FINAL | resid_flags)
    b[2] = response
    b[3] = status
    _U32.pack_into(b, 16, itt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    _U32.pack_into(b, 36, expdatasn)
    _U32.pack_into(b, 44, residual)
    data = (len(sense).to_bytes(2, "big") + sense) if sense else b""
    return b, data


_DATA_IN = struct.Struct(">8sIIIIIIII")  # LUN .. residual, from offset 8


def build_data_in(itt: int, lun: bytes, datasn: int, offset: int, *, final: bool,
                  status: int | None, statsn: int, expcmdsn: int, maxcmdsn: int,
                  resid_flags: int = 0, residual: int = 0) -> bytearray:
    """Data-In BHS (RFC 7143 11.7); ``status`` not None puts the S bit and status in it."""
    flags = FLAG_FINAL if final else 0
    if status is not None:
        flags |= DATA_STATUS | resid_flags | FLAG_FINAL
    b = _bhs(OP_DATA_IN, flags)
    if status is not None:
        b[3] = status
    else:
        statsn = 0
        residual = 0
    _DATA_IN.pack_into(b, 8, lun, itt, RESERVED_TAG, statsn, expcmdsn, maxcmdsn, datasn,
                       offset, residual)
    return b


def build_r2t(itt: int, lun: bytes, ttt: int, statsn: int, expcmdsn: int, maxcmdsn: int,
              r2tsn: int, offset: int, length: int) -> bytearray:
    """Ready To Transfer (RFC 7143 11.8)."""
    b = _bhs(OP_R2T, FLAG_FINAL)
    _DATA_IN.pack_into(b, 8, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, offset, length)
    return b


def build_nop_in(itt: int, ttt: int, lun: bytes, statsn: int, expcmdsn: int,
                 maxcmdsn: int) -> bytearray:
    """NOP-In (RFC 7143 11.19): an answer (ITT set) or a ping (TTT set)."""
    b = _bhs(OP_NOP_IN, FLAG_FINAL)
    b[8:16] = lun
    _U32.pack_into(b, 16, itt)
    _U32.pack_into(b, 20, ttt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    return b


def build_task_mgmt_response(itt: int, response: int, statsn: int, expcmdsn: int,
                             maxcmdsn: int) -> bytearray:
    """Task Management Function Response (RFC 7143 11.6)."""
    b = _bhs(OP_TASK_MGMT_RSP, FLAG_FINAL)
    b[2] = response
    _U32.pack_into(b, 16, itt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    return b


def build_text_response(itt: int, ttt: int, final: bool, cont: bool, statsn: int,
                        expcmdsn: int, maxcmdsn: int) -> bytearray:
    """Text Response (RFC 7143 11.11)."""
    b = _bhs(OP_TEXT_RSP, (FLAG_FINAL if final else 0) | (FLAG_CONTINUE if cont else 0))
    _U32.pack_into(b, 16, itt)
    _U32.pack_into(b, 20, ttt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    return b


def build_login_response(*, transit: bool, cont: bool, csg: int, nsg: int, version_max: int,
                         version_active: int, isid: bytes, tsih: int, itt: int, statsn: int,
                         expcmdsn: int, maxcmdsn: int, status_class: int,
                         status_detail: int) -> bytearray:
    """Login Response (RFC 7143 11.13)."""
    flags = (FLAG_FINAL if transit else 0) | (FLAG_CONTINUE if cont else 0) | (csg << 2) | nsg
    b = _bhs(OP_LOGIN_RSP, flags)
    b[2] = version_max
    b[3] = version_active
    b[8:14] = isid
    b[14:16] = tsih.to_bytes(2, "big")
    _U32.pack_into(b, 16, itt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    b[36] = status_class
    b[37] = status_detail
    return b


def build_logout_response(itt: int, response: int, statsn: int, expcmdsn: int, maxcmdsn: int,
                          time2wait: int = 0, time2retain: int = 0) -> bytearray:
    """Logout Response (RFC 7143 11.15)."""
    b = _bhs(OP_LOGOUT_RSP, FLAG_FINAL)
    b[2] = response
    _U32.pack_into(b, 16, itt)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    struct.pack_into(">HH", b, 40, time2wait, time2retain)
    return b


def build_reject(reason: int, rejected_bhs: bytes, statsn: int, expcmdsn: int,
                 maxcmdsn: int, datasn: int = 0) -> tuple[bytearray, bytes]:
    """Reject (RFC 7143 11.17): the data segment is the rejected PDU's header."""
    b = _bhs(OP_REJECT, FLAG_FINAL)
    b[2] = reason
    _U32.pack_into(b, 16, RESERVED_TAG)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    _U32.pack_into(b, 36, datasn)
    return b, bytes(rejected_bhs[:BHS_LEN])


ASYNC_SCSI_EVENT = 0  # a SCSI asynchronous event; sense data in the data segment
ASYNC_LOGOUT_REQUEST = 1  # the target asks the initiator to log out
ASYNC_DROP_CONNECTION = 2
ASYNC_DROP_ALL = 3
ASYNC_RENEGOTIATE = 4


def build_async_message(event: int, statsn: int, expcmdsn: int, maxcmdsn: int, *,
                        lun: bytes = bytes(8), param1: int = 0, param2: int = 0,
                        param3: int = 0) -> bytearray:
    """Asynchronous Message (RFC 7143 11.9)."""
    b = _bhs(OP_ASYNC, FLAG_FINAL)
    b[8:16] = lun
    _U32.pack_into(b, 16, RESERVED_TAG)
    _SEQ.pack_into(b, 24, statsn, expcmdsn, maxcmdsn)
    b[36] = event
    struct.pack_into(">HHH", b, 38, param1, param2, param3)
    return b
