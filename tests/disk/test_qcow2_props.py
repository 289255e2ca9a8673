"""Property: random writes and reads (crossing cluster boundaries, small
clusters so L2 tables and refcount blocks keep being allocated) on a chain of
three layers equal a bytearray model; qemu-img then checks every layer clean
and finds the top equal to the model."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.disk import layers
from netstore.disk.qcow2 import Qcow2Image, create_qcow2
from tests.peers import needs_qemu, qemu_check, qemu_img

pytestmark = needs_qemu
SIZE = 3 << 20 | 1536  # not a multiple of any cluster size above 512

op = st.tuples(
    st.sampled_from(["write", "read", "discard"]),
    st.integers(0, SIZE - 1),
    st.integers(1, 40_000),
    st.integers(0, 255),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    cluster_sizes=st.lists(st.sampled_from([512, 1024, 4096, 65536]), min_size=3, max_size=3),
    phases=st.lists(st.lists(op, max_size=25), min_size=3, max_size=3),
)
def test_chain_of_three_matches_model(cluster_sizes, phases):
    with tempfile.TemporaryDirectory() as d:
        model = bytearray(SIZE)
        paths = [os.path.join(d, f"l{i}.qcow2") for i in range(3)]
        create_qcow2(paths[0], SIZE, cluster_size=cluster_sizes[0])
        for i, ops in enumerate(phases):
            if i:
                create_qcow2(
                    paths[i], None, backing=f"l{i - 1}.qcow2", cluster_size=cluster_sizes[i]
                )
            with Qcow2Image(paths[i]) as img:
                for kind, off, n, byte in ops:
                    n = min(n, SIZE - off)
                    if kind == "write":
                        data = bytes([byte]) * n
                        img.pwrite(off, data)
                        model[off : off + n] = data
                    elif kind == "read":
                        assert img.pread(off, n) == model[off : off + n]
                    else:
                        img.discard(off, n)
                        cs = img.cluster_size
                        first = -(-off // cs) * cs
                        end = off + n
                        last = SIZE if end == SIZE else end // cs * cs
                        if last > first:
                            model[first:last] = bytes(last - first)
                assert img.pread(0, SIZE) == model
                img.flush()
        assert layers.chain(paths[2]) == [paths[2], paths[1], paths[0]]
        for p in paths:
            info = qemu_check(p)
            assert info.get("leaks", 0) == 0
        raw = os.path.join(d, "model.raw")
        with open(raw, "wb") as f:
            f.write(model)
        r = qemu_img("compare", "-f", "qcow2", "-F", "raw", paths[2], raw, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
