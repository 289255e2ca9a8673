# tests/test_cli.py - the `netstore` command line: exit statuses, one-line
# errors on stderr, commands not implemented yet saying so, its entry points,
# and its place on top of the layers (nothing of netstore imports netstore.cli).
"""Tests for netstore.cli."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netstore.cli import main
from tests.harness import netstore_env

ENV = {k: v for k, v in netstore_env().items() if k != "NETSTORE_CONFIG"}


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netstore", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env=env or ENV,
    )


def test_serve_with_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[iscsi]\nportals = ['127.0.0.1:99999']\n")
    out = run("serve", "--config", "bad.toml", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == (
        'netstore: bad.toml: iscsi.portals[0]: expected "host:port" or "[ipv6]:port" '
        '(port 99999 is out of range 0..65535), got "127.0.0.1:99999"\n'
    )
    assert not (tmp_path / "netstore-state").exists(), "nothing may start on a bad config"


def test_serve_with_missing_config_exits_2(tmp_path: Path) -> None:
    out = run("serve", "--config", "nope.toml", cwd=tmp_path)
    assert out.returncode == 2
    assert (
        out.stderr
        == "netstore: nope.toml: expected a configuration file, got nothing (no such file)\n"
    )


def test_config_from_environment(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[daemon]\nlog_level = 'chatty'\n")
    out = run("serve", cwd=tmp_path, env={**ENV, "NETSTORE_CONFIG": "bad.toml"})
    assert out.returncode == 2
    assert "bad.toml: daemon.log_level: expected one of debug" in out.stderr


def test_console_script_is_installed(tmp_path: Path) -> None:
    exe = shutil.which("netstore")
    if exe is None:
        pytest.skip("the netstore console script is not on PATH (pip install -e . first)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("netstore ")


def test_python_m_netstore_cli_runs_the_command_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "netstore.cli", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30, env=ENV)
    assert out.returncode == 0 and out.stdout == run("--version", cwd=tmp_path).stdout


def test_no_module_of_netstore_imports_the_cli() -> None:
    """architecture.md: the cli imports the rest of netstore, never the reverse."""
    root = Path(__file__).resolve().parents[1] / "netstore"
    entry = {root / "__main__.py"}  # `python -m netstore` is the command line
    importers = []
    for path in sorted(root.rglob("*.py")):
        if root / "cli" in path.parents or path in entry:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.ImportFrom) and node.module == "netstore":
                names = [f"netstore.{a.name}" for a in node.names]
            if any(n == "netstore.cli" or n.startswith("netstore.cli.") for n in names):
                importers.append(str(path.relative_to(root.parent)))
    assert importers == []


def test_help_needs_neither_trio_nor_rich(tmp_path: Path) -> None:
    # The cli imports trio (daemon, control socket), rich and netstore.ovf only
    # when a command runs, so that --help and usage errors answer at once.
    code = ("import sys\nfrom netstore.cli import main\ntry:\n    main(['vm', '--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0]"
            " in ('trio', 'rich') or m.startswith(('netstore.ovf', 'netstore.daemon', "
            "'netstore.control'))), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, env=ENV)
    assert out.returncode == 0 and out.stderr == "[]\n", out.stderr


def test_status_without_daemon_exits_1(tmp_path: Path) -> None:
    out = run("status", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("netstore: no netstore daemon is running")
    assert out.stderr.count("\n") == 1


def test_status_json_without_daemon_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.toml").write_text('[daemon]\nstate_dir = "s"\n')
    assert main(["--json", "status", "--config", str(tmp_path / "c.toml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(tmp_path / "s" / "netstore.sock") in captured.err


def test_status_does_not_need_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the daemon opens LUN images; status just needs the state directory.
    (tmp_path / "c.toml").write_text(
        '[[iscsi.targets]]\niqn = "iqn.2026-11.org.x"\nluns = ["gone.img"]\n'
    )
    assert main(["status", "--config", str(tmp_path / "c.toml")]) == 1
    assert "no netstore daemon is running" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["serve", "--bogus"], ["status", "extra"], ["--config"]],
    ids=["no-command", "unknown-command", "unknown-option", "extra-argument", "missing-value"],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netstore: ") and err.count("\n") == 1, err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "status" in out


def test_status_json_against_a_daemon(netstore_daemon) -> None:
    d = netstore_daemon()
    for argv in (["status", "--json"], ["--json", "status"]):
        out = run(*argv, "--config", str(d.config_path), cwd=d.workdir)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["pid"] == d.proc.pid
