# Hot-path benchmark (not a test): microseconds of Python per READ(10) and
# WRITE(10) of 8 blocks through ScsiTarget.execute, and the bare pread for
# comparison. Run: python tests/scsi/bench_hotpath.py
from __future__ import annotations

import os
import struct
import tempfile
import timeit

from netstore.scsi import LogicalUnit, LunIdentity, RawFileBackend, ScsiTarget

IMAGE_BYTES = 64 * 1024 * 1024
ROUNDS = 200_000


def main() -> None:
    """Print µs per READ(10)/WRITE(10) of 8 blocks on a temporary image."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.img")
        with open(path, "wb") as f:
            f.truncate(IMAGE_BYTES)
        backend = RawFileBackend(path)
        lu = LogicalUnit(
            backend,
            LunIdentity(serial="bench", naa=bytes(8), target_name="iqn.2026-11.org.netstore:b"),
        )
        target = ScsiTarget("iqn.2026-11.org.netstore:b", {0: lu})
        read10 = struct.pack(">BBIBHB", 0x28, 0, 64, 0, 8, 0) + bytes(6)
        write10 = struct.pack(">BBIBHB", 0x2A, 0, 64, 0, 8, 0) + bytes(6)
        payload = bytes(4096)
        nexus = "iqn.1994-05.com.example:init,0x023d00000001"
        target.execute(nexus, 0, read10, None)  # consume the power-on UA
        assert target.execute(nexus, 0, read10, None).status == 0
        fd = backend.fd
        for label, stmt in (
            ("os.pread 4 KiB alone", lambda: os.pread(fd, 4096, 32768)),
            ("READ(10) 8 blocks", lambda: target.execute(nexus, 0, read10, None)),
            ("WRITE(10) 8 blocks", lambda: target.execute(nexus, 0, write10, payload)),
        ):
            best = min(timeit.repeat(stmt, number=ROUNDS, repeat=5)) / ROUNDS * 1e6
            print(f"{label:24s} {best:6.2f} µs")
        target.close()


if __name__ == "__main__":
    main()
