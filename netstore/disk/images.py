# Image files by format: detect a file's format from its bytes (never its
# name; formats/detect.py knows the magic of every format qemu-img knows and
# the ones netstore does not read are refused by name here, at every entry
# point), open it as a DiskImage, create new images, convert between formats
# (copying only allocated data), grow them, and set the UUID kept inside.
# The media registry and the CLI work through these functions only; the
# format modules (raw.py, qcow2/, formats/) stay behind them.
"""Probe, open, create, convert, resize and re-identify disk image files."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from netstore.disk.api import (
    SECTOR,
    DiskError,
    DiskImage,
    ImageFormatError,
    ImageInfo,
    Progress,
    UnsupportedImageError,
)
from netstore.disk.formats import check_uuid, detect, new_uuid, vdi, vhd, vmdk
from netstore.disk.formats.parallels import ParallelsImage
from netstore.disk.formats.vdi import VdiImage, VdiWriter
from netstore.disk.formats.vhd import VhdImage, VhdWriter
from netstore.disk.formats.vhdx import VhdxImage, VhdxWriter
from netstore.disk.formats.vmdk import StreamOptimizedWriter, VmdkImage
from netstore.disk.formats.vmdk_sparse import MonolithicSparseWriter
from netstore.disk.qcow2 import Qcow2Image, create_qcow2, probe_qcow2
from netstore.disk.raw import RawImage, create_raw, resize_raw

# convert copies in chunks this large; all-zero chunks are not written.
COPY_CHUNK = 1 << 20
_ZERO_CHUNK = bytes(COPY_CHUNK)


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """What netstore does with one image format."""

    name: str
    read: bool
    write: bool  # create/convert to
    read_write_open: bool  # open_image gives a writable DiskImage
    variants: tuple[str, ...]  # variants written (create/convert); the first is the default
    stores_uuid: bool
    qemu_name: str  # the name qemu-img uses (-f/-O)


FORMATS: dict[str, FormatSpec] = {
    "raw": FormatSpec("raw", True, True, True, ("dynamic", "fixed"), False, "raw"),
    "qcow2": FormatSpec("qcow2", True, True, True, ("dynamic", "fixed"), False, "qcow2"),
    "vdi": FormatSpec("vdi", True, True, False, ("dynamic", "fixed"), True, "vdi"),
    "vmdk": FormatSpec("vmdk", True, True, False, ("streamOptimized", "monolithicSparse"), True,
                       "vmdk"),
    "vhd": FormatSpec("vhd", True, True, False, ("dynamic", "fixed"), True, "vpc"),
    "vhdx": FormatSpec("vhdx", True, True, False, ("dynamic", "fixed"), True, "vhdx"),
    "parallels": FormatSpec("parallels", True, False, False, (), False, "parallels"),
}
# The read-only readers, by format.
_READERS = {"vdi": VdiImage, "vmdk": VmdkImage, "vhd": VhdImage, "vhdx": VhdxImage,
            "parallels": ParallelsImage}


def _spec(fmt: str) -> FormatSpec:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise DiskError(f"unknown image format {fmt!r} (known: {', '.join(FORMATS)})") from None


def identify(path: str) -> str:
    """What the bytes of the file at `path` say it is (never its name): a key
    of FORMATS, a format netstore does not read (a key of
    formats.detect.FOREIGN: "qed", "luks", ...), or "raw" when no known
    magic matches.  Most callers want detect_format, which refuses the latter.

    Raises:
        DiskError: the file cannot be opened or read, or is a directory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DiskError(f"{path}: cannot open: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DiskError(f"{path} is a directory, not an image file (for a Parallels .hdd "
                            "bundle give the .hds file inside it)")
        size = st.st_size
        head = os.pread(fd, detect.HEAD_BYTES, 0)
        tail = os.pread(fd, detect.TAIL_BYTES, size - detect.TAIL_BYTES) if size >= detect.TAIL_BYTES else b""
    except OSError as e:
        raise DiskError(f"{path}: cannot read: {e.strerror}") from e
    finally:
        os.close(fd)
    return detect.sniff(head, tail)


def detect_format(path: str) -> str:
    """The format of the file at `path`, from its magic numbers and footers
    (formats.detect has them all); "raw" when none matches.

    Raises:
        UnsupportedImageError: an image of a format qemu-img knows and netstore
            does not read (qcow version 1, QED, LUKS, DMG, cloop, bochs, VMDK
            version 3), the format named in the message.
        DiskError: the file cannot be opened or read.
    """
    path = str(path)
    fmt = identify(path)
    if fmt in detect.FOREIGN:
        raise detect.refusal(path, fmt)
    return fmt


def _reader_class(fmt: str):  # type: ignore[no-untyped-def]
    try:
        return _READERS[fmt]
    except KeyError:
        raise DiskError(f"no reader for format {fmt!r}") from None


def open_image(path: str, *, read_only: bool = False, format: str | None = None) -> DiskImage:
    """Open an image file as a DiskImage.

    Args:
        path: the image file.
        read_only: refuse writes.  raw and qcow2 open writable otherwise;
            vdi, vmdk, vhd, vhdx and parallels are always read-only (their
            ``read_only`` is True and ``pwrite`` raises DiskError).
        format: skip detection and open as this format (a key of FORMATS).

    Raises:
        ImageFormatError / UnsupportedImageError: damaged or unsupported file.
        DiskError: the file cannot be opened, or an unknown format was named.
    """
    path = str(path)
    fmt = format or detect_format(path)
    _spec(fmt)
    if fmt == "raw":
        return RawImage(path, read_only=read_only)
    if fmt == "qcow2":
        return Qcow2Image(path, read_only=read_only)
    return _reader_class(fmt)(path)


def probe(path: str) -> ImageInfo:
    """Format, variant, sizes and UUID of the image at `path` (format detected
    from its contents, never its name).

    Raises:
        ImageFormatError / UnsupportedImageError: a damaged or unsupported image.
        DiskError: the file cannot be opened.
    """
    path = str(path)
    fmt = detect_format(path)
    if fmt == "qcow2":
        return probe_qcow2(path)
    if fmt == "raw":
        st = os.stat(path)
        allocated = getattr(st, "st_blocks", 0) * 512
        return ImageInfo(path=path, format="raw", variant="fixed" if allocated >= st.st_size else "dynamic",
                         virtual_size=st.st_size, file_size=st.st_size, uuid=None)
    with _reader_class(fmt)(path) as img:
        return ImageInfo(path=path, format=fmt, variant=img.variant, virtual_size=img.virtual_size,
                         file_size=img.file_size, uuid=img.uuid)


class _NativeWriter:
    """A writer over a writable DiskImage (raw, qcow2) created empty first."""

    def __init__(self, path: str, image: DiskImage) -> None:
        self.path, self._image = path, image
        self.virtual_size = image.virtual_size

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        self._image.pwrite(offset, data)

    def close(self) -> None:
        self._image.flush()
        self._image.close()

    def abort(self) -> None:
        self._image.close()


def _new_writer(path: str, fmt: str, size: int, variant: str, uuid: str | None,
                progress: Progress | None):  # type: ignore[no-untyped-def]
    spec = _spec(fmt)
    if not spec.write:
        raise UnsupportedImageError(f"netstore reads {fmt} images but does not write them")
    if variant not in spec.variants and not (fmt == "vmdk" and variant == "dynamic"):
        raise DiskError(f"{fmt} images come as {', '.join(spec.variants)}, not {variant!r}")
    if size < 0:
        raise DiskError(f"{path}: negative size {size}")
    if os.path.lexists(path):
        raise DiskError(f"{path}: the file exists already")
    if fmt == "raw":
        create_raw(path, size, fixed=variant == "fixed", progress=progress)
        return _NativeWriter(path, RawImage(path))
    if fmt == "qcow2":
        create_qcow2(path, size, fixed=variant == "fixed", progress=progress)
        return _NativeWriter(path, Qcow2Image(path))
    if fmt == "vdi":
        return VdiWriter(path, size, variant=variant, uuid=uuid, progress=progress)
    if fmt == "vhd":
        return VhdWriter(path, size, variant=variant, uuid=uuid, progress=progress)
    if fmt == "vhdx":
        return VhdxWriter(path, size, variant=variant, uuid=uuid, progress=progress)
    if variant == "monolithicSparse":
        return MonolithicSparseWriter(path, size, uuid=uuid)
    return StreamOptimizedWriter(path, size, uuid=uuid)  # "dynamic" too, as it always was


def _remove_partial(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def create_image(path: str, format: str, size: int, *, variant: str = "dynamic",
                 uuid: str | None = None, progress: Progress | None = None) -> ImageInfo:
    """Create an empty image.

    Args:
        path: the new file; it must not exist.
        format: raw, qcow2, vdi, vhd, vhdx or vmdk (vmdk: streamOptimized,
            the default, or monolithicSparse).
        size: virtual size in bytes (vhd rounds up to a whole CHS geometry,
            others to a 512-byte sector).
        variant: "dynamic" (grows as written) or "fixed" (allocated now).
        uuid: stored inside where the format keeps one (vdi, vhd, vhdx, vmdk); a
            new one is generated there when None.  raw and qcow2 keep none.
        progress: (bytes done, bytes total) while a fixed image is allocated.

    Returns: what probe() sees in the new file.

    Raises:
        DiskError: the file exists, a bad format/variant/UUID, or an I/O error;
            a partly created file is removed.
    """
    path = str(path)
    if uuid is not None:
        uuid = check_uuid(uuid)
    elif FORMATS.get(format, FORMATS["raw"]).stores_uuid:
        uuid = new_uuid()
    if os.path.lexists(path):
        raise DiskError(f"{path}: the file exists already")
    try:
        writer = _new_writer(path, format, size, variant, uuid, progress)
        writer.close()
    except BaseException:
        _remove_partial(path)
        raise
    return probe(path)


def convert(src_path: str, dst_path: str, format: str, *, variant: str = "dynamic",
            uuid: str | None = None, progress: Progress | None = None) -> ImageInfo:
    """Copy the image `src_path` into a new image `dst_path` of `format`.

    Only the source's allocated extents are read, in 1 MiB chunks; chunks of
    zeros are not written.  The result reads equal to the source (qemu-img
    compare); a vhd destination may be a little larger (whole CHS geometry),
    the extra reading as zeros.

    Args:
        uuid: the destination's UUID where the format keeps one (new when None).
        progress: (bytes copied, bytes of allocated source data).

    Returns: probe() of the destination.

    Raises:
        DiskError (and subclasses): the destination exists, the source is
            damaged or unsupported, or I/O failed; the partial destination is
            removed.
    """
    src_path, dst_path = str(src_path), str(dst_path)
    if os.path.lexists(dst_path):
        raise DiskError(f"{dst_path}: the file exists already")
    if uuid is not None:
        uuid = check_uuid(uuid)
    src = open_image(src_path, read_only=True)
    try:
        runs = [e for e in src.extents() if e.allocated]
        total = sum(e.length for e in runs)
        size = src.virtual_size
        try:
            writer = _new_writer(dst_path, format, size, variant, uuid, None)
        except BaseException:
            _remove_partial(dst_path)
            raise
        try:
            done = 0
            if progress:
                progress(0, total)
            last_chunk = -1
            for run in runs:
                first = max(run.offset // COPY_CHUNK, last_chunk + 1)
                end_chunk = (run.offset + run.length - 1) // COPY_CHUNK
                for chunk in range(first, end_chunk + 1):
                    off = chunk * COPY_CHUNK
                    n = min(COPY_CHUNK, size - off)
                    data = src.pread(off, n)
                    if data != _ZERO_CHUNK[:n]:
                        writer.pwrite(off, data)
                    last_chunk = chunk
                done += run.length
                if progress:
                    progress(done, total)
            writer.close()
        except BaseException:
            try:
                writer.abort()
            except Exception:
                pass
            _remove_partial(dst_path)
            raise
    finally:
        src.close()
    try:
        return probe(dst_path)
    except DiskError:
        _remove_partial(dst_path)
        raise


def resize_image(path: str, new_size: int) -> None:
    """Grow the image at `path` to `new_size` bytes, data kept.

    raw and qcow2; dynamic vdi while its block map has room; fixed vhd (its
    size rounds up to a CHS geometry).  Shrinking is refused.

    Raises:
        UnsupportedImageError: the format (or variant) cannot grow here.
        DiskError: shrinking, or an I/O error.
    """
    path = str(path)
    fmt = detect_format(path)
    if fmt == "raw":
        resize_raw(path, new_size)
    elif fmt == "qcow2":
        with Qcow2Image(path) as img:
            img.resize(new_size)
            img.flush()
    elif fmt == "vdi":
        vdi.resize(path, new_size)
    elif fmt == "vhd":
        vhd.resize(path, new_size)
    else:
        raise UnsupportedImageError(f"{path}: growing {fmt} images is not supported")


def set_uuid(path: str, uuid: str) -> None:
    """Store `uuid` inside the image at `path` (vdi, vhd, vmdk).

    Raises:
        UnsupportedImageError: the format keeps no UUID (raw, qcow2) or netstore
            does not write it (vhdx).
        DiskError: not a UUID, a damaged image, or an I/O error.
    """
    path = str(path)
    uuid = check_uuid(uuid)
    fmt = detect_format(path)
    if fmt == "vdi":
        vdi.set_uuid(path, uuid)
    elif fmt == "vhd":
        vhd.set_uuid(path, uuid)
    elif fmt == "vmdk":
        vmdk.set_uuid(path, uuid)
    elif not FORMATS[fmt].stores_uuid:
        raise UnsupportedImageError(f"{path}: {fmt} images keep no UUID inside")
    else:
        raise UnsupportedImageError(f"{path}: netstore does not write {fmt} UUIDs")


__all__ = [
    "FORMATS",
    "FormatSpec",
    "COPY_CHUNK",
    "SECTOR",
    "ImageFormatError",
    "identify",
    "detect_format",
    "open_image",
    "probe",
    "create_image",
    "convert",
    "resize_image",
    "set_uuid",
]
