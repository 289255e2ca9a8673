# Limits of the SCSI layer, each in one place: reported in the Block Limits
# VPD page and enforced by the logical unit.
"""Limits of the SCSI layer (transfer sizes, UNMAP, LUN numbers...), each in one place."""
from __future__ import annotations

# Largest READ/WRITE/VERIFY data transfer. 8 MiB bounds the memory one
# command may pin; Linux caps max_sectors at 1280 KiB by default, LIO
# advertises 8 MiB (8192 x 1 KiB), tgt does not cap at all.
MAX_TRANSFER_BYTES = 8 * 1024 * 1024
# Preferred alignment/size of transfers: 4 KiB pages.
OPTIMAL_GRANULARITY_BYTES = 4096
# Largest Data-In payload of the non-I/O commands (INQUIRY, MODE SENSE, ...):
# their allocation length fields are at most 16 or 32 bits wide.
MAX_ALLOCATION_LENGTH = 0xFFFFFFFF
# REPORT LUNS: the smallest allocation length SPC-4 6.33 allows.
MIN_REPORT_LUNS_ALLOCATION = 16
# Largest LUN this target reports with flat space addressing (SAM-5 4.7.7).
MAX_LUN = 0x3FFF
# WRITE SAME: most blocks one command may write (MAXIMUM WRITE SAME LENGTH,
# VPD B0h); 32 MiB bounds how long one command holds the logical unit.
MAX_WRITE_SAME_BYTES = MAX_TRANSFER_BYTES
# COMPARE AND WRITE: most blocks compared and written (one-byte CDB field).
MAX_COMPARE_AND_WRITE_BLOCKS = 255
# PRE-FETCH: ranges up to this size are handed to the page cache and answered
# CONDITION MET; larger ones are "would not fit in the cache": GOOD.
PREFETCH_CACHE_BYTES = 8 * 1024 * 1024
# UNMAP (VPD B0h): most blocks one UNMAP may deallocate (MAXIMUM UNMAP LBA
# COUNT) and most block descriptors in its parameter list. Punching a hole
# costs the same at any size; libiscsi calls counts above 2^20 insane, and
# Linux sends at most one descriptor per UNMAP anyway.
MAX_UNMAP_BLOCKS = 1 << 20
MAX_UNMAP_DESCRIPTORS = 256
# OPTIMAL UNMAP GRANULARITY: file systems free space in 4 KiB blocks; a
# smaller hole only zeroes the bytes.
UNMAP_GRANULARITY_BYTES = 4096
