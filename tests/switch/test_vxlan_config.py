# tests/switch/test_vxlan_config.py - the vxlan port kind in a configuration
# file: what it accepts (defaults filled in) and what it refuses, each refusal
# one line naming the file and the key, like every other kind's.
"""Configuration of vxlan ports: accepted forms and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from netstore.config import ConfigError, load_config
from netstore.switch.core import PortSettings

HEAD = "[[switches]]\nname = 'sw0'\n[[switches.ports]]\nname = 'vx'\nkind = 'vxlan'\n"
OK = HEAD + "local = '198.51.100.1'\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "x.toml"
    path.write_text(text)
    return load_config(path, check_paths=False).switches[0].ports[0]


def test_access_port_with_defaults(tmp_path: Path) -> None:
    p = load(tmp_path, OK + "vni = 5010\nvlan = 7\nremotes = ['198.51.100.2', '198.51.100.3:8472']\n")
    assert (p.kind, p.local, p.vni, p.vnis, p.vlan) == ("vxlan", "198.51.100.1:4789", 5010, None, 7)
    assert p.remotes == ("198.51.100.2:4789", "198.51.100.3:8472")
    assert p.path_mtu is None
    assert PortSettings.from_spec(p).vlan == 7


def test_trunk_port_maps_vlans_to_vnis(tmp_path: Path) -> None:
    p = load(tmp_path, OK + "vnis = {10 = 5010, 20 = 5020}\nmtu = 9000\n")
    assert p.vnis == ((10, 5010), (20, 5020)) and p.vni is None
    assert p.trunk == [10, 20] and p.vlan is None and p.path_mtu == 9000
    s = PortSettings.from_spec(p)
    assert s.trunk == frozenset({10, 20}) and s.native is None


R = "sw0.ports[0]"
BROKEN = [
    (HEAD + "vni = 1\n", f"{R}.local: expected the local underlay address"),
    (HEAD + "local = 'vtep.example'\nvni = 1\n",
     f'{R}.local: expected the local underlay address: "IPv4" or "IPv4:port" (port 4789 '
     'when absent), got "vtep.example"'),
    (HEAD + "local = '1.2.3.4:0'\nvni = 1\n", "with a port in 1..65535"),
    (OK, f"{R}.vni: expected exactly one of vni (0..16777215) or vnis"),
    (OK + "vni = 1\nvnis = {2 = 3}\n", "got both"),
    (OK + "vni = 16777216\n", f"{R}.vni: expected an integer in 0..16777215, got 16777216"),
    (OK + "vni = '5'\n", f'{R}.vni: expected an integer in 0..16777215, got "5"'),
    (OK + "vni = 1\ntrunk = [1, 2]\n", f"{R}.trunk: expected no trunk or native with vni"),
    (OK + "vnis = {10 = 1}\nvlan = 3\n", f"{R}.vlan: expected no vlan, trunk or native with vnis"),
    (OK + "vnis = {}\n", f"{R}.vnis: expected at least one VLAN = VNI, got an empty table"),
    (OK + "vnis = 5\n", f"{R}.vnis: expected a table, got 5"),
    (OK + "vnis = {4095 = 1}\n", f'{R}.vnis.4095: expected a VLAN 1..4094 as the key, got "4095"'),
    (OK + "vnis = {10 = -1}\n", f"{R}.vnis.10: expected an integer in 0..16777215, got -1"),
    (OK + "vnis = {10 = 5, 20 = 5}\n", f"{R}.vnis: expected each VNI for one VLAN only"),
    (OK + "vni = 1\nremotes = '198.51.100.2'\n", f"{R}.remotes: expected an array"),
    (OK + "vni = 1\nremotes = ['198.51.100.2', '198.51.100.2:4789']\n",
     f'{R}.remotes[1]: expected each VTEP once, got "198.51.100.2:4789"'),
    (OK + "vni = 1\nremotes = ['239.1.1.1']\n", f"{R}.remotes[0]: expected a remote VTEP"),
    (OK + "vni = 1\nremotes = [5]\n", f"{R}.remotes[0]: expected a remote VTEP"),
    (OK + "vni = 1\nmtu = 117\n", f"{R}.mtu: expected an integer in 118..65535, got 117"),
    (OK + "vni = 1\ndevice = 'tap0'\n", f"{R}.device: expected only name, kind"),
    (HEAD.replace("vxlan", "vxlann") + "local = '1.2.3.4'\n",
     f'{R}.kind: expected one of udp, unixgram, stream, tap, vde, vxlan, got "vxlann"'),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_refused_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    got = str(e.value)
    assert got.startswith(f"{tmp_path / 'x.toml'}: "), got
    assert message in got, got
    assert "\n" not in got
