# Limits of the SCSI layer, each in one place: reported in the Block Limits
# VPD page and enforced by the logical unit.
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
