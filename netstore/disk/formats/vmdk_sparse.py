# The VMDK writer of the hosted sparse extent with its descriptor embedded
# ("monolithicSparse": the one-file VMDK VirtualBox and VMware Workstation
# make).  Its layout, all known from the size before any data comes: the
# header (sector 0), the descriptor (sectors 1-20), the redundant grain
# directory and its grain tables, the grain directory and its grain tables,
# then the grains (64 KiB, uncompressed) appended in the order written.
# Grain tables no grain uses stay holes, reading as the zeros they are.
"""VMDK monolithicSparse writer."""

from __future__ import annotations

import os
import struct

from netstore.disk.api import SECTOR, DiskError
from netstore.disk.formats import StreamingBlockWriter, check_uuid, new_uuid
from netstore.disk.formats.vmdk import (
    _HEADER,
    DESCRIPTOR_SECTORS,
    FLAG_NL_TEST,
    FLAG_REDUNDANT_GT,
    GRAIN_SECTORS,
    GTES_PER_GT,
    MAGIC,
    MAX_CAPACITY_SECTORS,
    NL_CHARS,
    _descriptor,
)

GT_SECTORS = GTES_PER_GT * 4 // SECTOR  # one grain table: 512 entries of 4 bytes


class MonolithicSparseWriter(StreamingBlockWriter):
    """Writes a monolithicSparse VMDK front to back (data in increasing offsets)."""

    _block_bytes = GRAIN_SECTORS * SECTOR

    def __init__(self, path: str, size: int, *, uuid: str | None = None) -> None:
        size = -(-size // SECTOR) * SECTOR
        if size // SECTOR > MAX_CAPACITY_SECTORS:
            raise DiskError(f"{path}: too large for a VMDK")
        if size == 0:  # qemu cannot open one (no grain directory)
            raise DiskError(f"{path}: a VMDK holds at least one sector")
        super().__init__(path, size)
        self.uuid = check_uuid(uuid) if uuid else new_uuid()
        self._sectors = size // SECTOR
        grains = -(-self._sectors // GRAIN_SECTORS)
        self._ngt = -(-grains // GTES_PER_GT)
        gd_sectors = -(-self._ngt * 4 // SECTOR)
        self._rgd = 1 + DESCRIPTOR_SECTORS
        self._rgt = self._rgd + gd_sectors  # the redundant grain tables
        self._gd = self._rgt + self._ngt * GT_SECTORS
        self._gt = self._gd + gd_sectors
        gt_end = self._gt + self._ngt * GT_SECTORS
        self._overhead = -(-gt_end // GRAIN_SECTORS) * GRAIN_SECTORS
        self._next = self._overhead  # where the next grain goes, in sectors
        self._table: list[int] = []
        self._table_index: int | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        desc = _descriptor(os.path.basename(self.path), self._sectors, self.uuid, "monolithicSparse")
        if len(desc) > DESCRIPTOR_SECTORS * SECTOR:
            os.close(self._fd)
            raise DiskError(f"{path}: file name too long for the descriptor")
        os.pwrite(self._fd, self._header() + desc, 0)

    def _header(self) -> bytes:
        raw = _HEADER.pack(MAGIC, 1, FLAG_NL_TEST | FLAG_REDUNDANT_GT, self._sectors, GRAIN_SECTORS,
                           1, DESCRIPTOR_SECTORS, GTES_PER_GT, self._rgd, self._gd, self._overhead,
                           0, NL_CHARS, 0)
        return raw + bytes(SECTOR - len(raw))

    def _write_table(self) -> None:
        """The current grain table, into both copies."""
        if self._table_index is None:
            return
        raw = struct.pack(f"<{GTES_PER_GT}I", *self._table)
        at = self._table_index * GT_SECTORS
        os.pwrite(self._fd, raw, (self._rgt + at) * SECTOR)
        os.pwrite(self._fd, raw, (self._gt + at) * SECTOR)
        self._table_index = None

    def _emit_block(self, index: int, data: bytes) -> None:
        gt, slot = divmod(index, GTES_PER_GT)
        if gt != self._table_index:
            self._write_table()
            self._table_index, self._table = gt, [0] * GTES_PER_GT
        self._table[slot] = self._next
        os.pwrite(self._fd, data, self._next * SECTOR)
        self._next += GRAIN_SECTORS

    def _finish(self) -> None:
        try:
            self._write_table()
            for gd, tables in ((self._rgd, self._rgt), (self._gd, self._gt)):
                entries = [tables + i * GT_SECTORS for i in range(self._ngt)]
                os.pwrite(self._fd, struct.pack(f"<{self._ngt}I", *entries), gd * SECTOR)
            os.ftruncate(self._fd, self._next * SECTOR)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        os.close(self._fd)


__all__ = ["MonolithicSparseWriter"]
