# tests/test_cli_vm_boot.py - how a VM boots, as a user sets it (issue 13):
# `vm modify --boot disk,dvd,net` and direct kernel boot (`--kernel`,
# `--initrd`, `--append`; `--kernel none` forgets them) are kept by the
# registry, shown by `vm info` and turned into QEMU's -boot order= /
# -kernel / -initrd / -append by `vm qemu-args`; every bad request (a VM
# that runs, an unknown or repeated device, a missing file, an initrd or a
# command line without a kernel, a command line too long) is refused with a
# line that says what was wrong, and changes nothing, not even the other
# options of the same command.
"""netstore vm modify --boot/--kernel/--initrd/--append."""

from __future__ import annotations

import pytest

from tests.harness import Cli


@pytest.fixture
def cli(tmp_path):  # type: ignore[no-untyped-def]
    c = Cli(tmp_path)
    c.ok("vm", "create", "app", "--memory", "256")
    return c


@pytest.fixture
def files(tmp_path):  # type: ignore[no-untyped-def]
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    return kernel, initrd


def test_boot_order_and_direct_kernel_boot_reach_qemu(cli: Cli, files) -> None:
    kernel, initrd = files
    assert cli.json("vm", "info", "app")["boot"] == {
        "order": [], "kernel": None, "initrd": None, "append": None}
    assert "-boot" not in cli.ok("vm", "qemu-args", "app")  # QEMU's own order
    d = cli.json("vm", "modify", "app", "--boot", "net,disk,dvd")
    assert d["boot"]["order"] == ["net", "disk", "dvd"]
    assert "-boot order=ncd" in cli.ok("vm", "qemu-args", "app")
    d = cli.json("vm", "modify", "app", "--kernel", str(kernel), "--initrd", str(initrd),
                 "--append", "console=ttyS0 netstore.ip=192.0.2.10/24")
    assert d["boot"] == {"order": ["net", "disk", "dvd"], "kernel": str(kernel),
                         "initrd": str(initrd),
                         "append": "console=ttyS0 netstore.ip=192.0.2.10/24"}
    args = cli.ok("vm", "qemu-args", "app")
    assert f"-kernel {kernel}" in args and f"-initrd {initrd}" in args
    assert "-append 'console=ttyS0 netstore.ip=192.0.2.10/24'" in args
    info = cli.ok("vm", "info", "app")
    assert str(kernel) in info and "net,disk,dvd" in info
    d = cli.json("vm", "modify", "app", "--kernel", "none")
    assert d["boot"] == {"order": ["net", "disk", "dvd"], "kernel": None, "initrd": None,
                         "append": None}
    assert "-kernel" not in cli.ok("vm", "qemu-args", "app")


@pytest.mark.parametrize("args, said", [
    (["--boot", "disk,floppy"], "boot order 'disk,floppy': name devices among disk, dvd, net"),
    (["--boot", "disk,disk"], "boot order 'disk,disk' names a device twice"),
    (["--boot", ","], "boot order ',': name devices among disk, dvd, net"),
    (["--kernel", "/nonexistent/vmlinuz"], "kernel '/nonexistent/vmlinuz' is not a file"),
    (["--initrd", "{initrd}"], "an initrd or a kernel command line needs a kernel"),
    (["--append", "quiet"], "an initrd or a kernel command line needs a kernel"),
    (["--kernel", "{kernel}", "--append", "x" * 2048],
     "the kernel command line is 2048 bytes; at most 2047"),
    (["--kernel", "none", "--append", "quiet"], "--kernel none forgets the initrd"),
])
def test_bad_boot_settings_are_refused_and_change_nothing(cli: Cli, files, args, said) -> None:
    kernel, initrd = files
    args = [a.format(kernel=kernel, initrd=initrd) for a in args]
    before = cli.json("vm", "info", "app")
    err = cli.refused("vm", "modify", "app", "--cpus", "2", *args)
    assert said in err and err.startswith("netstore: ") and err.count("\n") == 1, err
    assert cli.json("vm", "info", "app") == before  # --cpus 2 was not applied either


def test_boot_settings_change_only_while_powered_off(cli: Cli, files) -> None:
    kernel, _ = files
    cli.ok("vm", "start", "app", "--type", "external")
    err = cli.refused("vm", "modify", "app", "--kernel", str(kernel))
    assert err == ("netstore: app is running; its boot settings can be changed only while "
                   "it is powered off (netstore vm stop app)\n")
    cli.ok("vm", "stop", "app")
    assert cli.json("vm", "modify", "app", "--kernel", str(kernel))["boot"]["kernel"] == \
        str(kernel)
