# Parallels expandable disk images (the .hds file inside a Parallels .hdd
# bundle; what `qemu-img create -f parallels` writes), after QEMU's
# docs/interop/parallels.txt: a 64-byte little-endian header whose magic is
# "WithoutFreeSpace" (old) or "WithouFreSpacExt" (format extension), the BAT
# right after it (one 32-bit entry per cluster: 0 reads as zeros, else where
# the cluster lies -- in sectors for the old magic, in clusters for the
# extension one) and the data area.  The format extension cluster holds only
# dirty bitmaps, which reading ignores.  Read only.
"""Parallels expandable image reader."""

from __future__ import annotations

import struct

from netstore.disk.api import SECTOR, UnsupportedImageError
from netstore.disk.formats import BlockMappedImage

MAGIC = b"WithoutFreeSpace"
MAGIC_EXT = b"WithouFreSpacExt"
MAGICS = (MAGIC, MAGIC_EXT)
VERSION = 2
IN_USE_OPEN = 0x746F6E59  # "Ynot": opened read-write and not closed since
IN_USE_CLOSED = 0x312E3276  # "v2.1"
IN_USE_OLD = 0  # written by software that knows no format extension
FLAG_EMPTY = 1  # the image reads as zeros whatever its BAT says
# magic, version, heads, cylinders, tracks (cluster size in sectors), BAT
# entries, disk size in sectors, in_use, data offset (sectors), flags,
# format extension offset (sectors)
_HEADER = struct.Struct("<16sIIIIIQIIIQ")
# QEMU's bound on a cluster (tracks <= INT32_MAX / 513): about 2 GiB.
MAX_CLUSTER_SECTORS = 0x7FFFFFFF // 513
MAX_BAT_ENTRIES = 0x7FFFFFFF // 4


class ParallelsImage(BlockMappedImage):
    """A Parallels expandable image opened read-only."""

    format = "parallels"
    variant = "dynamic"

    def _parse(self) -> None:
        head = self._read(0, _HEADER.size, "Parallels header")
        (magic, version, _heads, _cyl, tracks, bat_entries, nb_sectors, in_use, data_off,
         flags, _ext_off) = _HEADER.unpack(head)
        if magic not in MAGICS:
            raise self._fail("not a Parallels image (no 'WithoutFreeSpace' magic)")
        if version != VERSION:
            raise UnsupportedImageError(f"{self.path}: Parallels image version {version} (only 2)")
        if in_use == IN_USE_OPEN:
            raise UnsupportedImageError(
                f"{self.path}: the Parallels image was not closed cleanly; repair it with "
                "'qemu-img check -r all -f parallels' first"
            )
        if in_use not in (IN_USE_CLOSED, IN_USE_OLD):
            raise self._fail(f"Parallels in_use field {in_use:#x} is invalid")
        if not 1 <= tracks <= MAX_CLUSTER_SECTORS:
            raise self._fail(f"Parallels cluster of {tracks} sectors is invalid")
        if bat_entries > MAX_BAT_ENTRIES:
            raise self._fail(f"Parallels BAT of {bat_entries} entries is too large")
        ext = magic == MAGIC_EXT
        if not ext:
            nb_sectors &= 0xFFFFFFFF  # the old format uses only the low 32 bits
        if nb_sectors > bat_entries * tracks:
            raise self._fail(f"BAT of {bat_entries} clusters of {tracks} sectors is smaller "
                             f"than the disk ({nb_sectors} sectors)")
        bat_end = _HEADER.size + 4 * bat_entries
        if ext:
            if data_off == 0 or data_off % tracks:
                raise self._fail(f"data offset {data_off} is not a whole number of clusters")
        elif data_off == 0:
            data_off = -(-bat_end // SECTOR)
        if data_off * SECTOR < bat_end:
            raise self._fail(f"data offset {data_off} lies inside the BAT")
        self.virtual_size = nb_sectors * SECTOR
        cluster = tracks * SECTOR
        self._block_bytes = cluster
        raw = self._read(_HEADER.size, 4 * bat_entries, "Parallels BAT")
        blocks = -(-self.virtual_size // cluster)
        unit = cluster if ext else SECTOR  # what one BAT step is
        if flags & FLAG_EMPTY:
            self._offsets: list[int] = [0] * blocks
            return
        self._offsets = [e * unit for e in struct.unpack_from(f"<{blocks}I", raw)]
        first = data_off * SECTOR
        for i, off in enumerate(self._offsets):
            if not off:
                continue
            if off < first:
                raise self._fail(f"BAT entry for cluster {i} points before the data area")
            if off + min(cluster, self.virtual_size - i * cluster) > self._file_size:
                raise self._fail(f"BAT entry for cluster {i} points past the end of the file")

    def _block_allocated(self, index: int) -> bool:
        return self._offsets[index] != 0

    def _block_read(self, index: int, within: int, length: int) -> bytes | None:
        off = self._offsets[index]
        if not off:
            return None
        return self._read(off + within, length, f"Parallels cluster {index}")


__all__ = ["ParallelsImage", "MAGICS"]
