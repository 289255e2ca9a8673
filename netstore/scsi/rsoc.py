# REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) and REPORT SUPPORTED TASK
# MANAGEMENT FUNCTIONS (SPC-4 6.36) parameter data, built from the rows of
# a unit's command set (commands.py): CDB usage bitmaps and timeouts; and
# SupportedCommands, the logical unit's part answering both.
"""REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TMFS: their data, the part answering them."""
from __future__ import annotations

import struct
from collections.abc import Collection

from .cdb import BE16, BE32
from .commands import BY_OPCODE, BY_SERVICE_ACTION, SERVICE_ACTION_OPCODES, Command
from .sense import GOOD, cdb_error
from .unit import ScsiResponse

_RSOC_SUPPORTED = 0x03
_RSOC_NOT_SUPPORTED = 0x01
_RSOC_CTDP_ONE = 0x80
_RSOC_CTDP_ALL = 0x02
_RSOC_SERVACTV = 0x01
_TIMEOUTS_DESCRIPTOR_LEN = 0x0A
# REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: ATS, ATSS, CTSS, LURS, TRS.
_TMF_SUPPORT = 0x80 | 0x40 | 0x10 | 0x08 | 0x02
_TMF_EXTENDED_LEN = 0x0C


def supported_opcodes(commands: Collection[Command], cdb: bytes | memoryview) -> bytes:
    """REPORT SUPPORTED OPERATION CODES data for a unit having `commands`
    (in their order), cut to the allocation length.

    Raises:
        ScsiError: a REPORTING OPTIONS value or requested code that is invalid.
    """
    rctd = bool(cdb[2] & 0x80)
    option = cdb[2] & 0x07
    req_op = cdb[3]
    req_sa = BE16.unpack_from(cdb, 4)[0]
    alloc = BE32.unpack_from(cdb, 6)[0]
    if option == 0:
        body = b"".join(_all_commands_descriptor(c, rctd) for c in commands)
        payload = BE32.pack(len(body)) + body
    elif option in (1, 2, 3):
        # Whether an opcode has service actions is a fact of the command,
        # whatever the device type.
        has_sa = req_op in SERVICE_ACTION_OPCODES
        if option == 1 and has_sa:
            raise cdb_error(3, 7)
        if option == 2 and not has_sa and req_op in BY_OPCODE:
            raise cdb_error(3, 7)
        if has_sa or option == 2:
            cmd = BY_SERVICE_ACTION.get((req_op, req_sa))
        else:
            cmd = BY_OPCODE.get(req_op)
        if cmd is None or cmd not in commands:
            payload = struct.pack(">BBH", 0, _RSOC_NOT_SUPPORTED, 0)
        else:
            flags = _RSOC_SUPPORTED | (_RSOC_CTDP_ONE if rctd else 0)
            payload = struct.pack(">BBH", 0, flags, cmd.cdb_length) + cmd.usage
            if rctd:
                payload += _timeouts_descriptor(cmd.timeout_s)
    else:
        raise cdb_error(2, 2)
    return payload[:alloc]


def supported_tmfs(cdb: bytes | memoryview) -> bytes:
    """REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS data, cut to the allocation length."""
    alloc = BE32.unpack_from(cdb, 6)[0]
    if cdb[2] & 0x80:  # REPD: extended format
        payload = bytes((_TMF_SUPPORT, 0, 0, _TMF_EXTENDED_LEN)) + bytes(_TMF_EXTENDED_LEN)
    else:
        payload = bytes((_TMF_SUPPORT, 0, 0, 0))
    return payload[:alloc]


def _timeouts_descriptor(seconds: int) -> bytes:
    # SPC-4 6.35.4: length, reserved, command specific, nominal, recommended.
    return struct.pack(">HxBII", _TIMEOUTS_DESCRIPTOR_LEN, 0, 0, seconds)


def _all_commands_descriptor(cmd: Command, rctd: bool) -> bytes:
    flags = (_RSOC_CTDP_ALL if rctd else 0) | (
        _RSOC_SERVACTV if cmd.service_action is not None else 0
    )
    d = struct.pack(">BxHxBH", cmd.opcode, cmd.service_action or 0, flags, cmd.cdb_length)
    return d + _timeouts_descriptor(cmd.timeout_s) if rctd else d


class SupportedCommands:
    """The logical unit's part answering REPORT SUPPORTED OPERATION CODES
    and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS."""

    def __init__(self, commands: Collection[Command]) -> None:
        """`commands`: the unit's commands, in the order they are reported."""
        self._commands = tuple(commands)

    def report_opcodes(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        """REPORT SUPPORTED OPERATION CODES."""
        return ScsiResponse(GOOD, supported_opcodes(self._commands, cdb))

    def report_tmfs(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        """REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS."""
        return ScsiResponse(GOOD, supported_tmfs(cdb))
