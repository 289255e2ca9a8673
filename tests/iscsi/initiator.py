"""A minimal in-memory iSCSI initiator for driving the sans-IO target core in tests.

It builds initiator PDUs by hand (independently of the target's builders) and
parses what the target put in ``Connection.outbox``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netstore.disk.raw import RawImage
from netstore.iscsi import pdu as P
from netstore.iscsi.connection import Connection, Timeouts
from netstore.iscsi.login import TargetEntry
from netstore.iscsi.portal import ExportedTarget, PortalGroup
from netstore.iscsi.text import encode_text, parse_text
from netstore.scsi.lun import LogicalUnit, LunIdentity, encode_lun
from netstore.scsi.target import ScsiTarget

TARGET = "iqn.2026-11.org.netstore:test"
INITIATOR = "iqn.2026-11.org.test:init"


@dataclass
class Reply:
    opcode: int
    bhs: bytes
    data: bytes

    def u32(self, off: int) -> int:
        return struct.unpack_from(">I", self.bhs, off)[0]

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def itt(self) -> int:
        return self.u32(16)


def make_group(image: str, *, luns: int = 1) -> PortalGroup:
    g = PortalGroup(portals=[("127.0.0.1", 3260)])
    units = {
        i: LogicalUnit(RawImage(image), LunIdentity(serial=f"s{i}", naa=bytes(8),
                                                          target_name=TARGET))
        for i in range(luns)
    }
    g.exported[TARGET] = ExportedTarget(TargetEntry(TARGET), ScsiTarget(TARGET, units))
    return g


def bhs(opcode: int, flags: int, *, immediate: bool = False, dlen: int = 0,
        lun: int = 0, itt: int = 0, f20: int = 0, f24: int = 0, f28: int = 0,
        f32: int = 0, f36: int = 0, f40: int = 0, f44: int = 0) -> bytearray:
    b = bytearray(48)
    b[0] = opcode | (0x40 if immediate else 0)
    b[1] = flags
    b[5:8] = dlen.to_bytes(3, "big")
    b[8:16] = encode_lun(lun)
    struct.pack_into(">IIIIIIII", b, 16, itt, f20, f24, f28, f32, f36, f40, f44)
    return b


def wire(b: bytearray, data: bytes = b"") -> bytes:
    b[5:8] = len(data).to_bytes(3, "big")
    return bytes(b) + data + b"\0" * (-len(data) % 4)


class Initiator:
    """Drives one Connection: login, commands, and reading back replies."""

    def __init__(self, group: PortalGroup, *, keys: dict[str, str] | None = None,
                 isid: bytes = bytes.fromhex("400001370000"), name: str = INITIATOR,
                 timeouts: Timeouts | None = None) -> None:
        self.conn = Connection(group, "test", timeouts=timeouts or Timeouts())
        self.reader = P.PduReader(max_data=1 << 24)
        self.cmdsn = 1
        self.itt = 0x100
        self.isid = isid
        self.name = name
        self.keys = {
            "InitiatorName": name, "TargetName": TARGET, "SessionType": "Normal",
            "HeaderDigest": "None", "DataDigest": "None",
            "MaxRecvDataSegmentLength": "262144", "ImmediateData": "Yes",
            "InitialR2T": "No", "FirstBurstLength": "65536", "MaxBurstLength": "262144",
            "MaxOutstandingR2T": "1",
        }
        if keys:
            self.keys.update(keys)

    def send(self, raw: bytes) -> list[Reply]:
        self.conn.receive_data(raw)
        return self.replies()

    def use_digests(self) -> None:
        """After a login that negotiated CRC32C digests: PDUs both ways carry them."""
        self.digests = True
        self.reader.header_digest = self.reader.data_digest = True

    def frame(self, b: bytearray, data: bytes = b"") -> bytes:
        """One PDU on the wire, with digests once they are on."""
        if not getattr(self, "digests", False):
            return wire(b, data)
        return b"".join(bytes(x) for x in P.frame(b, data, header_digest=True,
                                                  data_digest=True))

    def replies(self) -> list[Reply]:
        raw = b"".join(bytes(x) for x in self.conn.outbox)
        self.conn.outbox.clear()
        self.reader.feed(raw)
        out = []
        while (p := self.reader.next()) is not None:
            out.append(Reply(p.opcode, p.bhs, p.data))
        return out

    def login(self) -> dict[str, str]:
        b = bhs(P.OP_LOGIN_REQ, 0x80 | (1 << 2) | 3, immediate=True, itt=1, f24=self.cmdsn)
        b[8:14] = self.isid
        (r,) = self.send(wire(b, encode_text(self.keys.items())))
        assert r.opcode == P.OP_LOGIN_RSP
        assert r.bhs[36] == 0, f"login refused {r.bhs[36]:02x}{r.bhs[37]:02x}"
        answers = dict(parse_text(r.data))
        self.cmdsn = r.u32(28)
        return answers

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

    def scsi(self, cdb: bytes, *, read: int = 0, write: bytes | None = None,
             immediate_len: int | None = None, edtl: int | None = None, lun: int = 0,
             final: bool | None = None, cmdsn: int | None = None) -> tuple[int, list[Reply]]:
        itt = self.next_itt()
        flags = 0x01  # SIMPLE
        data = b""
        if read:
            flags |= 0x40
        if write is not None:
            flags |= 0x20
            data = write[: (len(write) if immediate_len is None else immediate_len)]
        length = edtl if edtl is not None else (read or (len(write) if write else 0))
        if final is None:
            final = True
        if final:
            flags |= 0x80
        b = bhs(P.OP_SCSI_CMD, flags, lun=lun, itt=itt, f20=length,
                f24=self.cmdsn if cmdsn is None else cmdsn)
        b[32:32 + len(cdb)] = cdb
        if cmdsn is None:
            self.cmdsn += 1
        return itt, self.send(self.frame(b, data))

    def data_out(self, itt: int, ttt: int, datasn: int, offset: int, data: bytes,
                 final: bool = True) -> list[Reply]:
        b = bhs(P.OP_DATA_OUT, 0x80 if final else 0, itt=itt, f20=ttt, f36=datasn,
                f40=offset)
        return self.send(wire(b, data))


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int, fua: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)
