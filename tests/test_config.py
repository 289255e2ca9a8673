# tests/test_config.py - the configuration loader: examples load, every rule
# refuses with file, key and expectation, and no input escapes as anything but
# ConfigError.
"""Tests for netstore.config."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstore.config import (
    ChapConfig,
    ConfigError,
    default_config,
    load_config,
    parse_config,
    parse_portal,
)
from netstore.impairments import Flap, GeModel, ImpairmentError, parse_impairment
from netstore.registry import Registry
from netstore.registry.lookup import registered_medium
from tests.harness import netstore_env

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


# (file text, the message after "FILE: "). Images named "img" exist in the
# temp dir, so only the rule under test fails.
T = '[[iscsi.targets]]\niqn = "iqn.2026-11.org.netstore:t"\nluns = ["./img"]\n'
# Two tap ports of sw0; a key appended lands on the second (sw0.ports[1]).
P2 = ("[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
      "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\n")
BROKEN = [
    pytest.param(
        "[daemon]\nstate_dirr = 'x'\n",
        'daemon.state_dirr: expected one of the keys state_dir, log_level, got the unknown key "state_dirr" (did you mean "state_dir"?)',
        id="unknown-key-suggestion",
    ),
    pytest.param(
        "[iscsi]\nportal = ['127.0.0.1:3260']\n",
        "iscsi.portal: expected one of the keys portals,",
        id="unknown-key-iscsi",
    ),
    pytest.param(
        "[deamon]\n",
        'deamon: expected one of the keys daemon, iscsi, switches, got the unknown key "deamon" (did you mean "daemon"?)',
        id="unknown-section",
    ),
    pytest.param("daemon = 3\n", "daemon: expected a table, got 3", id="section-type"),
    pytest.param(
        "[daemon]\nlog_level = 'loud'\n",
        'daemon.log_level: expected one of debug, info, warning, error, critical, got "loud"',
        id="log-level",
    ),
    pytest.param(
        "[daemon]\nstate_dir = 7\n", "daemon.state_dir: expected a path, got 7", id="state-dir-type"
    ),
    pytest.param(
        "[iscsi]\nportals = '127.0.0.1:3260'\n",
        'iscsi.portals: expected an array, got "127.0.0.1:3260"',
        id="portals-not-array",
    ),
    pytest.param(
        "[iscsi]\nportals = []\n",
        'iscsi.portals: expected at least one "host:port", got an empty array',
        id="portals-empty",
    ),
    pytest.param(
        "[iscsi]\nportals = ['127.0.0.1']\n",
        'iscsi.portals[0]: expected "host:port"',
        id="portal-no-port",
    ),
    pytest.param(
        "[iscsi]\nportals = ['127.0.0.1:70000']\n",
        'iscsi.portals[0]: expected "host:port" or "[ipv6]:port" (port 70000 is out of range 0..65535), got "127.0.0.1:70000"',
        id="portal-port-range",
    ),
    pytest.param(
        "[iscsi]\nportals = ['::1:3260']\n", 'is written "[addr]:port"', id="portal-ipv6-brackets"
    ),
    pytest.param(
        "[iscsi]\nportals = ['[::g]:3260']\n", "is not an IPv6 address", id="portal-bad-ipv6"
    ),
    pytest.param(
        "[iscsi]\nportals = ['127.0.0.1:32a']\n", "is not a number", id="portal-port-text"
    ),
    pytest.param(
        "[iscsi]\nportals = ['a b:1']\n", "is not an IPv4 address or host name", id="portal-host"
    ),
    pytest.param(
        "[iscsi]\nportals = ['127.0.0.1:1', '127.0.0.1:1']\n",
        'iscsi.portals[1]: expected each portal once, got "127.0.0.1:1"',
        id="portal-duplicate",
    ),
    pytest.param(
        "[iscsi]\nbase_iqn = 'eui.0123456789abcdef'\n",
        "iscsi.base_iqn: expected an IQN like iqn.2026-11.org.example",
        id="base-iqn-eui",
    ),
    pytest.param(
        "[iscsi]\nnop_interval_s = 0\n",
        "iscsi.nop_interval_s: expected a positive number of seconds, got 0",
        id="nop-interval",
    ),
    pytest.param(
        "[iscsi]\nnop_timeout_s = nan\n",
        "iscsi.nop_timeout_s: expected a positive number of seconds, got nan",
        id="nop-timeout-nan",
    ),
    pytest.param(
        "[iscsi]\nmax_recv_data_segment_length = 100\n",
        "iscsi.max_recv_data_segment_length: expected an integer in 512..16777215, got 100",
        id="mrdsl",
    ),
    pytest.param(
        "[iscsi]\nmax_recv_data_segment_length = true\n",
        "iscsi.max_recv_data_segment_length: expected an integer in 512..16777215, got true",
        id="mrdsl-bool",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.2026-13.org.netstore:t"),
        'iscsi.targets[0].iqn: expected iqn.YYYY-MM.reversed.domain[:unique] (RFC 7143 4.2.7.4), got "iqn.2026-13.org.netstore:t"',
        id="iqn-month",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.26-11.org.netstore"),
        "iscsi.targets[0].iqn: expected iqn.YYYY-MM.reversed.domain",
        id="iqn-year",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.2026-11.org.NetStore"),
        "iscsi.targets[0].iqn: expected lowercase",
        id="iqn-uppercase",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.2026-11.-org:x"),
        "iscsi.targets[0].iqn: expected iqn.YYYY-MM",
        id="iqn-domain",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.2026-11.org.x:a b"),
        "iscsi.targets[0].iqn: expected iqn.YYYY-MM",
        id="iqn-space",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "iqn.2026-11.org.x:" + "a" * 220),
        "iscsi.targets[0].iqn: expected at most 223 bytes",
        id="iqn-long",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "eui.0123"),
        'iscsi.targets[0].iqn: expected eui. and 16 hex digits, got "eui.0123"',
        id="eui",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "naa.0123456789abcdef01"),
        "iscsi.targets[0].iqn: expected naa. and 16 or 32 hex digits",
        id="naa",
    ),
    pytest.param(
        T.replace("iqn.2026-11.org.netstore:t", "target1"),
        "iscsi.targets[0].iqn: expected an iSCSI name: iqn.",
        id="not-a-name",
    ),
    pytest.param(
        T + T,
        'iscsi.targets[1].iqn: expected a name not used by iscsi.targets[0], got "iqn.2026-11.org.netstore:t"',
        id="duplicate-target",
    ),
    pytest.param(
        '[[iscsi.targets]]\nluns = ["./img"]\n',
        "iscsi.targets[0].iqn: expected the target's iSCSI name, got nothing",
        id="target-no-iqn",
    ),
    pytest.param(
        '[[iscsi.targets]]\niqn = "iqn.2026-11.org.x"\n',
        "iscsi.targets[0].luns: expected an array of image paths or media names, got nothing",
        id="target-no-luns",
    ),
    pytest.param(
        '[[iscsi.targets]]\niqn = "iqn.2026-11.org.x"\nluns = []\n',
        "iscsi.targets[0].luns: expected at least one image path or media name, got an empty array",
        id="luns-empty",
    ),
    pytest.param(
        T.replace('"./img"', '"./missing.img"'),
        'iscsi.targets[0].luns[0]: expected an existing image file or block device, got "./missing.img", and ',
        id="lun-missing",
    ),
    pytest.param(T.replace('"./img"', '"./"'), "is not a file or block device", id="lun-directory"),
    pytest.param(
        T.replace('"./img"', '"nosuch"'),
        "iscsi.targets[0].luns[0]: expected a medium of the registry in ",
        id="lun-media-missing",
    ),
    pytest.param(
        T.replace('"./img"', '"bad name"'),
        "iscsi.targets[0].luns[0]: expected a media name",
        id="lun-media-name",
    ),
    pytest.param(
        T.replace('"./img"', "5"),
        "iscsi.targets[0].luns[0]: expected an image path or media name, got 5",
        id="lun-type",
    ),
    pytest.param(
        T + "allow = []\n",
        "iscsi.targets[0].allow: expected at least one initiator pattern",
        id="allow-empty",
    ),
    pytest.param(
        T + "allow = ['iqn.a b']\n",
        "iscsi.targets[0].allow[0]: expected an initiator name pattern without spaces",
        id="allow-space",
    ),
    pytest.param(
        T + "allow = [1]\n",
        "iscsi.targets[0].allow[0]: expected an initiator name pattern (fnmatch), got 1",
        id="allow-type",
    ),
    pytest.param(
        T + 'alias = "a\\nb"\n', "iscsi.targets[0].alias: expected one line", id="alias-newline"
    ),
    pytest.param(
        T + "lun = 1\n",
        'iscsi.targets[0].lun: expected one of the keys iqn, luns, allow, chap, alias, got the unknown key "lun" (did you mean "luns"?)',
        id="target-unknown-key",
    ),
    pytest.param(
        T + "chap = { user = 'u', secret = 'short' }\n",
        "iscsi.targets[0].chap.secret: expected a secret of at least 12 bytes (shorter ones fall to an offline dictionary attack",
        id="chap-short",
    ),
    pytest.param(
        T + "chap = { user = 'u', secret = '" + "x" * 256 + "' }\n",
        "iscsi.targets[0].chap.secret: expected a secret of at most 255 bytes, got 256 bytes",
        id="chap-long",
    ),
    pytest.param(
        T + "chap = { user = 'u' }\n",
        "iscsi.targets[0].chap.secret: expected a string (CHAP needs user and secret), got nothing",
        id="chap-no-secret",
    ),
    pytest.param(
        T + "chap = { user = '', secret = '123456789012' }\n",
        'iscsi.targets[0].chap.user: expected a CHAP user name, not empty, got ""',
        id="chap-empty-user",
    ),
    pytest.param(
        T + "chap = { user = 'u', secret = '123456789012', mutual_user = 't' }\n",
        "iscsi.targets[0].chap.mutual_secret: expected a secret, since mutual_user is set, got nothing",
        id="chap-mutual-no-secret",
    ),
    pytest.param(
        T + "chap = { user = 'u', secret = '123456789012', mutual_secret = '123456789013' }\n",
        "iscsi.targets[0].chap.mutual_user: expected a user name, since mutual_secret is set, got nothing",
        id="chap-mutual-no-user",
    ),
    pytest.param(
        T
        + "chap = { user = 'u', secret = '123456789012', mutual_user = 't', mutual_secret = '123456789012' }\n",
        "iscsi.targets[0].chap.mutual_secret: expected a secret different from secret",
        id="chap-mutual-same",
    ),
    pytest.param(
        T + "chap = { user = 'u', secret = '123456789012', mutal_user = 't' }\n",
        'iscsi.targets[0].chap.mutal_user: expected one of the keys user, secret, mutual_user, mutual_secret, got the unknown key "mutal_user" (did you mean "mutual_user"?)',
        id="chap-unknown-key",
    ),
    pytest.param(
        "[iscsi.discovery_chap]\nuser = 'u'\nsecret = 'x'\n",
        "iscsi.discovery_chap.secret: expected a secret of at least 12 bytes",
        id="discovery-chap-short",
    ),
    pytest.param(
        "[iscsi]\ndiscovery_chap = 'u:p'\n",
        'iscsi.discovery_chap: expected a table, got "u:p"',
        id="discovery-chap-type",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p1'\nkind = 'udp'\nlocal = '127.0.0.1:1'\n"
        "[[switches.ports]]\nname = 'p2'\nkind = 'udpp'\n",
        'sw0.ports[1].kind: expected one of udp, unixgram, stream, tap, vde, got "udpp"',
        id="port-kind",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches]]\nname = 'sw0'\n",
        'switches[1].name: expected a name not used by switches[0], got "sw0"',
        id="switch-duplicate",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 'tap0'\n"
        "[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 'tap1'\n",
        'sw0.ports[1].name: expected a name not used by sw0.ports[0], got "p"',
        id="port-duplicate",
    ),
    pytest.param(
        "[[switches]]\nmac_aging_s = 3\n",
        "switches[0].name: expected the switch's name, got nothing",
        id="switch-no-name",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw 0'\n",
        "switches[0].name: expected a name of letters",
        id="switch-name",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\nmac_table_size = 0\n",
        "sw0.mac_table_size: expected an integer in 1..16777216, got 0",
        id="mac-table-size",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\nmac_aging = 3\n",
        "switches[0].mac_aging: expected one of the keys name, mac_aging_s,",
        id="switch-unknown-key",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'udp'\n",
        'sw0.ports[0].local: expected "host:port", got nothing',
        id="udp-no-local",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'udp'\nlocal = 'x'\n",
        'sw0.ports[0].local: expected "host:port"',
        id="udp-bad-local",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'udp'\nlocal = '127.0.0.1:1'\ndevice = 'tap0'\n",
        'sw0.ports[0].device: expected only name, kind, vlan, trunk, native, mtu, mirror_to, max_macs, bound_mac, storm_pps, in, out, link, flap, local, remote for kind "udp", got the key device',
        id="port-key-of-other-kind",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'stream'\n",
        "sw0.ports[0].listen: expected exactly one of listen or connect",
        id="stream-neither",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\n",
        "sw0.ports[0].device: expected a TAP device name like tap0, got nothing",
        id="tap-no-device",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 'averyverylongtapname'\n",
        "sw0.ports[0].device: expected an interface name of at most 15 bytes",
        id="tap-long",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'vde'\n",
        "sw0.ports[0].path: expected the VDE control directory path, got nothing",
        id="vde-no-path",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 't'\nvlan = 4095\n",
        "sw0.ports[0].vlan: expected an integer in 1..4094, got 4095",
        id="vlan-range",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 't'\nvlan = 2\ntrunk = [3]\n",
        "sw0.ports[0].vlan: expected either vlan (access port) or trunk, not both",
        id="vlan-and-trunk",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 't'\nnative = 2\n",
        "sw0.ports[0].native: expected native only on a trunk port",
        id="native-without-trunk",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 't'\ntrunk = [3, 3]\n",
        "sw0.ports[0].trunk: expected each VLAN once",
        id="trunk-duplicate",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'p'\nkind = 'tap'\ndevice = 't'\nmtu = 10\n",
        "sw0.ports[0].mtu: expected an integer in 68..65535, got 10",
        id="mtu",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nmirror_to = 'c'\n",
        'sw0.ports[1].mirror_to: expected the name of another port of sw0 (a), got "c"',
        id="mirror-to-unknown",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nmirror_to = 'b'\n",
        'sw0.ports[1].mirror_to: expected another port of the switch (not the port itself), got "b"',
        id="mirror-to-itself",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nmirror_to = 'a'\n"
        "[[switches.ports]]\nname = 'c'\nkind = 'tap'\ndevice = 't2'\nmirror_to = 'b'\n",
        'sw0.ports[1].mirror_to: expected no mirror_to on a mirror destination (port "b" gets the copies of port "c"), got "a"',
        id="mirror-chain",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nmirror_to = 1\n",
        "sw0.ports[1].mirror_to: expected a name, got 1",
        id="mirror-to-type",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nmax_macs = 0\n",
        "sw0.ports[1].max_macs: expected an integer in 1..16777216, got 0",
        id="max-macs",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nbound_mac = '52:54:00:12:34'\n",
        'sw0.ports[1].bound_mac: expected a unicast MAC address like "52:54:00:12:34:56", got "52:54:00:12:34"',
        id="bound-mac-short",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nbound_mac = '01:00:5e:00:00:01'\n",
        'sw0.ports[1].bound_mac: expected a unicast MAC address like "52:54:00:12:34:56" (not multicast, broadcast or all zeros), got "01:00:5e:00:00:01"',
        id="bound-mac-multicast",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nbound_mac = '52:54:00:12:34-56'\n",
        "sw0.ports[1].bound_mac: expected a unicast MAC address",
        id="bound-mac-mixed-separators",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nstorm_pps = 0\n",
        "sw0.ports[1].storm_pps: expected an integer in 1..10000000, got 0",
        id="storm-pps",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "[[switches.ports]]\nname = 'b'\nkind = 'tap'\ndevice = 't1'\nstorm_pps = 1.5\n",
        "sw0.ports[1].storm_pps: expected an integer in 1..10000000, got 1.5",
        id="storm-pps-float",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'a'\nkind = 'tap'\ndevice = 't0'\n"
        "mirror_to = 'v'\n[[switches.ports]]\nname = 'v'\nkind = 'vde'\npath = 'v.vde'\n",
        'sw0.ports[0].mirror_to: expected a port, not a VDE directory (its clients come and go), got "v"',
        id="mirror-to-vde",
    ),
    # impaired links: every refusal names the key inside in/out
    pytest.param(
        P2 + "out = { delay = '80 mins' }\n",
        'sw0.ports[1].out.delay: expected a time like "80ms", "500us" or "1s", got "80 mins"',
        id="impair-delay-unit",
    ),
    pytest.param(
        P2 + "out = { delay = 80 }\n",
        'sw0.ports[1].out.delay: expected a time like "80ms", "500us" or "1s", got 80',
        id="impair-delay-bare-number",
    ),
    pytest.param(
        P2 + "out = { loss = '120%' }\n",
        'sw0.ports[1].out.loss: expected a percentage from "0%" to "100%", got "120%"',
        id="impair-loss-120",
    ),
    pytest.param(
        P2 + "in = { loss = '1' }\n",
        'sw0.ports[1].in.loss: expected a percentage from "0%" to "100%", got "1"',
        id="impair-loss-no-percent",
    ),
    pytest.param(
        P2 + "out = { rate = '10mb' }\n",
        'sw0.ports[1].out.rate: expected a rate like "10mbit", "500kbit" or "1gbit" (bps: bytes/s, as tc), got "10mb"',
        id="impair-rate-unit",
    ),
    pytest.param(
        P2 + "out = { los = '1%' }\n",
        "sw0.ports[1].out.los: expected one of the keys delay, jitter, delay_correlation, distribution, loss,",
        id="impair-unknown-key",
    ),
    pytest.param(
        P2 + "out = { gemodel = { p = '1%', h = '1%' } }\n",
        "sw0.ports[1].out.gemodel.h: expected one of the keys p, r, bad_loss, good_loss",
        id="impair-gemodel-unknown-key",
    ),
    pytest.param(
        P2 + "in = { reorder = '25%' }\n",
        'sw0.ports[1].in.reorder: expected a delay as well (reordered frames jump the delay), got "25%"',
        id="impair-reorder-without-delay",
    ),
    pytest.param(
        P2 + "out = { gemodel = '1%,10%', loss = '1%' }\n",
        'sw0.ports[1].out.gemodel: expected either loss (random) or gemodel, not both, got "1%,10%"',
        id="impair-gemodel-and-loss",
    ),
    pytest.param(
        P2 + "out = { jitter = '5ms', distribution = 'gauss' }\n",
        'sw0.ports[1].out.distribution: expected one of uniform, normal, pareto, paretonormal, got "gauss"',
        id="impair-distribution",
    ),
    pytest.param(
        P2 + "out = { delay = '1ms', limit = 0 }\n",
        "sw0.ports[1].out.limit: expected an integer in 1..1000000, got 0",
        id="impair-limit",
    ),
    pytest.param(
        P2 + 'out = { delay = "a\\nb" }\n',  # a real newline in the value
        'sw0.ports[1].out.delay: expected a time like "80ms", "500us" or "1s", got "a\\nb"',
        id="impair-value-on-one-line",
    ),
    pytest.param(
        P2 + "out = '80ms'\n",
        'sw0.ports[1].out: expected a table, got "80ms"',
        id="impair-not-a-table",
    ),
    pytest.param(
        P2 + "link = 'flapping'\n",
        'sw0.ports[1].link: expected "up" or "down", got "flapping"',
        id="link-state",
    ),
    pytest.param(
        P2 + "flap = 'down 30s every 30s'\n",
        'sw0.ports[1].flap: expected a schedule like "down 2s every 30s" (down shorter than the period), got "down 30s every 30s"',
        id="flap-down-not-shorter",
    ),
    pytest.param(
        P2 + "flap = 'down 2s every 30'\n",
        'sw0.ports[1].flap: expected a schedule like "down 2s every 30s", got "down 2s every 30"',
        id="flap-unit",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\nseed = 1.5\n",
        "sw0.seed: expected an integer in 0..9223372036854775807, got 1.5",
        id="seed-float",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\nseed = '42'\n",
        'sw0.seed: expected an integer in 0..9223372036854775807, got "42"',
        id="seed-string",
    ),
    pytest.param(
        "[[switches]]\nname = 'sw0'\nseed = -1\n",
        "sw0.seed: expected an integer in 0..9223372036854775807, got -1",
        id="seed-negative",
    ),
    pytest.param(
        "[iscsi]\nportals = [\n",
        "line 2: expected valid TOML, got an error: Invalid value",
        id="toml-syntax",
    ),
    pytest.param(
        "a = 1\na = 2\n",
        "line 2, column 6: expected valid TOML, got an error: ",
        id="toml-duplicate-key",
    ),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_file_is_refused(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "img").write_bytes(b"\0" * 4096)
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    got = str(e.value)
    assert got.startswith(f"{path}: "), got
    assert message in got, got
    assert "\n" not in got


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


# --- property: whatever the document, only ConfigError comes out ----------

KEYS = [
    "daemon",
    "iscsi",
    "switches",
    "state_dir",
    "log_level",
    "portals",
    "base_iqn",
    "discovery_chap",
    "targets",
    "nop_interval_s",
    "nop_timeout_s",
    "max_recv_data_segment_length",
    "iqn",
    "luns",
    "allow",
    "chap",
    "alias",
    "user",
    "secret",
    "mutual_user",
    "mutual_secret",
    "name",
    "mac_aging_s",
    "mac_table_size",
    "capture",
    "ports",
    "kind",
    "local",
    "remote",
    "vlan",
    "trunk",
    "native",
    "device",
    "listen",
    "connect",
    "path",
    "mtu",
    "in",
    "out",
    "link",
    "flap",
    "seed",
    "delay",
    "jitter",
    "loss",
    "gemodel",
    "p",
    "rate",
    "x",
]
PLAUSIBLE = [
    "127.0.0.1:3260",
    "[::1]:3260",
    "::1",
    "host:99999",
    "iqn.2026-11.org.netstore:a",
    "eui.0123456789ABCDEF",
    "naa.0123456789abcdef",
    "udp",
    "unixgram",
    "stream",
    "tap",
    "vde",
    "tap0",
    "*",
    "/dev/null",
    "./img",
    "img",
    "sw0",
    "info",
    "123456789012",
    "80ms",
    "1%",
    "120%",
    "10mbit",
    "down",
    "down 2s every 30s",
    "../../etc",
    "~",
    "",
    "\x00",
    "a" * 300,
    "/nonexistent/\x00/x",
]

scalars = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)


def to_toml(value: object) -> str:
    """A minimal inline TOML writer, enough for generated documents."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {to_toml(v)}" for k, v in value.items()) + "}"


_HYPO_DIR = Path(tempfile.mkdtemp(prefix="netstore-config-hypo-"))
(_HYPO_DIR / "img").write_bytes(b"\0" * 512)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents_only_raise_config_error(doc: dict) -> None:
    text = "\n".join(f"{json.dumps(k)} = {to_toml(v)}" for k, v in doc.items())
    try:
        parse_config(text, file="h.toml", source=_HYPO_DIR / "h.toml")
    except ConfigError as e:
        assert str(e).startswith("h.toml: ") and "\n" not in str(e)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(list("[]{}=\".,:'\n #abc1-_tsrue") + ["iscsi", "targets"]), max_size=60
    ).map("".join)
)
def test_raw_text_only_raises_config_error(text: str) -> None:
    try:
        parse_config(text, file="h.toml", source=_HYPO_DIR / "h.toml")
    except ConfigError as e:
        assert str(e).startswith("h.toml: ")


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

    def resolve(state_dir: Path, name: str) -> str | None:
        asked.append((state_dir, name))
        return str(image)

    (lun,) = load_config(path, resolve_medium=resolve).iscsi.targets[0].luns
    assert asked == [(tmp_path / "state", "base")]
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
