# tests/test_cli_vm_groups.py - VM groups, as an OVF VirtualSystemCollection's
# StartupSection orders them: `vm modify --group G --start-order N
# --start-delay S` (any power state; a bad value refused naming it, nothing
# changed), `vm start --group G` starts the group's VMs by order then name,
# waiting each one's delay, and stops at the first that does not start,
# naming it and the ones started before it.
"""VM groups and `vm start --group`."""

from __future__ import annotations

from datetime import datetime

from tests.harness import Cli


def started(cli: Cli, vm: str) -> datetime:
    return datetime.fromisoformat(cli.json("vm", "info", vm)["started"])


def test_group_starts_in_order_with_delays(tmp_path):
    cli = Cli(tmp_path)
    for vm in ("db", "web", "lb", "other"):
        cli.ok("vm", "create", vm)
    cli.ok("vm", "modify", "lb", "--group", "app", "--start-order", "3")
    cli.ok("vm", "modify", "db", "--group", "app", "--start-order", "1", "--start-delay", "2")
    cli.ok("vm", "modify", "web", "--group", "app", "--start-order", "2")
    info = cli.json("vm", "info", "db")["startup"]
    assert info == {"group": "app", "order": 1, "delay_s": 2}
    assert "group:" in cli.ok("vm", "info", "db") and "app (order 1, delay 2 s)" in \
        cli.ok("vm", "info", "db")

    out = cli.json("vm", "start", "--group", "app", "--type", "external")
    assert [m["name"] for m in out] == ["db", "web", "lb"]
    assert cli.json("vm", "info", "other")["state"] == "poweroff"
    assert (started(cli, "web") - started(cli, "db")).total_seconds() >= 1.5
    assert started(cli, "web") <= started(cli, "lb")

    err = cli.refused("vm", "start", "--group", "app", "--type", "external")
    assert "db is running already" in err and "started before it: none" in err
    cli.ok("vm", "stop", "web")
    cli.ok("vm", "stop", "lb")
    cli.ok("vm", "modify", "db", "--start-delay", "0")
    cli.ok("vm", "stop", "db")
    cli.ok("vm", "start", "lb", "--type", "external")
    p = cli.run("vm", "start", "--group", "app", "--type", "external")
    assert p.returncode == 1 and p.stdout == "db: running\nweb: running\n", p
    assert "lb is running already" in p.stderr and "started before it: db, web" in p.stderr


def test_group_settings_refused_whole(tmp_path):
    cli = Cli(tmp_path)
    cli.ok("vm", "create", "a", "--memory", "512")
    for args, says in ((("--group", "two words"), "not a group name"),
                       (("--start-delay", "100000"), "start delay 100000 s"),
                       (("--start-order", "70000"), "start order 70000")):
        err = cli.refused("vm", "modify", "a", "--memory", "1024", *args)
        assert says in err, err
    assert cli.json("vm", "info", "a")["memory_mb"] == 512  # nothing changed
    cli.ok("vm", "modify", "a", "--group", "g")
    cli.ok("vm", "modify", "a", "--group", "none")
    assert cli.json("vm", "info", "a")["startup"]["group"] is None
    assert "no VM is in group 'g'" in cli.refused("vm", "start", "--group", "g")
    p = cli.run("vm", "start")
    assert p.returncode == 2 and "NAME or --group" in p.stderr
