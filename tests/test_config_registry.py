# tests/test_config_registry.py - the [registry] section: a shared registry's
# URL, this host's name in it and the lease; each mistake refused naming its key.
"""The [registry] section of the configuration."""

from __future__ import annotations

import pytest

from netstore.config import ConfigError, parse_config
from netstore.config.registryconf import DEFAULT_LEASE_S, default_host


def test_default_is_sqlite_under_the_machine_name() -> None:
    c = parse_config("", check_paths=False)
    assert c.registry.url is None and not c.registry.shared
    assert c.registry.host == default_host() and c.registry.lease_s == DEFAULT_LEASE_S


def test_shared_registry_read() -> None:
    c = parse_config('[registry]\nurl = "postgresql://netstore@db.example/lab"\n'
                     'host = "host1"\nlease = 5\nmedia = "/srv/nfs/media"\n', check_paths=False)
    assert c.registry.url == "postgresql://netstore@db.example/lab"
    assert c.registry.shared and c.registry.host == "host1" and c.registry.lease_s == 5.0
    assert str(c.registry.media) == "/srv/nfs/media"


@pytest.mark.parametrize(("text", "key", "says"), [
    ('url = "mysql://x/y"', "registry.url", "postgresql://"),
    ('url = ""', "registry.url", "not empty"),
    ("url = 5", "registry.url", "a postgresql:// URL"),
    ('host = "two words"', "registry.host", "a host name"),
    ('host = "-x"', "registry.host", "a host name"),
    ("lease = 0", "registry.lease", "positive"),
    ("lease = 99999", "registry.lease", "seconds in"),
    ('hots = "x"', "registry.hots", 'did you mean "host"'),
    ("media = 3", "registry.media", "a path"),
])
def test_mistakes_refused_naming_the_key(text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"[registry]\n{text}\n", check_paths=False)
    assert f"{key}: expected" in str(e.value) and says in str(e.value)


def test_host_list_of_one_host_says_the_registry_is_not_shared(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import Cli

    cli = Cli(tmp_path)
    assert cli.ok("host", "list") == ("no host has joined this registry (one host: "
                                      "[registry] url is not set)\n")
    assert cli.json("host", "list") == []
