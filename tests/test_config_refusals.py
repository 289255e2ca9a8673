# tests/test_config_refusals.py - every rule of the configuration loader
# refuses a broken file with one line naming the file, the key and what
# was expected (a table of broken files; tests/test_config.py has the rest).
"""Tests for netstore.config: broken files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from netstore.config import (
    ConfigError,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))



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
        'deamon: expected one of the keys daemon, iscsi, switches, vms, registry, got the unknown key "deamon" (did you mean "daemon"?)',
        id="unknown-section",
    ),
    pytest.param("daemon = 3\n", "daemon: expected a table, got 3", id="section-type"),
    pytest.param("[vms]\naccel = 'xen'\n", 'vms.accel: expected one of auto, kvm, tcg, got "xen"',
                 id="vms-accel"),
    pytest.param("[vms]\nacel = 'kvm'\n", 'vms.acel: expected one of the keys accel, probe_kernel',
                 id="vms-unknown-key"),
    pytest.param("[vms]\nprobe_kernel = 3\n", "vms.probe_kernel: expected a path, got 3",
                 id="vms-probe-kernel"),
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
        'sw0.ports[1].kind: expected one of udp, unixgram, stream, tap, vde, vxlan, got "udpp"',
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
