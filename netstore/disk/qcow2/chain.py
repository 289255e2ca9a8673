# The backing chain of a qcow2 layer: where a backing name points, the loop
# and depth checks, and opening each backing file read-only (a qcow2 one
# through its own chain).
"""qcow2 backing files: :func:`open_backing`, :func:`probe_backing`."""

from __future__ import annotations

import os
from collections.abc import Callable

from netstore.disk.api import DiskError, DiskImage, ImageFormatError, UnsupportedImageError
from netstore.disk.qcow2.format import MAX_CHAIN_DEPTH, probe_format, resolve_backing
from netstore.disk.raw import RawImage


def open_backing(
    image_path: str,
    name: str,
    fmt: str | None,
    seen: list[str],
    open_qcow2: Callable[[str, list[str]], DiskImage],
) -> DiskImage:
    """Open the backing file `name` of `image_path` read-only, through its own chain.

    `seen` holds the real paths of the layers above; `open_qcow2(path, seen)`
    opens a qcow2 backing file (the engine passes its own class).

    Raises:
        DiskError: the file is missing; ImageFormatError: the chain loops or is
            too deep; UnsupportedImageError: a format other than raw or qcow2.
    """
    target = resolve_backing(image_path, name)
    if not os.path.exists(target):
        raise DiskError(f"{image_path}: backing file {name} not found (looked at {target})")
    real = os.path.realpath(target)
    if real in seen:
        raise ImageFormatError(f"{image_path}: backing chain loops: {' -> '.join([*seen, real])}")
    if len(seen) >= MAX_CHAIN_DEPTH:
        raise ImageFormatError(f"{image_path}: backing chain deeper than {MAX_CHAIN_DEPTH}")
    if fmt is None:
        fmt = probe_format(target)
    if fmt == "qcow2":
        return open_qcow2(target, seen)
    if fmt == "raw":
        return RawImage(target, read_only=True)
    raise UnsupportedImageError(
        f"{image_path}: backing file {name} has format {fmt!r}; only raw and qcow2 backing files"
    )


def probe_backing(image_path: str, name: str) -> str:
    """The format ("qcow2" or "raw") of the backing file `name` of `image_path`."""
    return probe_format(resolve_backing(image_path, name))
