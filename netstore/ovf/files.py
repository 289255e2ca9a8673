# How a File of the References is stored in a package (DSP0243 1.x/2.0,
# "References"): ovf:compression="gzip" (the file as stored is a gzip stream;
# "identity" or none: as is) and ovf:chunkSize (the stored file is cut in
# pieces NAME.000000000, NAME.000000001, ... each chunkSize bytes but the
# last, as ovftool writes and vSphere names them).  Compression comes first,
# then chunking, so ovf:size is the size of the whole compressed file, and a
# manifest lists each chunk under its own name.  Writing: gzip a file, the
# ranges of its chunks; reading: the stored names of a File, the chunks
# joined and checked, the gzip stream unpacked, each into the import's
# temporary directory.
"""gzip-compressed and chunked package files: names, split, join, unpack."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from netstore.ovf.errors import ManifestError, OvfError, OvfFormatError, UnsupportedOvfError

COMPRESSIONS = ("identity", "gzip")
CHUNK_DIGITS = 9  # ovftool's NAME.000000000
COPY_CHUNK = 1 << 20
GZIP_LEVEL = 6  # gzip(1)'s default, as ovftool
# Free space an unpacked file must leave on its file system (the host's own).
UNPACK_RESERVE = 256 << 20

Counter = Callable[[int], None]


def read_file_attrs(href: str, compression: str | None,
                    chunk_size: str | None) -> tuple[str | None, int | None]:
    """(compression, chunk size) of a References/File's attributes;
    compression None for "identity" or none.

    Raises:
        UnsupportedOvfError: a compression other than gzip (bzip2: named).
        OvfFormatError: a chunk size that is not a positive whole number.
    """
    comp = None if compression in (None, "", "identity") else compression
    if comp is not None and comp not in COMPRESSIONS:
        raise UnsupportedOvfError(f"file {href} is {comp}-compressed; netstore reads gzip "
                                  "and uncompressed files")
    size = None
    if chunk_size is not None:
        try:
            size = int(chunk_size.strip())
        except ValueError:
            size = 0
        if size <= 0:
            raise OvfFormatError(f"file {href}: ovf:chunkSize {chunk_size!r} is not a "
                                 "positive whole number of bytes")
    return comp, size


def chunk_name(href: str, index: int) -> str:
    """The stored name of chunk `index` (from 0) of `href`."""
    return f"{href}.{index:0{CHUNK_DIGITS}d}"


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a file of `size` bytes is cut into (one at least)."""
    return max(1, -(-size // chunk_size))


def chunk_ranges(size: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each chunk of a file of `size` bytes."""
    for i in range(chunk_count(size, chunk_size)):
        yield i * chunk_size, min(chunk_size, size - i * chunk_size)


def stored_names(href: str, size: int | None, chunk_size: int | None,
                 present: Callable[[str], bool]) -> list[str]:
    """The names a File is stored under: `href`, or its chunks.  The count
    of chunks comes from ovf:size when the descriptor gives it, otherwise
    from the chunks present (`present(name)`), stopping at the first absent.
    """
    if chunk_size is None:
        return [href]
    if size is not None:
        return [chunk_name(href, i) for i in range(chunk_count(size, chunk_size))]
    names = []
    while present(name := chunk_name(href, len(names))):
        names.append(name)
    return names or [chunk_name(href, 0)]


def join_chunks(parts: list[tuple[str, Path]], chunk_size: int, dst: Path,
                count: Counter | None = None) -> None:
    """Write the chunks (name, local file), in order, into `dst`.

    Raises:
        OvfFormatError: a chunk but the last that is not chunkSize bytes, or
            a last chunk that is empty or larger (named).
    """
    with open(dst, "xb") as out:
        for i, (name, path) in enumerate(parts):
            n = path.stat().st_size
            last = i == len(parts) - 1
            if (n != chunk_size and not last) or (last and not 0 < n <= chunk_size
                                                  and not (n == 0 and len(parts) == 1)):
                raise OvfFormatError(f"{name}: chunk {i + 1} of {len(parts)} holds {n} bytes; "
                                     f"each but the last holds the chunkSize, {chunk_size}")
            with open(path, "rb") as f:
                while data := f.read(COPY_CHUNK):
                    out.write(data)
                    if count:
                        count(len(data))


def gzip_file(src: Path, dst: Path, count: Counter | None = None) -> None:
    """Compress `src` into `dst` (a gzip stream, no file name in its header)."""
    with open(src, "rb") as f, open(dst, "xb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL,
                          mtime=0) as out:
        while data := f.read(COPY_CHUNK):
            out.write(data)
            if count:
                count(len(data))


def room(directory: Path) -> int:
    """Bytes a file unpacked into `directory` may take: its file system's free
    space less UNPACK_RESERVE (a gzip bomb must not fill the host's disk)."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize - UNPACK_RESERVE


def gunzip_file(href: str, src: Path, dst: Path, count: Counter | None = None) -> None:
    """Unpack the gzip stream `src` into `dst` (removed again on failure).

    Raises:
        OvfFormatError: not gzip, damaged or cut short; names `href`.
        OvfError: unpacked, it would not fit on the file system of `dst`.
    """
    limit = room(dst.parent)
    written = 0
    try:
        with gzip.open(src, "rb") as f, open(dst, "xb") as out:
            while data := f.read(COPY_CHUNK):
                written += len(data)
                if written > limit:
                    raise OvfError(f"{href}: unpacked it grows past the {max(limit, 0)} bytes "
                                   f"free on {dst.parent} (less a reserve); not imported")
                out.write(data)
                if count:
                    count(len(data))
    except EOFError:
        dst.unlink(missing_ok=True)
        raise OvfFormatError(f"{href}: its gzip stream is cut short (the file is truncated)"
                             ) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        dst.unlink(missing_ok=True)
        raise OvfFormatError(f"{href}: ovf:compression says gzip but the file is not a whole "
                             f"gzip stream ({e})") from None
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def unpack_stored(href: str, parts: list[tuple[str, Path | None]], size: int | None,
                  compression: str | None, chunk_size: int | None, tmp: Path,
                  count: Counter | None = None) -> Path | None:
    """The local file holding `href`'s content: its chunks joined, its gzip
    stream unpacked (new files in `tmp`), or None when it is stored as is.

    Raises:
        ManifestError: a chunk missing (named).
        OvfFormatError: ovf:size differs from what is stored; a chunk of the
            wrong size; a damaged gzip stream.
    """
    if chunk_size is None and compression is None:
        return None
    for i, (name, path) in enumerate(parts):
        if path is None:
            raise ManifestError(f"{name}: chunk {i + 1} of {len(parts)} of {href} is missing "
                                "from the package (refused)")
    local = [(n, p) for n, p in parts if p is not None]
    stem = tmp / str(len(os.listdir(tmp)))  # tmp is the caller's own directory
    if chunk_size is not None:
        joined = stem.with_name(stem.name + ".joined")
        join_chunks(local, chunk_size, joined, count)
    else:
        joined = local[0][1]
    stored = joined.stat().st_size
    if size is not None and size != stored:
        raise OvfFormatError(f"{href}: {stored} bytes stored, but the descriptor says {size}")
    if compression is None:
        return joined
    out = stem.with_name(stem.name + ".data")
    gunzip_file(href, joined, out, count)
    if chunk_size is not None:
        os.unlink(joined)
    return out


__all__ = [
    "COMPRESSIONS",
    "read_file_attrs",
    "chunk_name",
    "chunk_count",
    "chunk_ranges",
    "stored_names",
    "join_chunks",
    "gzip_file",
    "gunzip_file",
    "unpack_stored",
]
