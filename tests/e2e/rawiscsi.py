"""A minimal hand-rolled iSCSI initiator over a plain socket (RFC 7143), for tests.

Independent of netstore's own codec on purpose: it builds every BHS with
struct, so the garbage tests do not share the daemon's bugs. Blocking socket,
every receive bounded by a timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field

import crc32c as _crc32c

# Initiator opcodes
NOP_OUT, SCSI_CMD, TMF_REQ, LOGIN_REQ, TEXT_REQ, DATA_OUT, LOGOUT_REQ, SNACK = (
    0x00,
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x10,
)
# Target opcodes
NOP_IN, SCSI_RSP, TMF_RSP, LOGIN_RSP, TEXT_RSP, DATA_IN, LOGOUT_RSP, R2T, ASYNC, REJECT = (
    0x20,
    0x21,
    0x22,
    0x23,
    0x24,
    0x25,
    0x26,
    0x31,
    0x32,
    0x3F,
)


def digest(data: bytes) -> bytes:
    """CRC32C as iSCSI sends it: little-endian (RFC 7143 B.4: 32 zero bytes -> aa 36 91 8a)."""
    return _crc32c.crc32c(data).to_bytes(4, "little")


assert digest(bytes(32)) == bytes.fromhex("aa36918a")


def pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def text_keys(pairs: dict[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def parse_keys(data: bytes) -> dict[str, str]:
    out = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, _, v = item.partition(b"=")
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def bhs(
    opcode: int,
    flags: int = 0,
    *,
    immediate: bool = False,
    b2: int = 0,
    b3: int = 0,
    ahs_len: int = 0,
    dlen: int = 0,
    lun_or_isid: bytes = bytes(8),
    itt: int = 0,
    rest: bytes = bytes(28),
) -> bytes:
    """A 48-byte BHS; `rest` is bytes 20..47."""
    assert len(lun_or_isid) == 8 and len(rest) == 28
    return (
        bytes([opcode | (0x40 if immediate else 0), flags, b2, b3, ahs_len])
        + dlen.to_bytes(3, "big")
        + lun_or_isid
        + struct.pack(">I", itt)
        + rest
    )


@dataclass
class PDU:
    opcode: int
    header: bytes
    data: bytes

    @property
    def flags(self) -> int:
        return self.header[1]

    def u32(self, off: int) -> int:
        return struct.unpack_from(">I", self.header, off)[0]

    @property
    def itt(self) -> int:
        return self.u32(16)

    @property
    def statsn(self) -> int:
        return self.u32(24)

    @property
    def expcmdsn(self) -> int:
        return self.u32(28)

    @property
    def maxcmdsn(self) -> int:
        return self.u32(32)

    def __repr__(self) -> str:
        return f"PDU(opcode={self.opcode:#04x}, flags={self.flags:#04x}, dlen={len(self.data)})"


class Closed(Exception):
    """The target closed the connection."""


@dataclass
class Conn:
    sock: socket.socket
    header_digest: bool = False
    data_digest: bool = False
    itt: int = 1
    cmdsn: int = 1
    expstatsn: int = 0
    maxcmdsn: int = 1
    tsih: int = 0
    isid: bytes = field(default_factory=lambda: bytes([0x80]) + os.urandom(5))
    negotiated: dict[str, str] = field(default_factory=dict)

    @classmethod
    def connect(cls, port: int, timeout: float = 10.0) -> Conn:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- wire ------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, header: bytes, data: bytes = b"") -> None:
        out = header
        if self.header_digest:
            out += digest(header)
        if data:
            out += pad4(data)
            if self.data_digest:
                out += digest(pad4(data))
        self.sock.sendall(out)

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete PDU within the timeout ({len(buf)}/{n} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed("connection reset") from e
            if not chunk:
                raise Closed(f"connection closed after {len(buf)}/{n} bytes")
            buf += chunk
        return bytes(buf)

    def recv(self, timeout: float = 10.0) -> PDU:
        deadline = time.monotonic() + timeout
        h = self._recv_exact(48, deadline)
        ahs = self._recv_exact(h[4] * 4, deadline) if h[4] else b""
        if self.header_digest:
            d = self._recv_exact(4, deadline)
            assert d == digest(h + ahs), "bad header digest from the target"
        dlen = int.from_bytes(h[5:8], "big")
        data = b""
        if dlen:
            padded = self._recv_exact(dlen + (-dlen % 4), deadline)
            if self.data_digest:
                d = self._recv_exact(4, deadline)
                assert d == digest(padded), "bad data digest from the target"
            data = padded[:dlen]
        pdu = PDU(h[0] & 0x3F, h, data)
        unsolicited_nop = pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF
        carries_status = pdu.opcode in (
            SCSI_RSP,
            NOP_IN,
            TEXT_RSP,
            LOGOUT_RSP,
            TMF_RSP,
            REJECT,
            ASYNC,
            LOGIN_RSP,
        )
        if (carries_status and not unsolicited_nop) or (pdu.opcode == DATA_IN and pdu.flags & 0x01):
            self.expstatsn = (pdu.statsn + 1) & 0xFFFFFFFF
        if pdu.opcode not in (LOGIN_RSP,) and pdu.opcode in (
            SCSI_RSP,
            NOP_IN,
            TEXT_RSP,
            LOGOUT_RSP,
            TMF_RSP,
            R2T,
            ASYNC,
            DATA_IN,
        ):
            self.maxcmdsn = pdu.maxcmdsn
        return pdu

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

    # -- login -----------------------------------------------------------------
    def login_pdu(
        self, csg: int, nsg: int, transit: bool, keys: dict[str, str], itt: int | None = None
    ) -> tuple[bytes, bytes]:
        data = text_keys(keys)
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        rest = struct.pack(">HHII", 0, 0, self.cmdsn, self.expstatsn) + bytes(16)
        h = bhs(
            LOGIN_REQ,
            flags,
            immediate=True,
            dlen=len(data),
            lun_or_isid=self.isid + struct.pack(">H", self.tsih),
            itt=self.itt if itt is None else itt,
            rest=rest,
        )
        return h, data

    def login_step(self, csg: int, nsg: int, keys: dict[str, str]) -> PDU:
        h, d = self.login_pdu(csg, nsg, True, keys)
        self.send(h, d)
        rsp = self.recv()
        if rsp.opcode != LOGIN_RSP:
            raise AssertionError(f"expected a Login Response, got {rsp!r}")
        status = rsp.header[36] << 8 | rsp.header[37]
        if status:
            raise LoginFailed(status, parse_keys(rsp.data))
        return rsp

    def login(
        self,
        target: str,
        initiator: str = "iqn.2026-11.org.test:raw",
        header_digest: bool = False,
        data_digest: bool = False,
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Security stage (AuthMethod=None), then operational, to full feature phase."""
        keys = {"InitiatorName": initiator, "SessionType": "Normal", "AuthMethod": "None"}
        if target:
            keys["TargetName"] = target
        rsp = self.login_step(0, 1, keys)
        got = parse_keys(rsp.data)
        for _ in range(4):
            if rsp.flags & 0x80 and (rsp.flags & 0x03) == 1:
                break
            rsp = self.login_step(0, 1, {})
            got.update(parse_keys(rsp.data))
        ops = {
            "HeaderDigest": "CRC32C" if header_digest else "None",
            "DataDigest": "CRC32C" if data_digest else "None",
            "MaxRecvDataSegmentLength": "262144",
            "InitialR2T": "No",
            "ImmediateData": "Yes",
            "FirstBurstLength": "65536",
            "MaxBurstLength": "262144",
            "ErrorRecoveryLevel": "0",
            "MaxConnections": "1",
            **(extra or {}),
        }
        rsp = self.login_step(1, 3, ops)
        got.update(parse_keys(rsp.data))
        for _ in range(4):
            if rsp.flags & 0x80 and (rsp.flags & 0x03) == 3:
                break
            rsp = self.login_step(1, 3, {})
            got.update(parse_keys(rsp.data))
        else:
            raise AssertionError("the target never moved to full feature phase")
        self.tsih = struct.unpack_from(">H", rsp.header, 14)[0]
        self.maxcmdsn = rsp.maxcmdsn
        self.cmdsn = rsp.expcmdsn
        self.header_digest = got.get("HeaderDigest") == "CRC32C"
        self.data_digest = got.get("DataDigest") == "CRC32C"
        self.negotiated = got
        return got

    # -- full feature phase ------------------------------------------------------
    def scsi_pdu(
        self,
        cdb: bytes,
        *,
        read: int = 0,
        write: bytes = b"",
        lun: int = 0,
        cmdsn: int | None = None,
        dlen: int | None = None,
        itt: int | None = None,
        edtl: int | None = None,
    ) -> tuple[bytes, bytes]:
        cdb = cdb.ljust(16, b"\0")
        flags = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 0x01  # F, R, W, SIMPLE
        length = edtl if edtl is not None else (read or len(write))
        rest = (
            struct.pack(">III", length, self.cmdsn if cmdsn is None else cmdsn, self.expstatsn)
            + cdb
        )
        h = bhs(
            SCSI_CMD,
            flags,
            dlen=len(write) if dlen is None else dlen,
            lun_or_isid=struct.pack(">HHI", lun & 0x3FFF, 0, 0),
            itt=self.next_itt() if itt is None else itt,
            rest=rest,
        )
        return h, write

    def command(
        self, cdb: bytes, *, read: int = 0, write: bytes = b"", timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """Run one command with immediate data (writes within FirstBurstLength);
        return (SCSI status, data read)."""
        first = min(
            int(self.negotiated.get("FirstBurstLength", "65536")),
            int(self.negotiated.get("MaxRecvDataSegmentLength", "8192")),
        )
        if self.negotiated.get("ImmediateData", "Yes") == "No":
            first = 0
        h, d = self.scsi_pdu(cdb, read=read, write=write[:first], edtl=read or len(write))
        itt = struct.unpack_from(">I", h, 16)[0]
        self.send(h, d)
        self.cmdsn += 1
        data = bytearray()
        while True:
            pdu = self.recv(timeout)
            if pdu.opcode == DATA_IN and pdu.itt == itt:
                data += pdu.data
                if pdu.flags & 0x01:
                    return pdu.header[3], bytes(data)
            elif pdu.opcode == SCSI_RSP and pdu.itt == itt:
                return pdu.header[3], bytes(data)
            elif pdu.opcode == R2T and pdu.itt == itt:
                ttt = pdu.u32(20)
                off, want = pdu.u32(40), pdu.u32(44)
                self._data_out(itt, ttt, write[off : off + want], off)
            elif pdu.opcode == NOP_IN and pdu.u32(20) != 0xFFFFFFFF:
                self.nop_reply(pdu)
            elif pdu.opcode == REJECT:
                raise AssertionError(f"command rejected, reason {pdu.header[2]:#04x}")

    def _data_out(self, itt: int, ttt: int, chunk: bytes, offset: int) -> None:
        mrdsl = int(self.negotiated.get("MaxRecvDataSegmentLength", "8192"))
        datasn = 0
        for i in range(0, len(chunk), mrdsl):
            piece = chunk[i : i + mrdsl]
            final = i + mrdsl >= len(chunk)
            rest = struct.pack(">IIIIII", ttt, 0, self.expstatsn, 0, datasn, offset + i) + bytes(4)
            self.send(
                bhs(DATA_OUT, 0x80 if final else 0, dlen=len(piece), itt=itt, rest=rest), piece
            )
            datasn += 1

    def nop_reply(self, nop_in: PDU) -> None:
        rest = struct.pack(">III", nop_in.u32(20), self.cmdsn, self.expstatsn) + bytes(16)
        self.send(bhs(NOP_OUT, 0x80, immediate=True, itt=0xFFFFFFFF, rest=rest))

    def nop(self, timeout: float = 10.0) -> PDU:
        """A NOP-Out ping (immediate); returns the matching NOP-In."""
        itt = self.next_itt()
        rest = struct.pack(">III", 0xFFFFFFFF, self.cmdsn, self.expstatsn) + bytes(16)
        self.send(bhs(NOP_OUT, 0x80, immediate=True, itt=itt, rest=rest))
        while True:
            pdu = self.recv(timeout)
            if pdu.opcode == NOP_IN and pdu.itt == itt:
                return pdu
            if pdu.opcode == REJECT:
                raise AssertionError(f"NOP-Out rejected, reason {pdu.header[2]:#04x}")

    def logout(self, timeout: float = 10.0) -> PDU:
        itt = self.next_itt()
        rest = struct.pack(">HHII", 0, 0, self.cmdsn, self.expstatsn) + bytes(16)
        self.send(bhs(LOGOUT_REQ, 0x80, immediate=True, itt=itt, rest=rest))
        while True:
            pdu = self.recv(timeout)
            if pdu.opcode == LOGOUT_RSP:
                return pdu


class LoginFailed(Exception):
    def __init__(self, status: int, keys: dict[str, str]) -> None:
        super().__init__(f"login status {status:04x}")
        self.status = status
        self.keys = keys


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


TEST_UNIT_READY = bytes(6)
