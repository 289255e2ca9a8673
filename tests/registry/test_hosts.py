# tests/registry/test_hosts.py - several hosts on one registry: leases,
# fencing, placement, which host runs a VM, and the database refusing a second
# writer of a normal disk; two processes racing to start one VM on two hosts
# give exactly one winner each round (on SQLite and on PostgreSQL).
"""Hosts of a shared registry."""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback

import psycopg
import pytest

from netstore.registry import Registry
from netstore.registry.errors import (
    MachineStateError,
    MediumBusyError,
    NotFoundError,
    RegistryError,
)
from netstore.registry.hosts import claim_writes
from tests.registry.conftest import Place

MiB = 1 << 20
RACE_ROUNDS = 50


def _vm_with_disk(reg: Registry, vm: str, disk: str) -> None:
    reg.machines.create(vm, memory_mb=256)
    reg.machines.add_controller(vm, "sata0", "sata")
    reg.machines.attach(vm, "sata0", 0, disk)


def test_register_renew_leave(reg: Registry) -> None:
    e1 = reg.hosts.register("host1", portal="192.0.2.1:3260", cores=2, memory_mb=4096)
    g = reg.generation()
    assert reg.hosts.renew("host1", e1)
    assert reg.generation() == g  # a renewal is no news: watchers do not re-read
    (h,) = reg.hosts.list()
    assert (h.name, h.portal, h.cores, h.memory_mb, h.up) == ("host1", "192.0.2.1:3260", 2,
                                                               4096, True)
    assert h.renewed_ago_s < 5
    e2 = reg.hosts.register("host1")  # a restarted daemon: a new epoch
    assert e2 == e1 + 1
    assert not reg.hosts.renew("host1", e1)  # the old epoch may not renew
    reg.hosts.leave("host1", e2)
    assert not reg.hosts.get("host1").up
    with pytest.raises(NotFoundError, match="no host 'host9'"):
        reg.hosts.get("host9")


def test_start_records_the_host_and_refusal_names_it(reg: Registry) -> None:
    reg.create("d", MiB)
    _vm_with_disk(reg, "web", "d")
    assert reg.machines.start("web", "headless", host="host1").host == "host1"
    with pytest.raises(MachineStateError, match="web is running already on host1$"):
        reg.machines.start("web", "headless", host="host2")
    with pytest.raises(MachineStateError, match="web runs on host1, not on host2"):
        reg.machines.stop("web", host="host2")  # a fenced or foreign host writes nothing
    assert reg.machines.get("web").running
    assert reg.machines.stop("web", host="host1").host is None


def test_expired_host_is_fenced_its_vms_aborted_and_disks_freed(reg: Registry) -> None:
    reg.create("d", MiB)
    _vm_with_disk(reg, "web", "d")
    e1 = reg.hosts.register("host1", memory_mb=4096)
    reg.hosts.register("host2", memory_mb=4096)
    reg.machines.start("web", "headless", host="host1")
    assert reg.hosts.fence_expired(60, "host2") == []  # not late yet
    time.sleep(1.2)
    reg.hosts.renew("host2", 1)
    (fenced,) = reg.hosts.fence_expired(1.0, "host2")
    assert (fenced.host, fenced.vms) == ("host1", ("web",))
    vm = reg.machines.get("web")
    assert vm.state == "aborted" and "host host1 stopped renewing its lease" in vm.aborted
    assert not reg.hosts.get("host1").up
    assert not reg.hosts.renew("host1", e1)  # the old daemon learns it was fenced
    assert reg.machines.start("web", "headless", host="host2").host == "host2"


def test_placement_takes_the_host_with_most_free_memory(reg: Registry) -> None:
    assert reg.hosts.place() is None
    reg.hosts.register("small", memory_mb=1024)
    reg.hosts.register("big", memory_mb=2048)
    assert reg.hosts.place() == "big"
    for i in range(5):
        reg.machines.create(f"vm{i}", memory_mb=256)
        reg.machines.start(f"vm{i}", host="big")
    assert reg.hosts.get("big").used_mb == 1280 and reg.hosts.get("big").vcpus == 5
    assert reg.hosts.place() == "small"  # 1024 free against 768


def test_database_refuses_a_second_writer_whatever_python_checked(reg: Registry) -> None:
    reg.create("d", MiB)
    for vm in ("a", "b"):
        _vm_with_disk(reg, vm, "d")
    reg.machines.start("a")
    b, d = reg.machines.get("b").id, reg.medium("d").id
    # as if a check had let b through: the primary key still refuses it
    with pytest.raises(MediumBusyError, match="disk d is written by running VM a"):
        with reg.transaction() as conn:
            conn.execute("UPDATE machines SET power = 'poweroff' WHERE name = 'a'")
            claim_writes(conn, b, "b", [(d, "d", "normal")])
    assert reg.machines.get("a").running  # nothing was applied


def _racer(state_dir: str, url: str | None, host: str, start, done, out) -> None:  # type: ignore[no-untyped-def]
    try:
        wins = []
        for i in range(RACE_ROUNDS):
            start.wait(30)
            with Registry.open(state_dir, url) as reg:
                try:
                    reg.machines.start("web", "headless", host=host)
                    wins.append(i)
                except (MachineStateError, MediumBusyError) as e:
                    assert "running already on" in str(e) or "disk d" in str(e), str(e)
            done.wait(30)
        out.put(("ok", host, wins))
    except BaseException:
        out.put(("error", host, traceback.format_exc()))


def test_two_hosts_starting_one_vm_at_once_one_wins_each_round(place: Place) -> None:
    with place.open() as reg:
        reg.create("d", MiB)
        _vm_with_disk(reg, "web", "d")
        _vm_with_disk(reg, "other", "d")  # the same normal disk: never both running
    ctx = mp.get_context("spawn")
    start, done, out = ctx.Barrier(3), ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(place.state_dir), place.url, h, start, done,
                                              out)) for h in ("host1", "host2")]
    for p in procs:
        p.start()
    try:
        with place.open() as reg:
            for _ in range(RACE_ROUNDS):
                start.wait(30)
                done.wait(30)
                vm = reg.machines.get("web")
                assert vm.running and vm.host in ("host1", "host2")
                with pytest.raises(MediumBusyError):
                    reg.machines.start("other")  # its normal disk is taken
                reg.machines.stop("web")
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    errors = [r[2] for r in results if r[0] != "ok"]
    assert not errors, errors[0]
    wins = sorted(i for r in results for i in r[2])
    assert wins == list(range(RACE_ROUNDS))  # exactly one winner in every round


def test_postgres_unreachable_is_one_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netstore.registry.errors import RegistryError
    url = f"postgresql://nobody:secret@/none?host={tmp_path}&port=1"
    with pytest.raises(RegistryError, match=r"postgresql://nobody:\*\*\*@.*cannot reach the registry"):
        Registry.open(tmp_path / "s", url)
    assert psycopg  # the dialect's driver is installed with netstore


def test_fencing_moves_an_external_vm_to_the_fencing_host(reg: Registry) -> None:
    # its QEMU is the user's, not the dead host's: it runs on, and the fencing
    # host owns its disks' writes from now on (ALUA: active/optimized there)
    reg.create("d", MiB)
    _vm_with_disk(reg, "ext", "d")
    reg.hosts.register("host1")
    reg.hosts.register("host2")
    reg.machines.start("ext", "external", host="host1")
    time.sleep(1.2)
    reg.hosts.renew("host2", 1)
    (fenced,) = reg.hosts.fence_expired(1.0, "host2")
    assert fenced.vms == ()
    vm = reg.machines.get("ext")
    assert vm.running and vm.host == "host2"


def test_shared_media_dir_and_host_local_layers(place: Place, tmp_path) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "nfs"
    with place.open() as reg:
        reg.share_media(shared)
        reg.share_media(shared)  # the same again: nothing to change
        with pytest.raises(RegistryError, match="its media are in .*nfs, not .*elsewhere"):
            reg.share_media(tmp_path / "elsewhere")
        reg.create("base", MiB, type="immutable")
        assert reg.medium("base").location.startswith(str(shared))
        _vm_with_disk(reg, "web", "base")
    if place.url is None:
        return  # one SQLite file is one host's
    # another host: the same media directory, its own layers where the VM runs
    with Registry.open(tmp_path / "host2-state", place.url) as reg2:
        assert reg2.media_dir == shared.absolute()
        reg2.machines.start("web", "headless", host="host2")
        (layer,) = reg2.children("base")
        assert layer.location.startswith(str(tmp_path / "host2-state"))


def test_a_lost_server_connection_is_a_registry_error(postgres_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a daemon's lease loop and watcher handle RegistryError; a server that
    # restarts under them must not raise anything else
    url = postgres_server.fresh_url()
    with Registry.open(tmp_path / "s", url) as reg:
        reg.hosts.register("host1")
        pid = reg._conn._conn.info.backend_pid  # noqa: SLF001
        postgres_server.sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(RegistryError, match="the registry's server failed"):
            reg.hosts.renew("host1", 1)
