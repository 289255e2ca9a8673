# tests/test_config.py - the configuration loader: examples load, every rule
# refuses with file, key and expectation, and no input escapes as anything but
# ConfigError.
"""Tests for netstore.config."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from netstore.config import (
    ChapConfig,
    ConfigError,
    default_config,
    load_config,
    parse_portal,
)
from netstore.impairments import Flap, GeModel, ImpairmentError, parse_impairment
from netstore.registry import Registry
from netstore.registry.lookup import registered_medium
from tests.harness import netstore_env
from tests.test_config_refusals import P2

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def materialize_luns(config_file: Path, cwd: Path) -> None:
    """Create the (empty, sparse) image files a config names, as a user would."""
    doc = tomllib.loads(config_file.read_text())
    state = doc.get("daemon", {}).get("state_dir")
    state_dir = config_file.parent / (state or "netstore-state")
    for target in doc.get("iscsi", {}).get("targets", []):
        for lun in target["luns"]:
            path = config_file.parent / lun if "/" in lun else state_dir / "media" / lun
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.truncate(1 << 20)


def test_configs_directory_is_not_empty() -> None:
    names = {p.name for p in CONFIGS}
    assert {"minimal.toml", "two-targets.toml", "switch.toml", "wan-lab.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_loads(path: Path, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "configs" / path.name
    copy.parent.mkdir()
    shutil.copy(path, copy)
    monkeypatch.chdir(tmp_path)
    materialize_luns(copy, tmp_path)
    config = load_config(copy)
    assert config.source == copy
    assert config.iscsi.targets, "every example exports at least one target"
    for target in config.iscsi.targets:
        for lun in target.luns:
            assert Path(lun).is_absolute() and Path(lun).exists()


def test_example_without_images_is_refused_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "minimal.toml", tmp_path / "configs")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "configs" / "minimal.toml")
    assert "iscsi.targets[0].luns[0]: expected a medium of the registry in" in str(e.value)
    assert "scratch.img" in str(e.value)


def test_two_targets_has_chap_kinds(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "two-targets.toml"
    shutil.copy(REPO / "configs" / "two-targets.toml", copy)
    monkeypatch.chdir(tmp_path)
    materialize_luns(copy, tmp_path)
    config = load_config(copy)
    lab, vault = config.iscsi.targets
    assert config.iscsi.discovery_chap is not None
    assert lab.chap == ChapConfig(user="lab", secret="lab-secret-12")
    assert lab.allow == ["*"]
    assert vault.chap is not None and vault.chap.mutual
    assert vault.allow != ["*"]


def test_wan_lab_has_an_impaired_seeded_switch(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "configs" / "wan-lab.toml"
    copy.parent.mkdir()
    shutil.copy(REPO / "configs" / "wan-lab.toml", copy)
    monkeypatch.chdir(tmp_path)
    materialize_luns(copy, tmp_path)
    (wan,) = load_config(copy).switches
    ports = {p.name: p for p in wan.ports}
    assert wan.seed is not None
    branch = ports["branch"]
    assert branch.impair_out is not None and branch.impair_in is not None
    assert (branch.impair_out.delay, branch.impair_out.rate) == (0.08, 10_000_000)
    assert ports["lan"].impair_in is None and ports["lan"].impair_out is None
    assert ports["backup"].flap == Flap(2.0, 30.0)


def test_default_config() -> None:
    config = default_config()
    assert config.daemon.state_dir == Path.cwd() / "netstore-state"
    assert config.iscsi.portals == [("127.0.0.1", 3260)]
    assert config.iscsi.base_iqn == "iqn.2026-11.org.netstore"
    assert config.iscsi.targets == []
    assert [s.name for s in config.switches] == ["sw0"]
    assert config.switches[0].ports == []
    assert config.source is None


def test_empty_file_gives_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("")
    config = load_config("c.toml")
    assert config.iscsi == default_config().iscsi
    assert config.daemon.state_dir == tmp_path / "netstore-state"
    assert config.source == tmp_path / "c.toml"


def test_state_dir_defaults_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.toml").write_text("")
    assert (
        load_config(tmp_path / "etc" / "c.toml").daemon.state_dir
        == tmp_path / "etc" / "netstore-state"
    )


def test_check_paths_false_skips_missing_images(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[iscsi.targets]]\niqn = "iqn.2026-11.org.x"\nluns = ["gone.img"]\n'
    )
    with pytest.raises(ConfigError):
        load_config(tmp_path / "c.toml")
    config = load_config(tmp_path / "c.toml", check_paths=False)
    assert config.iscsi.targets[0].luns == [str(tmp_path / "netstore-state" / "media" / "gone.img")]


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(b"\0" * 512)
    (tmp_path / "state" / "media").mkdir(parents=True)
    (tmp_path / "state" / "media" / "m1").write_bytes(b"")
    (tmp_path / "c.toml").write_text(
        """
[daemon]
state_dir = "state"
log_level = "DEBUG"
[iscsi]
portals = ["127.0.0.1:3260", "[::1]:3261", "localhost:0"]
nop_interval_s = 2
nop_timeout_s = 5.5
max_recv_data_segment_length = 8192
[iscsi.discovery_chap]
user = "d"
secret = "123456789012"
[[iscsi.targets]]
iqn = "iqn.2026-11.org.netstore:a"
luns = ["./disk.img", "m1"]
allow = ["iqn.1994-05.com.example:*"]
chap = { user = "u", secret = "abcdefghijkl", mutual_user = "t", mutual_secret = "mnopqrstuvwx" }
alias = "A"
[[iscsi.targets]]
iqn = "eui.02004567A425678D"
luns = ["ABS"]
[[switches]]
name = "sw0"
capture = "sw0.pcap"
[[switches.ports]]
name = "p1"
kind = "udp"
local = "127.0.0.1:40001"
remote = "127.0.0.1:40002"
vlan = 10
[[switches.ports]]
name = "up"
kind = "tap"
device = "tap0"
trunk = [10, 20]
native = 1
[[switches.ports]]
name = "s"
kind = "stream"
listen = "/tmp/s.sock"
mirror_to = "u"
max_macs = 4
bound_mac = "52-54-00-AB-cd-01"
storm_pps = 100
[[switches.ports]]
name = "u"
kind = "unixgram"
local = "u.sock"
[[switches.ports]]
name = "v"
kind = "vde"
path = "/run/netstore/sw0.vde"
mtu = 9000
""".replace("ABS", str(tmp_path / "disk.img"))
    )
    c = load_config(tmp_path / "c.toml")
    assert c.daemon.state_dir == tmp_path / "state"
    assert c.daemon.log_level == "debug"
    assert c.iscsi.portals == [("127.0.0.1", 3260), ("::1", 3261), ("localhost", 0)]
    assert c.iscsi.nop_interval_s == 2.0 and c.iscsi.nop_timeout_s == 5.5
    assert c.iscsi.max_recv_data_segment_length == 8192
    a, b = c.iscsi.targets
    assert a.luns == [str(tmp_path / "disk.img"), str(tmp_path / "state" / "media" / "m1")]
    assert a.chap is not None and a.chap.mutual_secret == "mnopqrstuvwx"
    assert a.alias == "A"
    assert b.chap is None and b.alias is None and b.allow == ["*"]
    (sw,) = c.switches
    assert sw.capture == str(tmp_path / "sw0.pcap")
    p1, up, s, u, v = sw.ports
    assert (p1.kind, p1.local, p1.remote, p1.vlan) == (
        "udp",
        "127.0.0.1:40001",
        "127.0.0.1:40002",
        10,
    )
    assert (up.device, up.trunk, up.native, up.vlan) == ("tap0", [10, 20], 1, None)
    assert s.listen == "/tmp/s.sock" and s.connect is None
    assert (s.mirror_to, s.max_macs, s.bound_mac, s.storm_pps) == ("u", 4, "52:54:00:ab:cd:01", 100)
    assert (p1.mirror_to, p1.max_macs, p1.bound_mac, p1.storm_pps) == (None, None, None, None)
    assert u.local == str(tmp_path / "u.sock")
    assert v.mtu == 9000 and v.vlan == 1


def test_impaired_link_keys_are_read(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        P2 + 'out = { delay = "80ms", jitter = "5ms", distribution = "normal", loss = "1%",'
        ' rate = "10mbit", overhead = 4, limit = 50 }\n'
        'in = { gemodel = { p = "1%", r = "25%" }, duplicate = "0.5%", corrupt = "0.1%",'
        ' delay = "2ms", reorder = "10%", reorder_correlation = "50%", gap = 5 }\n'
        'link = "down"\nflap = "down 2s every 30s"\n'
    )
    (sw,) = load_config(tmp_path / "c.toml").switches
    plain, port = sw.ports
    assert sw.seed is None
    assert (plain.impair_in, plain.impair_out, plain.link, plain.flap) == (None, None, "up", None)
    out, in_ = port.impair_out, port.impair_in
    assert out is not None and in_ is not None
    assert (out.delay, out.jitter, out.distribution, out.loss) == (0.08, 0.005, "normal", 0.01)
    assert (out.rate, out.overhead, out.limit) == (10_000_000, 4, 50)
    assert in_.gemodel == GeModel(p=0.01, r=0.25)
    assert (in_.duplicate, in_.corrupt, in_.delay) == (0.005, 0.001, 0.002)
    assert (in_.reorder, in_.reorder_correlation, in_.gap) == (0.1, 0.5, 5)
    assert port.link == "down" and port.flap == Flap(2.0, 30.0)
    # what to_table writes back reads the same (netstore can write a port's settings)
    assert parse_impairment(out.to_table()) == out and parse_impairment(in_.to_table()) == in_


def test_perfect_direction_is_no_impairment(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(P2 + "out = {}\nin = { loss = '0%' }\nlink = 'up'\n")
    port = load_config(tmp_path / "c.toml").switches[0].ports[1]
    assert (port.impair_in, port.impair_out, port.link) == (None, None, "up")


@pytest.mark.parametrize("seed", [0, 42, 2**63 - 1])
def test_switch_seed(seed: int, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(f"[[switches]]\nname = 'sw0'\nseed = {seed}\n")
    assert load_config(tmp_path / "c.toml").switches[0].seed == seed


def test_serve_with_impossible_impairment_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(P2 + "out = { loss = '120%' }\n")
    out = subprocess.run([sys.executable, "-m", "netstore", "serve", "--config", "bad.toml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in netstore_env().items() if k != "NETSTORE_CONFIG"})
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == ('netstore: bad.toml: sw0.ports[1].out.loss: expected a percentage '
                          'from "0%" to "100%", got "120%"\n')
    assert not (tmp_path / "netstore-state").exists(), "nothing may start on a bad config"


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x.toml").write_text("[iscsi]\nportals = [1]\n")
    with pytest.raises(ConfigError) as e:
        load_config("x.toml")
    assert str(e.value) == 'x.toml: iscsi.portals[0]: expected "host:port", got 1'
    assert e.value.file == "x.toml" and e.value.key == "iscsi.portals[0]"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a configuration file, got nothing"):
        load_config(tmp_path / "nope.toml")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a configuration file, got a directory"):
        load_config(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_bytes(b"# ok\n# \xff\n")
    with pytest.raises(ConfigError, match="line 2: expected UTF-8 text, got the byte 0xff"):
        load_config(tmp_path / "x.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:3260", ("127.0.0.1", 3260)),
        ("[::1]:3260", ("::1", 3260)),
        ("[fe80::1]:0", ("fe80::1", 0)),
        ("localhost:1", ("localhost", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_portal(text: str, expected: tuple[str, int]) -> None:
    assert parse_portal(text) == expected


# -- LUN entries as tables (kind, readonly, removable, thin) ----------------------


def _lun_config(tmp_path: Path, entry: str) -> Path:
    (tmp_path / "img").write_bytes(b"\0" * 4096)
    path = tmp_path / "l.toml"
    path.write_text(f'[[iscsi.targets]]\niqn = "iqn.2026-11.org.x"\nluns = [{entry}]\n')
    return path


def test_lun_table_entries(tmp_path: Path) -> None:
    path = _lun_config(
        tmp_path,
        '"./img", { path = "./img", thin = false, removable = true }, '
        '{ path = "./img", kind = "dvd" }, { path = "./img", readonly = true }',
    )
    plain, disk, dvd, ro = load_config(path).iscsi.targets[0].luns
    img = str(tmp_path / "img")
    assert plain == disk == dvd == ro == img  # each is its path
    assert (plain.kind, plain.readonly, plain.removable, plain.thin) == ("disk", False, False, None)
    assert disk.options == ("disk", False, True, False, None)
    assert dvd.options == ("dvd", True, True, False, None)
    assert ro.options == ("disk", True, False, None, None)


LUN_ERRORS = [
    ('{ kind = "dvd" }', "luns[0].path: expected an image path or media name, got nothing"),
    ('{ path = "./img", kind = "tape" }', 'luns[0].kind: expected one of "disk", "dvd", got "tape"'),
    ('{ path = "./img", thin = "yes" }', 'luns[0].thin: expected true or false, got "yes"'),
    ('{ path = "./img", kind = "dvd", readonly = false }',
     "luns[0].readonly: expected true or nothing (a dvd is read-only), got false"),
    ('{ path = "./img", kind = "dvd", thin = true }',
     "luns[0].thin: expected false or nothing (a dvd is not thin), got true"),
    ('{ path = "./img", readonly = true, thin = true }',
     "luns[0].thin: expected false or nothing on a read-only LUN"),
    ('{ path = "./img", thn = true }', 'luns[0].thn: expected one of the keys'),
    ('{ path = "./missing" }', "luns[0].path: expected an existing image file or block device"),
]


@pytest.mark.parametrize(("entry", "message"), LUN_ERRORS)
def test_lun_table_errors(entry: str, message: str, tmp_path: Path) -> None:
    path = _lun_config(tmp_path, entry)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: iscsi.targets[0].{message}"), str(e.value)


def test_bare_name_is_a_registered_medium(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Registry.open(state) as reg:
        m = reg.create("base", 1 << 20, format="qcow2")
    path = tmp_path / "c.toml"
    path.write_text(
        '[daemon]\nstate_dir = "state"\n[[iscsi.targets]]\n'
        'iqn = "iqn.2026-11.org.netstore:t"\nluns = ["base"]\n'
    )
    (lun,) = load_config(path, resolve_medium=registered_medium).iscsi.targets[0].luns
    assert lun == m.location and lun.medium == "base"


def test_the_loader_asks_only_the_resolver_it_is_given(tmp_path: Path) -> None:
    """No resolver: a bare name is a file of the media directory and no registry
    is opened; a resolver is asked (state_dir, name), only when paths are checked."""
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nstate_dir = "state"\n[[iscsi.targets]]\n'
                    'iqn = "iqn.2026-11.org.netstore:t"\nluns = ["base"]\n')
    (tmp_path / "state" / "media").mkdir(parents=True)
    (tmp_path / "state" / "media" / "base").write_bytes(b"")
    (lun,) = load_config(path).iscsi.targets[0].luns
    assert lun == str(tmp_path / "state" / "media" / "base") and lun.medium is None
    asked = []
    image = tmp_path / "elsewhere.img"
    image.write_bytes(b"")

    def resolve(state_dir: Path, name: str, url: str | None) -> str | None:
        asked.append((state_dir, name, url))
        return str(image)

    (lun,) = load_config(path, resolve_medium=resolve).iscsi.targets[0].luns
    assert asked == [(tmp_path / "state", "base", None)]
    assert lun == str(image) and lun.medium == "base"
    load_config(path, check_paths=False, resolve_medium=resolve)
    assert len(asked) == 1


def test_config_imports_no_registry() -> None:
    code = ("import sys, netstore.config; "
            "print(sorted(m for m in sys.modules if m.startswith('netstore.registry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_loss_model_given_over_another_replaces_it() -> None:
    ge = parse_impairment({"gemodel": "2%,25%", "delay": "5ms"})
    random_loss = parse_impairment({"loss": "1%", "loss_correlation": "25%"}, base=ge)
    assert random_loss.gemodel is None and random_loss.loss == 0.01
    assert random_loss.delay == 0.005  # the rest is merged as ever
    back = parse_impairment({"gemodel": "3%,20%"}, base=random_loss)
    assert back.loss == 0 and back.loss_correlation == 0
    assert back.gemodel == GeModel(p=0.03, r=0.2)
    with pytest.raises(ImpairmentError, match="not both"):  # both at once: refused
        parse_impairment({"gemodel": "2%,25%", "loss": "1%"})
