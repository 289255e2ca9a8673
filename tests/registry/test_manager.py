# tests/registry/test_manager.py - the media manager through the command line:
# `disk list --tree` (each base, its layers, whose each is), `disk release`
# (detached from the VMs that are off, kept by a running one), `disk move`
# (a base with two snapshot layers: the files move, `qemu-img info
# --backing-chain` shows the new paths, the VM reads the same bytes over
# iSCSI after the move; refused while a running VM uses it, or onto an
# existing file, changing nothing), `disk compact` (zero-filled clusters
# given back, `qemu-img compare` equal; a zero cluster of a layer still hides
# its parent's data; raw refused).
"""Media manager: tree, release, move, compact."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import Cli

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img (qemu-utils) missing")
BASE = "iqn.2026-11.org.netstore"


def qemu_io(path: str, *commands: str, fmt: str = "qcow2") -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    p = subprocess.run([*argv, path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "fail" not in (p.stdout + p.stderr).lower(), p.stdout + p.stderr


def chain(path: str) -> list[str]:
    out = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", path],
                         capture_output=True, text=True, check=True).stdout
    import json

    return [i["filename"] for i in json.loads(out)]


def layered(cli: Cli) -> tuple[str, list[str]]:
    """A VM `v1` with base `base` (pattern 1), two snapshots, pattern 2 and 3
    written into the layers; the base's file and the layers' files, top last."""
    cli.ok("disk", "create", "base", "--size", "16M")
    loc = cli.json("disk", "info", "base")["location"]
    qemu_io(loc, "write -P 1 0 1M")
    cli.ok("vm", "create", "v1")
    cli.ok("vm", "controller", "v1", "--add", "s", "--bus", "sata")
    cli.ok("vm", "attach", "v1", "--controller", "s", "--port", "0", "--disk", "base")
    cli.ok("vm", "snapshot", "v1", "take", "s1")
    top = cli.json("disk", "list", "--tree")[0]["children"][0]["location"]
    qemu_io(top, "write -P 2 1M 1M")
    cli.ok("vm", "snapshot", "v1", "take", "s2")
    top = cli.json("disk", "list", "--tree")[0]["children"][0]["children"][0]["location"]
    qemu_io(top, "write -P 3 2M 1M")
    return loc, chain(top)


def test_tree_shows_layers_and_whose_they_are(tmp_path):
    cli = Cli(tmp_path)
    layered(cli)
    cli.ok("disk", "create", "im", "--size", "8M", "--type", "immutable")
    cli.ok("vm", "attach", "v1", "--controller", "s", "--port", "1", "--disk", "im")
    cli.ok("vm", "start", "v1", "--type", "external")
    tree = {b["name"]: b for b in cli.json("disk", "list", "--tree")}
    base = tree["base"]
    assert base["used_by"] == ["v1"] and base["snapshots"] == ["s1 of v1"]
    s2 = base["children"][0]
    assert s2["snapshots"] == ["s2 of v1"] and not s2["current"]
    now = s2["children"][0]
    assert now["current"] and now["children"] == [] and now["owner"] is None
    own = tree["im"]["children"]
    assert len(own) == 1 and own[0]["owner"] == "v1" and not own[0]["current"]
    text = cli.ok("disk", "list", "--tree")
    assert "snapshot s2 of v1" in text and "current state" in text and "v1's own layer" in text


def test_release_detaches_from_vms_that_are_off(tmp_path):
    cli = Cli(tmp_path)
    cli.ok("disk", "create", "shared", "--size", "8M", "--type", "shareable", "--variant",
           "fixed")
    for vm in ("a", "b", "c"):
        cli.ok("vm", "create", vm)
        cli.ok("vm", "controller", vm, "--add", "s", "--bus", "sata")
        cli.ok("vm", "attach", vm, "--controller", "s", "--port", "2", "--disk", "shared")
    cli.ok("vm", "start", "c", "--type", "external")
    r = cli.json("disk", "release", "shared")
    assert r["released"] == [{"vm": "a", "slot": "s:2:0"}, {"vm": "b", "slot": "s:2:0"}]
    assert r["kept_by_running"] == ["c"]
    assert [a["medium"] for a in cli.json("vm", "info", "a")["attachments"]] == []
    assert [a["medium"] for a in cli.json("vm", "info", "c")["attachments"]] == ["shared"]


def test_move_rewrites_every_backing_reference(tmp_path):
    cli = Cli(tmp_path)
    loc, before = layered(cli)
    assert len(before) == 3
    content = subprocess.run(["qemu-img", "convert", "-O", "raw", before[0], str(tmp_path / "a")],
                             check=True)
    dest = tmp_path / "elsewhere"
    dest.mkdir()
    cli.ok("vm", "start", "v1", "--type", "external")
    err = cli.refused("disk", "move", "base", str(dest))
    assert "running VM v1" in err and Path(loc).exists()
    cli.ok("vm", "stop", "v1")
    (dest / Path(loc).name).write_bytes(b"in the way")
    assert "exists already" in cli.refused("disk", "move", "base", str(dest))
    assert chain(before[0]) == before  # nothing moved
    (dest / Path(loc).name).unlink()

    r = cli.json("disk", "move", "base", str(dest))
    assert r["location"] == str(dest / Path(loc).name) and len(r["layers"]) == 2
    top = cli.json("disk", "list", "--tree")[0]["children"][0]["children"][0]["location"]
    after = chain(top)
    assert after[-1] == r["location"] and all(p.startswith(str(dest)) for p in after)
    assert not any(Path(p).exists() for p in before)
    subprocess.run(["qemu-img", "check", top], check=True, capture_output=True)
    del content
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, str(tmp_path / "b")], check=True)
    assert hashlib.sha256((tmp_path / "a").read_bytes()).digest() == \
        hashlib.sha256((tmp_path / "b").read_bytes()).digest()


@pytest.mark.peers
def test_vm_reads_the_same_over_iscsi_after_a_move(netstore_daemon, tmp_path):
    daemon = netstore_daemon("")
    (tmp_path / "cli").mkdir()
    cli = Cli(tmp_path / "cli")
    cli.config.write_text(f'[daemon]\nstate_dir = "{daemon.state_dir}"\n')
    layered(cli)
    url = f"iscsi://127.0.0.1:{daemon.port}/{BASE}:vm.v1/0"

    served = f"target {BASE}:vm.v1: 1 LUN(s)"

    def read_over_iscsi(out: Path) -> bytes:
        times = daemon.stderr().count(served)
        cli.ok("vm", "start", "v1", "--type", "external")
        deadline = time.monotonic() + 10
        while daemon.stderr().count(served) == times:  # its worker serves it again
            assert time.monotonic() < deadline, daemon.stderr()
            time.sleep(0.1)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(out)],
                       check=True, capture_output=True, timeout=60)
        cli.ok("vm", "stop", "v1")
        return hashlib.sha256(out.read_bytes()).digest()

    first = read_over_iscsi(tmp_path / "first.raw")
    dest = tmp_path / "moved"
    dest.mkdir()
    cli.ok("disk", "move", "base", str(dest))
    assert read_over_iscsi(tmp_path / "second.raw") == first
    data = (tmp_path / "second.raw").read_bytes()
    assert data[:1 << 20] == b"\1" * (1 << 20) and data[2 << 20:3 << 20] == b"\3" * (1 << 20)


def test_compact_gives_back_zero_clusters(tmp_path):
    cli = Cli(tmp_path)
    cli.ok("disk", "create", "z", "--size", "32M")
    loc = cli.json("disk", "info", "z")["location"]
    qemu_io(loc, "write -P 0 0 8M", "write -P 5 8M 1M")
    cli.ok("vm", "create", "v")
    cli.ok("vm", "controller", "v", "--add", "s", "--bus", "sata")
    cli.ok("vm", "attach", "v", "--controller", "s", "--port", "0", "--disk", "z")
    cli.ok("vm", "snapshot", "v", "take", "s1")
    layer = cli.json("disk", "list", "--tree")[0]["children"][0]
    qemu_io(layer["location"], "write -P 0 8M 64k")  # zeros over the base's data
    shutil.copy(loc, tmp_path / "base.orig")
    shutil.copy(layer["location"], tmp_path / "layer.orig")
    r = cli.json("disk", "compact", "z")
    assert r["bytes_after"] < r["bytes_before"] - (6 << 20), r
    subprocess.run(["qemu-img", "check", loc], check=True, capture_output=True)
    cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                          str(tmp_path / "base.orig"), loc], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout
    cli.json("disk", "compact", layer["name"])
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0 8M 64k", "-c",
                          "read -P 5 9M-64k 64k".replace("9M-64k", str((9 << 20) - 65536)),
                          layer["location"]], capture_output=True, text=True)
    assert "fail" not in out.stdout.lower() and out.returncode == 0, out.stdout
    cli.ok("vm", "start", "v", "--type", "external")
    assert "running VM v" in cli.refused("disk", "compact", "z")
    cli.ok("disk", "create", "r", "--size", "1M", "--format", "raw")
    assert "qcow2" in cli.refused("disk", "compact", "r")


def test_compact_gives_back_zero_blocks_of_a_dynamic_vdi(tmp_path):
    cli = Cli(tmp_path)
    cli.ok("disk", "create", "v", "--size", "32M", "--format", "vdi")
    info = cli.json("disk", "info", "v")
    qemu_io(info["location"], "write -P 0 0 8M", "write -P 6 8M 1M", fmt="vdi")
    shutil.copy(info["location"], tmp_path / "v.orig")
    r = cli.json("disk", "compact", "v")
    assert r["bytes_after"] < r["bytes_before"] - (6 << 20), r
    cmp = subprocess.run(["qemu-img", "compare", str(tmp_path / "v.orig"), info["location"]],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout
    from netstore.disk.images import probe

    assert probe(info["location"]).uuid == info["uuid"]  # the registry still knows it
    cli.ok("disk", "create", "f", "--size", "1M", "--format", "vdi", "--variant", "fixed")
    assert "dynamic VDI" in cli.refused("disk", "compact", "f")
