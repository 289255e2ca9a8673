"""A hand-rolled iSCSI initiator over a real trio socket, for the shell's tests."""

from __future__ import annotations

import trio

from netstore.iscsi import pdu as P
from netstore.iscsi.text import encode_text
from tests.iscsi.initiator import INITIATOR, bhs, wire

IQN = "iqn.2026-11.org.netstore:srv"
ISID = bytes.fromhex("400001370000")


class Client:
    """A hand-rolled initiator over a real trio socket."""

    def __init__(self, stream: trio.SocketStream, target: str = IQN) -> None:
        self.stream = stream
        self.target = target
        self.reader = P.PduReader(max_data=1 << 24)
        self.cmdsn = 0
        self.itt = 0

    @classmethod
    async def connect(cls, port: int, target: str = IQN) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port), target)

    async def recv(self, timeout: float = 5.0) -> P.Pdu | None:
        """The next PDU, or None when the target closed the connection."""
        with trio.fail_after(timeout):
            while (p := self.reader.next()) is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.reader.feed(data)
        return p

    async def login(self, *, tsih: int = 0, cid: int = 0, isid: bytes = ISID) -> P.Pdu:
        keys = [("InitiatorName", INITIATOR), ("TargetName", self.target), ("SessionType", "Normal"),
                ("MaxRecvDataSegmentLength", "65536")]
        if tsih == 0:
            keys += [("MaxConnections", "4")]
        b = bhs(P.OP_LOGIN_REQ, 0x80 | (1 << 2) | 3, immediate=True, itt=1, f24=self.cmdsn)
        b[8:14] = isid
        b[14:16] = tsih.to_bytes(2, "big")
        b[20:22] = cid.to_bytes(2, "big")
        await self.stream.send_all(wire(b, encode_text(keys)))
        r = await self.recv()
        assert r is not None and r.opcode == P.OP_LOGIN_RSP and r.bhs[36] == 0
        self.cmdsn = r.u32(28)
        return r

    async def command(self, cdb: bytes, read: int = 0) -> list[P.Pdu]:
        self.itt += 1
        b = bhs(P.OP_SCSI_CMD, 0x81 | (0x40 if read else 0), itt=self.itt, f20=read,
                f24=self.cmdsn)
        b[32:32 + len(cdb)] = cdb
        self.cmdsn += 1
        await self.stream.send_all(wire(b))
        out = []
        while True:
            p = await self.recv()
            assert p is not None
            out.append(p)
            if p.opcode == P.OP_SCSI_RSP or (p.opcode == P.OP_DATA_IN and p.flags & 1):
                return out
