# Hot-path benchmark (not a test): microseconds of Python per READ(10) and
# WRITE(10) of 8 blocks through ScsiTarget.execute, and the bare pread for
# comparison. Run: python tests/scsi/bench_hotpath.py
from __future__ import annotations

import os
import struct
import tempfile
import timeit

from netstore.disk.raw import RawImage
from netstore.scsi import LogicalUnit, LunIdentity, ScsiTarget

IMAGE_BYTES = 64 * 1024 * 1024
ROUNDS = 200_000


class _FreeReads:
    """A DiskImage whose reads cost nothing: measures the SCSI layer alone."""

    block_size = 512
    read_only = False

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._buf = bytes(4096)

    def pread(self, offset: int, length: int) -> bytes:
        return self._buf

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> None:
    """Print µs per READ(10)/WRITE(10) of 8 blocks on a temporary image."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.img")
        with open(path, "wb") as f:
            f.truncate(IMAGE_BYTES)
        backend = RawImage(path)
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
        # Python cost alone: the same LU on a backend whose pread is free.
        lu2 = LogicalUnit(_FreeReads(backend.num_blocks), lu.identity)
        t2 = ScsiTarget("iqn.2026-11.org.netstore:b", {0: lu2})
        t2.execute(nexus, 0, read10, None)
        stmt = lambda: t2.execute(nexus, 0, read10, None)  # noqa: E731
        best = min(timeit.repeat(stmt, number=ROUNDS, repeat=5)) / ROUNDS * 1e6
        print(f"{'READ(10) Python only':24s} {best:6.2f} µs")
        target.close()


if __name__ == "__main__":
    main()
