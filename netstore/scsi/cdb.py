# The byte layouts the SCSI layer reads CDBs and parameter data with: big-endian
# integers and the LBA/transfer-length fields of the 10-, 12- and 16-byte CDBs.
"""Struct layouts of CDB fields and big-endian integers (one place each)."""

from __future__ import annotations

import struct

BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")
BE64 = struct.Struct(">Q")
U10 = struct.Struct(">IxH")  # CDB bytes 2..8: LBA, group, transfer length
U12 = struct.Struct(">II")  # CDB bytes 2..9: LBA, transfer length
U16 = struct.Struct(">QI")  # CDB bytes 2..13: LBA, transfer length

# Byte 1 of the READ/WRITE/VERIFY family: RDPROTECT/WRPROTECT/ORPROTECT/
# VRPROTECT (bits 7..5) and FUA (bit 3).
PROTECT_MASK = 0xE0
FUA = 0x08
