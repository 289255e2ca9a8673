# tests/registry/test_machine_layers.py - per-machine differencing layers of
# immutable and multiattach media (what the iSCSI target calls per initiator):
# created once, private per machine, reset discards the data, the base never
# changes; current_top for normal media.
"""Per-machine layers: layer_for, reset_layer, layer_at_power_on, discard_layer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from netstore.disk import layers
from netstore.disk.images import create_image, open_image, probe
from netstore.registry import MediumRuleError, Registry, machine_dir_name

MiB = 1 << 20
IQN1 = "iqn.1994-05.com.example:host1"
IQN2 = "iqn.1994-05.com.example:host2"


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write(path: Path, offset: int, data: bytes) -> None:
    with open_image(str(path)) as img:
        img.pwrite(offset, data)
        img.flush()


def _read(path: Path, offset: int, n: int) -> bytes:
    with open_image(str(path), read_only=True) as img:
        return img.pread(offset, n)


@pytest.fixture
def base(reg: Registry):  # type: ignore[no-untyped-def]
    m = reg.create("base", 4 * MiB, format="qcow2", type="immutable")
    _write(Path(m.location), 0, b"B" * 65536)
    return m


def test_layer_created_once_where_the_brief_says(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    p = reg.layer_for("base", IQN1)
    assert p == reg.state_dir / "media" / "diffs" / machine_dir_name(IQN1) / f"{base.uuid}.qcow2"
    assert ":" not in p.parent.name
    info = probe(str(p))
    assert info.format == "qcow2" and info.backing_file is not None
    assert layers.chain(str(p))[-1] == base.location
    _write(p, 4096, b"one")
    assert reg.layer_for("base", IQN1) == p  # second call: same layer, data kept
    assert _read(p, 4096, 3) == b"one"
    layer = reg.medium(f"base@{IQN1}")
    assert layer.owner == IQN1 and layer.parent_id == base.id and layer.is_layer
    assert [u.machine for u in reg.users_of("base")] == [IQN1]
    assert reg.machines_of(layer) == [IQN1]


def test_machines_see_only_their_writes_base_unchanged(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    before = _sha(base.location)
    reg.modify("base", type="multiattach")
    p1, p2 = reg.layer_for("base", IQN1), reg.layer_for("base", IQN2)
    assert p1 != p2
    _write(p1, 0, b"1" * 512)
    _write(p2, 0, b"2" * 512)
    assert _read(p1, 0, 512) == b"1" * 512 and _read(p2, 0, 512) == b"2" * 512
    assert _read(p1, 512, 4) == b"BBBB"
    assert _sha(base.location) == before
    assert reg.machines_of("base") == [IQN1, IQN2]


def test_reset_discards_the_data(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    before = _sha(base.location)
    p = reg.layer_for("base", IQN1)
    _write(p, 1 << 20, b"X" * 8192)
    assert _read(p, 1 << 20, 8192) == b"X" * 8192
    assert reg.reset_layer("base", IQN1) == p
    assert _read(p, 1 << 20, 8192) == bytes(8192)  # zeros again
    assert _read(p, 0, 4) == b"BBBB"  # base shows through
    assert _sha(base.location) == before
    assert len(reg.children("base")) == 1


def test_power_on_resets_only_immutable_with_autoreset(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    p = reg.layer_at_power_on("base", IQN1)
    _write(p, 0, b"gone")
    p = reg.layer_at_power_on("base", IQN1)
    assert _read(p, 0, 4) == b"BBBB"
    reg.discard_layer("base", IQN1)
    reg.modify("base", autoreset=False)
    p = reg.layer_at_power_on("base", IQN1)
    _write(p, 0, b"kept")
    assert _read(reg.layer_at_power_on("base", IQN1), 0, 4) == b"kept"


def test_discard_layer(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    p = reg.layer_for("base", IQN1)
    assert reg.discard_layer("base", IQN1) is True
    assert not p.exists() and reg.users_of("base") == [] and reg.children("base") == []
    assert reg.discard_layer("base", IQN1) is False
    reg.remove("base", delete=True)
    assert not os.path.exists(base.location)


def test_missing_or_stale_layer_file_is_recreated(reg: Registry, base) -> None:  # type: ignore[no-untyped-def]
    p = reg.layer_for("base", IQN1)
    p.unlink()
    assert reg.layer_for("base", IQN1) == p and p.exists()
    # a layer file left without a row (crash between file and commit) is replaced
    reg.discard_layer("base", IQN1)
    p.parent.mkdir(parents=True, exist_ok=True)
    layers.create_child(base.location, str(p))
    _write(p, 0, b"stale")
    assert _read(reg.layer_for("base", IQN1), 0, 5) == b"BBBBB"


def test_layers_only_for_layered_types_and_native_bases(reg: Registry, tmp_path: Path) -> None:
    reg.create("n", MiB)
    with pytest.raises(MediumRuleError, match="n is normal; per-machine layers are for immutable"):
        reg.layer_for("n", IQN1)
    vdi = tmp_path / "v.vdi"
    create_image(str(vdi), "vdi", MiB)
    reg.import_image(vdi, type="immutable")
    with pytest.raises(MediumRuleError, match="a layer stands on raw or qcow2 only"):
        reg.layer_for("v", IQN1)


def test_current_top(reg: Registry, tmp_path: Path) -> None:
    n = reg.create("n", MiB, format="raw")
    assert reg.current_top("n") == Path(n.location)
    # snapshot layers (issue 5) are children with no owner; the newest is on top
    s1 = tmp_path / "s1.qcow2"
    layers.freeze(n.location, str(s1))
    reg.import_image(s1)
    s2 = tmp_path / "s2.qcow2"
    layers.freeze(str(s1), str(s2))
    reg.import_image(s2)
    assert reg.current_top("n") == s2
    reg.create("i", MiB, format="raw", type="immutable")
    with pytest.raises(MediumRuleError, match="each machine writes its own layer"):
        reg.current_top("i")


def test_machine_dir_names_do_not_collide() -> None:
    names = {machine_dir_name(n) for n in ("a:b", "a_b", "a.b", "..", "vm1", "a/b")}
    assert len(names) == 6
    assert machine_dir_name("vm1") == "vm1"
    assert all("/" not in n and not n.startswith(".") for n in names)
