# qcow2 (version 3, reading version 2 too), as QEMU's docs/interop/qcow2.txt
# describes it, in pure Python on os.pread/os.pwrite: format.py holds the
# on-disk structures, create.py makes and probes files, image.py is the
# engine (clusters.py its refcounts and allocation, extents.py its map,
# chain.py its backing files).
"""qcow2 images: :func:`create_qcow2`, :class:`Qcow2Image`, :func:`probe_qcow2`."""

from netstore.disk.qcow2.create import create_qcow2, probe_qcow2
from netstore.disk.qcow2.format import (
    MAGIC,
    MAX_CHAIN_DEPTH,
    Qcow2Header,
    probe_format,
    resolve_backing,
)
from netstore.disk.qcow2.image import DEFAULT_L2_CACHE_TABLES, Qcow2Image

# The name layers.py and the registry import (a backing name resolved
# against the image's directory).
_resolve_backing = resolve_backing

__all__ = [
    "DEFAULT_L2_CACHE_TABLES",
    "MAGIC",
    "MAX_CHAIN_DEPTH",
    "Qcow2Header",
    "Qcow2Image",
    "create_qcow2",
    "probe_format",
    "probe_qcow2",
    "resolve_backing",
]
