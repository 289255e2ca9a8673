# What a file's bytes say it is: the magic of every image format qemu-img
# knows, tested on the file's first 4 KiB and last 512 bytes.  The magics of
# the formats netstore reads live in their own modules (qcow2, vdi, vmdk,
# vhd, vhdx, parallels) and are only looked up here; the magics of the
# formats netstore does not read (qcow version 1, QED, LUKS, DMG, cloop,
# bochs, VMDK version 3) live here, with the refusal that names them.  A
# file with no known magic is raw.
"""Image format detection from magic numbers, and refusals of foreign formats."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netstore.disk.api import UnsupportedImageError
from netstore.disk.formats import parallels, vdi, vhd, vhdx, vmdk
from netstore.disk.qcow2 import MAGIC as QCOW_MAGIC  # qcow version 1 shares qcow2's magic

HEAD_BYTES = 4096
TAIL_BYTES = 512

QED_MAGIC = b"QED\0"
LUKS_MAGIC = b"LUKS\xba\xbe"  # LUKS 1 and 2
BOCHS_MAGIC = b"Bochs Virtual HD Image"
CLOOP_SHEBANG = b"#!/bin/sh"
CLOOP_VERSIONS = (b"#V2.0 Format", b"#V3.0 Format")  # the shell header's whole second line
CLOOP_HEADER_BYTES = 128  # the shell header is a few short lines
DMG_TRAILER = b"koly"  # the UDIF trailer, the last 512 bytes
VMDK3_MAGIC = b"COWD"  # VMware 3 / ESX sparse extents
# The text VMDK descriptor may follow a byte order mark and blank space.
_DESCRIPTOR_LEAD = b"\xef\xbb\xbf \t\r\n"

_CONVERT = "convert it with qemu-img convert -O qcow2 first"


@dataclass(frozen=True, slots=True)
class Foreign:
    """A format qemu-img knows and netstore does not read."""

    title: str  # how a message names it
    hint: str  # what the user can do instead


FOREIGN: dict[str, Foreign] = {  # keyed by qemu-img's name
    "qcow": Foreign("qcow version 1", _CONVERT),
    "qed": Foreign("QED", _CONVERT),
    "luks": Foreign("LUKS", "decrypt it with qemu-img convert -O qcow2, its passphrase given "
                            "as a secret object, first"),
    "dmg": Foreign("DMG", _CONVERT),
    "cloop": Foreign("cloop", _CONVERT),
    "bochs": Foreign("bochs", _CONVERT),
    "vmdk3": Foreign("VMDK version 3", _CONVERT),  # the "COWD" sparse extent
}


def sniff(head: bytes, tail: bytes) -> str:
    """The format name the first bytes (`head`, up to HEAD_BYTES) and the last
    512 bytes (`tail`, empty for a file shorter than that) say: one of
    netstore's formats or a key of FOREIGN; "raw" when no magic matches."""
    if head[:4] == QCOW_MAGIC:
        version = struct.unpack_from(">I", head, 4)[0] if len(head) >= 8 else 0
        return "qcow" if version == 1 else "qcow2"
    if head[:8] == vhdx.FILE_SIGNATURE:
        return "vhdx"
    if vdi.probe_bytes_match(head):
        return "vdi"
    if head[:4] == vmdk.MAGIC or head.lstrip(_DESCRIPTOR_LEAD).startswith(vmdk.DESCRIPTOR_MAGIC):
        return "vmdk"
    if head[:4] == VMDK3_MAGIC:
        return "vmdk3"
    if head[:16] in parallels.MAGICS:
        return "parallels"
    if head[:4] == QED_MAGIC:
        return "qed"
    if head[: len(LUKS_MAGIC)] == LUKS_MAGIC:
        return "luks"
    if head.startswith(BOCHS_MAGIC):
        return "bochs"
    if head.startswith(CLOOP_SHEBANG):
        lines = head[:CLOOP_HEADER_BYTES].split(b"\n", 2)
        if len(lines) > 2 and lines[1] in CLOOP_VERSIONS:
            return "cloop"
    if vhd.FOOTER_COOKIE in (head[:8], tail[:8]):
        return "vhd"
    if tail[:4] == DMG_TRAILER:
        return "dmg"
    return "raw"


def refusal(path: str, fmt: str) -> UnsupportedImageError:
    """The error for an image of the foreign format `fmt` (a key of FOREIGN)."""
    f = FOREIGN[fmt]
    return UnsupportedImageError(f"{path} is a {f.title} image; netstore does not read "
                                 f"{f.title} ({f.hint})")


__all__ = ["FOREIGN", "Foreign", "HEAD_BYTES", "TAIL_BYTES", "sniff", "refusal"]
