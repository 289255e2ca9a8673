# The iSCSI fast path: plain READ and WRITE commands answered straight from
# the receive buffer with pre-packed headers (RFC 7143 11.3, 11.4, 11.7),
# everything else left to the connection's general dispatch.  A read the
# page cache holds is answered at once; other reads and every write go to
# the unit's task set and are answered, as pre-packed, when they complete.
"""The fast path of a connection's plain READ/WRITE commands (sans-IO).

:class:`FastPath` is mixed into :class:`netstore.iscsi.connection.Connection`;
it reads the connection's reader buffer, session and outbox and falls back
to its ``_respond`` for anything but a plain success.
"""

from __future__ import annotations

import struct
from functools import partial

from netstore.iscsi import pdu as P
from netstore.iscsi.session import QUEUE_DEPTH
from netstore.scsi.commands import FAST_PATH_OPCODES
from netstore.scsi.lun import NOWAIT, ScsiResponse, WouldBlock
from netstore.scsi.together import write_together

# The fast path's layouts: SCSI Command bytes 1..27 (flags, TotalAHSLength with
# DataSegmentLength, LUN, ITT, EDTL, CmdSN); a Data-In carrying status; a
# SCSI Response with no sense (RFC 7143 11.3, 11.7, 11.4).
_FAST_CMD = struct.Struct(">xBxxI8sIII")
_FAST_DATA_IN = struct.Struct(">BBBBI8sIIIIIIII")
_FAST_RSP = struct.Struct(">BBBBI8xIIIIIIII")


class FastPath:
    """Plain READ/WRITE straight from the receive buffer (mixed into Connection)."""

    def _fast_path(self) -> None:
        """Answer the plain READ and WRITE commands at the head of the buffer.

        A command qualifies when it is the next in CmdSN order, has no AHS, a
        READ asks exactly one Data-In PDU's worth and a WRITE carries all its
        data as immediate data; with digests on, its header digest (and a
        WRITE's data digest) must check out, and the answers carry theirs.
        Each is executed exactly as the general path would and answered with
        one pre-packed header; anything else (a digest that does not match
        included) stops the loop and goes through :meth:`_dispatch`.  This is
        where batching pays: a receive holding 32 commands costs 32 trips
        through this loop and one sendmsg.
        """
        s = self.session
        r = self.reader
        buf = r._buf
        pos = r._pos
        end = len(buf)
        hd = P.DIGEST_LEN if self.hd else 0
        dd = self.dd
        if end - pos < P.BHS_LEN + hd or s.held:
            return
        scsi = s.scsi  # type: ignore[union-attr]
        out = self.outbox
        nexus = s.nexus
        exp = s.exp_cmdsn
        statsn = self.statsn
        limit = min(self.max_send, s.params.max_burst_length)
        unpack = _FAST_CMD.unpack_from
        pack_data_in = _FAST_DATA_IN.pack
        crc = P.crc32c
        wire_digest = P.DIGEST_WIRE.pack
        sent_digest = P.DIGEST_WIRE.unpack_from
        try:
            while end - pos >= P.BHS_LEN + hd and buf[pos] == P.OP_SCSI_CMD:
                op = buf[pos + 32]
                if op not in FAST_PATH_OPCODES:  # the command table's plain READ/WRITE 10/16
                    break
                flags, lens, lun_raw, itt, edtl, cmdsn = unpack(buf, pos)
                if cmdsn != exp or (lens >> 24) or buf[pos + 8]:
                    break
                if hd and sent_digest(buf, pos + P.BHS_LEN)[0] != crc(buf[pos:pos + P.BHS_LEN]):
                    break  # the general path says what was wrong
                lun = buf[pos + 9]
                lu = scsi.unit(lun)
                if lu is None:
                    break
                dlen = lens & 0xFFFFFF
                simple = flags & P.TASK_ATTR_MASK in P.UNORDERED_TASK_ATTRS
                flags &= ~P.TASK_ATTR_MASK & 0xFF
                if flags == 0xC0 and not dlen:  # F + R: a read
                    cdb = bytes(buf[pos + 32:pos + 48])
                    pos += P.BHS_LEN + hd
                    r._pos = pos
                    exp = (exp + 1) & 0xFFFFFFFF
                    s.exp_cmdsn = exp
                    rsp = None
                    if lu.reads_nowait and self._may_read_now(lu, nexus, simple):
                        try:
                            rsp = lu.execute(nexus, cdb, NOWAIT)
                        except WouldBlock:
                            pass
                    if rsp is None:
                        self.statsn = statsn
                        self._queue_command(lu, lun, itt,
                                            partial(lu.execute, nexus, cdb, None),
                                            partial(self._fast_read_done, itt, lun_raw, edtl),
                                            reads=True)
                        statsn = self.statsn
                        continue
                    data = rsp.data
                    if (rsp.status or rsp.sense or len(data) != edtl or edtl > limit
                            or edtl & 3):
                        self.statsn = statsn
                        self._respond(itt, lun_raw, rsp, edtl, True)
                        statsn = self.statsn
                        continue
                    h = pack_data_in(
                        P.OP_DATA_IN, P.FLAG_FINAL | P.DATA_STATUS, 0, 0, edtl, lun_raw, itt,
                        P.RESERVED_TAG, statsn, exp, (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF,
                        0, 0, 0)
                    out.append(h + wire_digest(crc(h)) if hd else h)
                    out.append(data)
                    if dd and edtl:
                        out.append(wire_digest(crc(data)))
                    statsn = (statsn + 1) & 0xFFFFFFFF
                elif flags == 0xA0 and dlen == edtl and s.params.immediate_data:  # F + W
                    start = pos + P.BHS_LEN + hd
                    padded = (dlen + 3) & ~3
                    ddl = P.DIGEST_LEN if dd and dlen else 0
                    total = P.BHS_LEN + hd + padded + ddl
                    if end - pos < total or dlen > s.params.first_burst_length:
                        break
                    if ddl and sent_digest(buf, start + padded)[0] != crc(buf[start:start + padded]):
                        break  # the general path answers a data digest error
                    cdb = bytes(buf[pos + 32:pos + 48])
                    if lu.data_out_length(cdb) != dlen:
                        break  # a residual to report: the general path does it
                    data = buf[start:start + dlen]  # one copy: the buffer takes the next receive
                    pos += total
                    r._pos = pos
                    exp = (exp + 1) & 0xFFFFFFFF
                    s.exp_cmdsn = exp
                    self.statsn = statsn
                    self._queue_command(lu, lun, itt,
                                        partial(lu.execute, nexus, cdb, data),
                                        partial(self._fast_write_done, itt, lun_raw),
                                        joint=write_together, item=(lu, nexus, cdb, data))
                    statsn = self.statsn
                else:
                    break
        finally:
            self.statsn = statsn

    def _fast_read_done(self, itt: int, lun_raw: bytes, edtl: int, rsp: ScsiResponse) -> None:
        """A queued fast-path READ completed: one Data-In with status if plain."""
        data = rsp.data
        s = self.session
        if (rsp.status or rsp.sense or len(data) != edtl or edtl & 3
                or edtl > min(self.max_send, s.params.max_burst_length)):
            self._respond(itt, lun_raw, rsp, edtl, True)
            return
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        exp = s.exp_cmdsn
        h = _FAST_DATA_IN.pack(
            P.OP_DATA_IN, P.FLAG_FINAL | P.DATA_STATUS, 0, 0, edtl, lun_raw, itt,
            P.RESERVED_TAG, statsn, exp, (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF, 0, 0, 0)
        if self.hd:
            h += P.DIGEST_WIRE.pack(P.crc32c(h))
        if self.dd and edtl:
            self.outbox += (h, data, P.DIGEST_WIRE.pack(P.crc32c(data)))
        else:
            self.outbox += (h, data)

    def _fast_write_done(self, itt: int, lun_raw: bytes, rsp: ScsiResponse) -> None:
        """A queued fast-path WRITE completed: one SCSI Response if plain."""
        if rsp.status or rsp.sense or rsp.data:
            self._respond(itt, lun_raw, rsp, 0, False)
            return
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        exp = self.session.exp_cmdsn
        h = _FAST_RSP.pack(P.OP_SCSI_RSP, P.FLAG_FINAL, 0, 0, 0, itt, 0, statsn,
                           exp, (exp + QUEUE_DEPTH - 1) & 0xFFFFFFFF, 0, 0, 0)
        self.outbox.append(h + P.DIGEST_WIRE.pack(P.crc32c(h)) if self.hd else h)
