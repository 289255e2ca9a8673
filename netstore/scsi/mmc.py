# A CD/DVD logical unit (MMC-6): peripheral device type 05h, 2048-byte
# blocks, read-only, removable medium. What the Linux sr driver and QEMU's
# scsi-cd ask of a drive: READ TOC/PMA/ATIP, GET CONFIGURATION, GET EVENT
# STATUS NOTIFICATION (media class, polled), READ DISC/TRACK INFORMATION,
# MECHANISM STATUS and the MM capabilities mode page 2Ah. Reads, eject/load,
# PREVENT ALLOW and NOT READY while ejected come from LogicalUnit.
"""OpticalUnit: a read-only CD/DVD (MMC-6) logical unit on an ISO image."""
from __future__ import annotations

import struct
from pathlib import Path

from netstore.disk.api import DiskImage

from .commands import CDDVD
from .lun import LogicalUnit, LunIdentity, ScsiResponse
from .sense import GOOD, MEDIUM_NOT_PRESENT, ScsiError, cdb_error
from .vpd import standard_inquiry

MMC_BLOCK_SIZE = 2048
DEVICE_TYPE_CDDVD = 0x05
# MMC-6 version descriptors: SAM-5, iSCSI, SPC-4, MMC-6.
MMC_VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04E0)

# Profiles (MMC-6 table 91): a medium above a CD's capacity is a DVD-ROM.
PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
CD_MAX_BLOCKS = 360_000  # 80 minutes x 60 s x 75 sectors
# Feature codes (MMC-6 5.3).
FEATURE_PROFILE_LIST = 0x0000
FEATURE_CORE = 0x0001
FEATURE_MORPHING = 0x0002
FEATURE_REMOVABLE_MEDIUM = 0x0003
FEATURE_RANDOM_READABLE = 0x0010
FEATURE_CD_READ = 0x001E
FEATURE_DVD_READ = 0x001F
_PERSISTENT = 0x02
_CURRENT = 0x01
# Physical interface standard of the Core feature: 1 = SCSI family.
_INTERFACE_SCSI = 1

# GET EVENT STATUS NOTIFICATION (MMC-6 6.7).
_GESN_POLLED = 0x01
_CLASS_MEDIA = 0x04  # notification class 4, bit 4 of the request/support mask
_MEDIA_CLASS_BIT = 1 << _CLASS_MEDIA
_NEA = 0x80
MEDIA_NO_CHANGE = 0x0
MEDIA_EJECT_REQUEST = 0x1
MEDIA_NEW = 0x2
MEDIA_REMOVAL = 0x3
_MEDIA_PRESENT = 0x02

# READ TOC/PMA/ATIP formats (MMC-6 6.33).
TOC_FORMATTED = 0x0
TOC_SESSION_INFO = 0x1
_LEADOUT = 0xAA
_ADR_CONTROL_DATA = 0x14  # ADR 1 (Q sub-channel position), data track
_MSF_LEAD_IN = 150  # 2 seconds of pre-gap before LBA 0

# MM capabilities and mechanical status mode page (MMC-3 table 361; Linux sr).
MM_CAPABILITIES_PAGE = 0x2A
_READ_CD_R = 0x01
_READ_CD_RW = 0x02
_READ_DVD_ROM = 0x08
_LOCK = 0x01
_LOCK_STATE = 0x02
_EJECT = 0x08
_TRAY = 0x20  # loading mechanism type 001b
_MEDIUM_REMOVABLE_FEATURE = _TRAY | _EJECT | _LOCK  # feature 0003h byte 4


def msf(lba: int) -> bytes:
    """An LBA as 4-byte MSF (0, minute, second, frame), MMC-6 table 555."""
    f = lba + _MSF_LEAD_IN
    return bytes((0, f // (75 * 60), (f // 75) % 60, f % 75))


class OpticalUnit(LogicalUnit):
    """A read-only CD/DVD logical unit on an image (an ISO file).

    The medium starts loaded; START STOP UNIT with LOEJ ejects and loads it,
    PREVENT ALLOW MEDIUM REMOVAL locks it in.
    """

    def __init__(self, backend: DiskImage, identity: LunIdentity, *,
                 reservation_store: Path | None = None) -> None:
        """Wrap `backend`, which must be read-only with 2048-byte blocks.

        Raises:
            ValueError: the backend is writable or has another block size.
        """
        if not backend.read_only or backend.block_size != MMC_BLOCK_SIZE:
            raise ValueError("a CD/DVD unit needs a read-only backend of 2048-byte blocks")
        if identity.product == "VDISK":
            identity.product = "VCDROM"
        self._media_event = MEDIA_NO_CHANGE
        super().__init__(backend, identity, device_type=DEVICE_TYPE_CDDVD,
                         write_cache=False, reservation_store=reservation_store,
                         removable=True, commands=CDDVD)

    def _standard_inquiry(self) -> bytes:
        ident = self.identity
        return standard_inquiry(DEVICE_TYPE_CDDVD, ident.vendor, ident.product, ident.revision,
                                removable=True, version_descriptors=MMC_VERSION_DESCRIPTORS)

    def load(self, nexus: str | None = None) -> None:
        if not self.medium_loaded:
            self._media_event = MEDIA_NEW
        super().load(nexus)

    def eject(self) -> None:
        if self.medium_loaded:
            self._media_event = MEDIA_REMOVAL
        super().eject()

    @property
    def profile(self) -> int:
        """Current profile: none without a medium, else CD-ROM or DVD-ROM."""
        if not self.medium_loaded:
            return PROFILE_NONE
        return PROFILE_DVD_ROM if self._num_blocks > CD_MAX_BLOCKS else PROFILE_CD_ROM

    # ------------------------------------------------------- mode page 2Ah

    def _mode_pages(self) -> dict[int, bytes]:
        b = bytearray(22)
        b[0], b[1] = MM_CAPABILITIES_PAGE, 20
        b[2] = _READ_CD_R | _READ_CD_RW | _READ_DVD_ROM
        b[6] = _TRAY | _EJECT | _LOCK | (_LOCK_STATE if self._prevent else 0)
        return {MM_CAPABILITIES_PAGE: bytes(b)}

    # ------------------------------------------------------- READ TOC

    def _read_toc(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        use_msf = bool(cdb[1] & 0x02)
        fmt = cdb[2] & 0x0F
        track = cdb[6]
        alloc = struct.unpack_from(">H", cdb, 7)[0]

        def addr(lba: int) -> bytes:
            return msf(lba) if use_msf else struct.pack(">I", lba)

        if fmt == TOC_FORMATTED:
            if track > 1 and track != _LEADOUT:
                raise cdb_error(6, 7)
            descs = []
            if track <= 1:
                descs.append(bytes((0, _ADR_CONTROL_DATA, 1, 0)) + addr(0))
            descs.append(bytes((0, _ADR_CONTROL_DATA, _LEADOUT, 0)) + addr(self._num_blocks))
            body = bytes((1, 1)) + b"".join(descs)
        elif fmt == TOC_SESSION_INFO:
            body = bytes((1, 1, 0, _ADR_CONTROL_DATA, 1, 0)) + addr(0)
        else:
            raise cdb_error(2, 3)
        return ScsiResponse(GOOD, (struct.pack(">H", len(body)) + body)[:alloc])

    # ------------------------------------------------- GET CONFIGURATION

    def _features(self) -> list[tuple[int, bool, bytes]]:
        """(feature code, current, feature descriptor) in code order."""
        loaded = self.medium_loaded
        profile = self.profile
        dvd = profile == PROFILE_DVD_ROM
        profiles = b"".join(
            struct.pack(">HBx", p, 1 if p == profile else 0)
            for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM)
        )

        def feature(code: int, version: int, current: bool, body: bytes) -> tuple:
            flags = (version << 2) | _PERSISTENT * (code < FEATURE_RANDOM_READABLE) \
                | (_CURRENT if current else 0)
            return (code, current, struct.pack(">HBB", code, flags, len(body)) + body)

        return [
            feature(FEATURE_PROFILE_LIST, 0, True, profiles),
            feature(FEATURE_CORE, 2, True, struct.pack(">IBxxx", _INTERFACE_SCSI, 0x01)),
            feature(FEATURE_MORPHING, 1, True, bytes((0x02, 0, 0, 0))),
            feature(FEATURE_REMOVABLE_MEDIUM, 0, True,
                    bytes((_MEDIUM_REMOVABLE_FEATURE, 0, 0, 0))),
            feature(FEATURE_RANDOM_READABLE, 0, loaded,
                    struct.pack(">IHBx", MMC_BLOCK_SIZE, 16 if dvd else 1, 0)),
            feature(FEATURE_CD_READ, 2, loaded and not dvd, bytes(4)),
            feature(FEATURE_DVD_READ, 0, loaded and dvd, b""),
        ]

    def _get_configuration(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        rt = cdb[1] & 0x03
        start = struct.unpack_from(">H", cdb, 2)[0]
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        if rt == 3:
            raise cdb_error(1, 1)
        chosen = []
        for code, current, desc in self._features():
            if rt == 2 and code == start or rt == 1 and current and code >= start \
                    or rt == 0 and code >= start:
                chosen.append(desc)
        body = b"".join(chosen)
        header = struct.pack(">IxxH", 4 + len(body), self.profile)
        return ScsiResponse(GOOD, (header + body)[:alloc])

    # --------------------------------------- GET EVENT STATUS NOTIFICATION

    def _get_event_status(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if not cdb[1] & _GESN_POLLED:  # asynchronous notification is not supported
            raise cdb_error(1, 0)
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        if not cdb[4] & _MEDIA_CLASS_BIT:
            header = struct.pack(">HBB", 2, _NEA, _MEDIA_CLASS_BIT)
            return ScsiResponse(GOOD, header[:alloc])
        event = self._media_event
        self._media_event = MEDIA_NO_CHANGE
        status = _MEDIA_PRESENT if self.medium_loaded else 0
        body = bytes((event, status, 0, 0))
        header = struct.pack(">HBB", 2 + len(body), _CLASS_MEDIA, _MEDIA_CLASS_BIT)
        return ScsiResponse(GOOD, (header + body)[:alloc])

    # ----------------------------------------- READ DISC/TRACK INFORMATION

    def _read_disc_information(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x07:  # only standard disc information
            raise cdb_error(1, 2)
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        b = bytearray(34)
        struct.pack_into(">H", b, 0, 32)
        b[2] = 0x0E  # last session complete, disc complete, not erasable
        b[3] = b[4] = b[5] = b[6] = 1  # first track, sessions, tracks of last session
        b[7] = 0x20  # URU: unrestricted use
        struct.pack_into(">II", b, 16, 0xFFFFFFFF, 0xFFFFFFFF)  # no lead-in/out left
        return ScsiResponse(GOOD, bytes(b[:alloc]))

    def _read_track_information(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        kind = cdb[1] & 0x03
        number = struct.unpack_from(">I", cdb, 2)[0]
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        # Address type 0: the track holding an LBA; 1: track number.
        if kind == 0 and number >= self._num_blocks or kind == 1 and number != 1 or kind > 1:
            raise cdb_error(2, 7)
        b = bytearray(36)
        struct.pack_into(">H", b, 0, 34)
        b[2] = b[3] = 1  # track 1, session 1
        b[5] = 0x04  # track mode: data
        b[6] = 0x01  # data mode 1
        struct.pack_into(">II", b, 8, 0, 0)  # track start, next writable address
        struct.pack_into(">I", b, 24, self._num_blocks)  # track size
        return ScsiResponse(GOOD, bytes(b[:alloc]))

    def _mechanism_status(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = struct.unpack_from(">H", cdb, 8)[0]
        door_open = 0x10 if not self.medium_loaded else 0
        return ScsiResponse(GOOD, bytes((0, door_open, 0, 0, 0, 0, 0, 0))[:alloc])

    def _no_medium(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        raise ScsiError(MEDIUM_NOT_PRESENT)
