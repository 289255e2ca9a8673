# The OVF package on disk: an OVA is a tar (ustar) whose first member is the
# descriptor (DSP0243 section 5.3; VirtualBox refuses an OVA otherwise), then
# the files, then the manifest; or a plain .ovf with its files beside it.
# The manifest holds one "SHA256(name)= hex" line per file (SHA1 or SHA512
# if asked), as VirtualBox and ovftool write it; any of the three is read.
# A chunked file is listed chunk by chunk (files.py).  A signed package has
# a NAME.cert after its manifest (signing.py).  Reading refuses any member
# name that could land outside the directory it is unpacked into.
"""OVA tar files and OVF manifests: write, unpack, verify."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from netstore.ovf.errors import ManifestError, OvfFormatError, UntrustedError
from netstore.ovf.signing import verify_cert_file

COPY_CHUNK = 1 << 20
# ustar keeps sizes in 11 octal digits: below 8 GiB.  A bigger member makes
# the archive GNU format (sizes in base-256), which VirtualBox, ovftool and
# GNU tar read.
USTAR_MAX_SIZE = (1 << 33) - 1
MANIFEST_ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256,
                       "SHA512": hashlib.sha512}
_MANIFEST_LINE = re.compile(r"\s*([A-Za-z0-9-]+)\s*\((.+)\)\s*=\s*(\S*)\s*")
_HEX = re.compile(r"[0-9A-Fa-f]+")
# A manifest lists a few files; megabytes of it are not a manifest.
MAX_MANIFEST_BYTES = 1 << 20

Counter = Callable[[int], None]  # bytes just copied


def check_member_name(name: str, where: str) -> str:
    """`name` if it is a safe relative file name of a package (no absolute
    path, no '..', no backslash, no empty component).

    Raises:
        OvfFormatError: naming the member and why.
    """
    p = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(part in ("..", "") for part in name.split("/"))
            or p.is_absolute()):
        raise OvfFormatError(f"{where}: member name {name!r} leaves the package (absolute or "
                             "'..'); refused")
    return name


def manifest_text(digests: list[tuple[str, str]], algorithm: str = "SHA256") -> bytes:
    """The manifest listing (name, hex digest) pairs, digests by `algorithm`."""
    return "".join(f"{algorithm}({name})= {digest}\n" for name, digest in digests).encode()


def parse_manifest(data: bytes, where: str) -> dict[str, tuple[str, str]]:
    """name -> (algorithm, lowercase hex digest) of a manifest.

    Raises:
        ManifestError: a line that is not `ALG(name)= hex`, an algorithm
            other than SHA1/SHA256/SHA512, a digest that is not hexadecimal
            or of the wrong length, a file listed twice (each named).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: {len(data)} bytes is too large for a manifest")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: the manifest is not text") from None
    out: dict[str, tuple[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _MANIFEST_LINE.fullmatch(line)
        if not m:
            raise ManifestError(f"{where} line {n}: expected 'SHA256(file)= hex', got {line!r}")
        alg, name, digest = m.group(1).upper(), m.group(2).strip(), m.group(3).lower()
        if alg not in MANIFEST_ALGORITHMS:
            raise ManifestError(f"{where} line {n}: digest algorithm {m.group(1)!r}; expected "
                                f"one of {', '.join(MANIFEST_ALGORITHMS)}")
        if not _HEX.fullmatch(digest):
            raise ManifestError(f"{where} line {n}: the {alg} digest of {name} is not "
                                f"hexadecimal: {m.group(3)[:80]!r}")
        if len(digest) != MANIFEST_ALGORITHMS[alg]().digest_size * 2:
            raise ManifestError(f"{where} line {n}: a {alg} digest has "
                                f"{MANIFEST_ALGORITHMS[alg]().digest_size * 2} hex digits")
        if name in out:
            raise ManifestError(f"{where}: {name} is listed twice")
        out[name] = (alg, digest)
    return out


def file_digest(path: str | os.PathLike[str], algorithm: str = "SHA256",
                count: Counter | None = None) -> str:
    h = MANIFEST_ALGORITHMS[algorithm]()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
            if count:
                count(len(chunk))
    return h.hexdigest()


class OvaWriter:
    """Writes an OVA member by member; each file's digest (by `algorithm`)
    is taken as it is copied, so the manifest written last costs no second
    read."""

    def __init__(self, path: str | os.PathLike[str], large: bool,
                 algorithm: str = "SHA256") -> None:
        fmt = tarfile.GNU_FORMAT if large else tarfile.USTAR_FORMAT
        self._tar = tarfile.open(path, "w", format=fmt)
        self._mtime = int(time.time())
        self.algorithm = algorithm
        self.digests: list[tuple[str, str]] = []

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, self._mtime
        info.uname = info.gname = "netstore"
        return info

    def add_bytes(self, name: str, data: bytes, *, digest: bool = True) -> None:
        import io

        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        if digest:
            self.digests.append((name, MANIFEST_ALGORITHMS[self.algorithm](data).hexdigest()))

    def add_file(self, name: str, path: str | os.PathLike[str], count: Counter | None = None,
                 *, offset: int = 0, length: int | None = None) -> None:
        """Add `path` (or `length` bytes of it from `offset`: a chunk) as `name`."""
        size = os.stat(path).st_size - offset if length is None else length
        h = MANIFEST_ALGORITHMS[self.algorithm]()
        with open(path, "rb") as f:
            f.seek(offset)
            self._tar.addfile(self._info(name, size), _Hashing(f, h, count))
        self.digests.append((name, h.hexdigest()))

    def add_manifest(self, name: str) -> bytes:
        """Write the manifest of the files added so far; returns it."""
        text = manifest_text(self.digests, self.algorithm)
        self.add_bytes(name, text, digest=False)
        return text

    def close(self) -> None:
        self._tar.close()


class _Hashing:
    # a file object that hashes what tarfile reads through it
    def __init__(self, f: BinaryIO, h: Any, count: Counter | None) -> None:
        self._f, self._h, self._count = f, h, count

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        if self._count and data:
            self._count(len(data))
        return data


@dataclass
class Unpacked:
    """A package's files as local paths: the descriptor, the manifest (if
    any) and its other files by their names in the package.  For a plain
    .ovf, ``base`` is its directory and files are looked up beside it."""

    descriptor: Path
    manifest: Path | None
    files: dict[str, Path]
    sha256: dict[str, str]  # digests taken while unpacking (OVA only)
    source: str  # the OVA or OVF file name, for messages
    base: Path | None = None
    cert: Path | None = None  # NAME.cert of a signed package
    # a File's content unpacked from its gzip stream or chunks (files.py), by href
    resolved: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> Path | None:
        """The local file of package member `name` (the content of File
        `name` once resolved), None when it is absent.

        Raises:
            OvfFormatError: a name leaving the package (../x).
        """
        if name in self.resolved:
            return self.resolved[name]
        if name == self.descriptor.name:
            return self.descriptor
        if self.base is None:
            return self.files.get(name)
        check_member_name(name, self.source)
        p = self.base / name
        return p if p.is_file() else None

    def movable(self, name: str) -> bool:
        """Whether the local file of `name` is the import's own (may be moved)."""
        return self.base is None or name in self.resolved


def unpack_ova(ova: str | os.PathLike[str], dest: Path, count: Counter | None = None) -> Unpacked:
    """Copy the OVA's members into `dest`, taking each one's SHA256.

    Raises:
        OvfFormatError: not a tar; the first member not a .ovf; two .ovf; a
            member name leaving the package; a member that is not a plain file.
    """
    ova = str(ova)
    where = os.path.basename(ova)
    try:
        tar = tarfile.open(ova, "r:")
    except (tarfile.TarError, OSError) as e:
        raise OvfFormatError(f"{where}: not an OVA (not a tar archive: {e})") from None
    with tar:
        try:
            members = tar.getmembers()
        except tarfile.TarError as e:
            raise OvfFormatError(f"{where}: a damaged tar archive ({e})") from None
        if not members:
            raise OvfFormatError(f"{where}: an empty tar archive, not an OVA")
        names: set[str] = set()
        for m in members:
            check_member_name(m.name, where)
            if not m.isfile():
                raise OvfFormatError(f"{where}: member {m.name} is not a plain file (a link, "
                                     "directory or device); an OVA holds plain files")
            if m.name in names:
                raise OvfFormatError(f"{where}: member {m.name} appears twice")
            names.add(m.name)
        if not members[0].name.lower().endswith(".ovf"):
            raise OvfFormatError(f"{where}: the first member is {members[0].name}; an OVA "
                                 "starts with its OVF descriptor (.ovf)")
        ovfs = [m.name for m in members if m.name.lower().endswith(".ovf")]
        if len(ovfs) > 1:
            raise OvfFormatError(f"{where}: holds {len(ovfs)} descriptors ({', '.join(ovfs)}); "
                                 "an OVA has one")
        files: dict[str, Path] = {}
        digests: dict[str, str] = {}
        for m in members:
            target = dest / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            h = hashlib.sha256()
            with src, open(target, "xb") as out:
                while chunk := src.read(COPY_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    if count:
                        count(len(chunk))
            if target.stat().st_size != m.size:
                raise OvfFormatError(f"{where}: member {m.name} is cut short (the tar is "
                                     "truncated)")
            files[m.name] = target
            digests[m.name] = h.hexdigest()
    stem = ovfs[0][:-4]
    mfs = [n for n in files if n.lower().endswith(".mf")]
    manifest = files.get(stem + ".mf") or (files[mfs[0]] if len(mfs) == 1 else None)
    cert = files.get((manifest.name[:-3] if manifest else stem) + ".cert")
    return Unpacked(files.pop(ovfs[0]), manifest, files, digests, where, cert=cert)


def open_ovf(path: str | os.PathLike[str]) -> Unpacked:
    """A plain .ovf; its files and manifest (NAME.mf) are beside it."""
    ovf = Path(path).absolute()
    mf, cert = ovf.with_suffix(".mf"), ovf.with_suffix(".cert")
    return Unpacked(ovf, mf if mf.is_file() else None, {}, {}, ovf.name, base=ovf.parent,
                    cert=cert if cert.is_file() else None)


def verify_signature(pkg: Unpacked, require_trusted: bool) -> list[str]:
    """Check the package's .cert against its manifest (before the manifest is
    trusted for anything).  Returns warnings (an untrusted certificate).

    Raises:
        SignatureError: a .cert without a manifest, a bad signature.
        UntrustedError: unsigned or untrusted while `require_trusted`.
    """
    if pkg.cert is None:
        if require_trusted:
            raise UntrustedError(f"{pkg.source} is not signed (no .cert); refused "
                                 "(--require-trusted)")
        return []
    if pkg.manifest is None:
        raise ManifestError(f"{pkg.cert.name}: a certificate file but no manifest to check it "
                            "against (refused)")
    return verify_cert_file(pkg.cert.read_bytes(), pkg.cert.name, pkg.manifest.name,
                            pkg.manifest.read_bytes(), require_trusted=require_trusted)


def verify_digests(pkg: Unpacked, count: Counter | None = None) -> list[str]:
    """Check every file the manifest lists against its digest (before anything
    else reads them).  Returns warnings (there is no manifest).

    Raises:
        ManifestError: naming the first file missing or changed.
    """
    if pkg.manifest is None:
        return [f"{pkg.source} has no manifest; its files' integrity was not checked"]
    mf_name = pkg.manifest.name
    listed = parse_manifest(pkg.manifest.read_bytes(), mf_name)
    for name, (alg, digest) in listed.items():
        path = pkg.path(name)
        if path is None:
            raise ManifestError(f"{name}: listed in the manifest {mf_name} but missing from "
                                f"{pkg.source} (refused)")
        if alg == "SHA256" and name in pkg.sha256:
            actual = pkg.sha256[name]
        else:
            actual = file_digest(path, alg, count)
        if actual != digest:
            raise ManifestError(f"{name}: its {alg} digest does not match the manifest "
                                f"{mf_name}; the file was changed or damaged (refused)")
    return []


def verify_coverage(pkg: Unpacked, needed: list[str]) -> None:
    """Every file of `needed` (the descriptor's References) is present and, when
    there is a manifest, listed in it with the descriptor itself.

    Raises:
        ManifestError: naming the file.
    """
    for name in needed:
        if pkg.path(name) is None:
            raise ManifestError(f"{name}: the descriptor references it but {pkg.source} "
                                "lacks it (refused)")
    if pkg.manifest is None:
        return
    listed = parse_manifest(pkg.manifest.read_bytes(), pkg.manifest.name)
    for name in [pkg.descriptor.name, *needed]:
        if name not in listed:
            raise ManifestError(f"{name}: not covered by the manifest {pkg.manifest.name} "
                                "(refused)")


def copy_into(src: Path, dst: Path, *, move: bool) -> None:
    """Put `src` at `dst` (which must not exist): renamed when `move` and on
    one file system, copied otherwise."""
    if move:
        try:
            os.link(src, dst)
            os.unlink(src)
            return
        except OSError:
            pass
    with open(src, "rb") as f, open(dst, "xb") as out:
        shutil.copyfileobj(f, out, COPY_CHUNK)


__all__ = [
    "OvaWriter",
    "Unpacked",
    "check_member_name",
    "manifest_text",
    "parse_manifest",
    "file_digest",
    "unpack_ova",
    "open_ovf",
    "verify_digests",
    "verify_signature",
    "verify_coverage",
    "copy_into",
    "USTAR_MAX_SIZE",
]
