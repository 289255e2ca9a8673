# netstore/config/loader.py - a TOML file in, a validated Config out.
#
# Every rule a file can break is checked here (and in switches.py for the
# [[switches]] tables), before anything starts, and refused with one
# ConfigError whose message names the file, the key path
# (``iscsi.targets[1].chap.secret``), what was expected and what was got.
# The loader reads no registry: a bare LUN name is looked up through the
# resolve_medium function the caller passes (registry/lookup.py has one).
"""Load and validate netstore daemon configuration files (TOML)."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from netstore.addresses import DNS_LABEL as _LABEL
from netstore.addresses import format_portal, parse_portal
from netstore.config.model import (
    ACCELS,
    ALIAS_MAX,
    CHAP_SECRET_MAX,
    CHAP_SECRET_MIN,
    CHAP_USER_MAX,
    DEFAULT_BASE_IQN,
    DEFAULT_MRDSL,
    DEFAULT_NOP_INTERVAL_S,
    DEFAULT_NOP_TIMEOUT_S,
    DEFAULT_PORTAL,
    DEFAULT_STATE_DIR,
    DEFAULT_SWITCH,
    ISCSI_NAME_MAX,
    LOG_LEVELS,
    LUN_KINDS,
    MRDSL_MAX,
    MRDSL_MIN,
    WORKERS_MAX,
    WORKERS_MIN,
    ChapConfig,
    Config,
    ConfigError,
    DaemonConfig,
    IscsiConfig,
    LunSpec,
    SwitchConfig,
    TargetConfig,
    VmsConfig,
    default_workers,
)
from netstore.config.reader import _NAME_RE, MediumResolver, _describe, _Reader
from netstore.config.registryconf import (
    DEFAULT_LEASE_S,
    LEASE_MAX_S,
    LEASE_MIN_S,
    URL_SCHEMES,
    RegistryConfig,
    default_host,
)
from netstore.config.switches import _switch

__all__ = ["iscsi_name_problem", "load_config", "parse_config"]

# RFC 3720 3.2.6.3.1 / RFC 7143 4.2.7.4: iqn.yyyy-mm.reversed.domain[:unique];
# after stringprep (RFC 3722) names are lowercase letters, digits, '-', '.', ':'.
_IQN_RE = re.compile(rf"iqn\.\d{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[a-z0-9.:-]*)?")
_EUI_RE = re.compile(r"eui\.[0-9a-fA-F]{16}")  # RFC 3720 3.2.6.3.2: EUI-64
_NAA_RE = re.compile(r"naa\.(?:[0-9a-fA-F]{16}|[0-9a-fA-F]{32})")  # RFC 3980


def iscsi_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid iSCSI name (RFC 7143 4.2.7), or None if it is."""
    if len(name.encode()) > ISCSI_NAME_MAX:
        return f"at most {ISCSI_NAME_MAX} bytes"
    lowered = name.lower()
    if lowered.startswith("iqn."):
        if name != lowered:
            return "lowercase (iSCSI names are compared after mapping to lowercase, RFC 3722)"
        if not _IQN_RE.fullmatch(name):
            return "iqn.YYYY-MM.reversed.domain[:unique] (RFC 7143 4.2.7.4)"
        return None
    if lowered.startswith("eui."):
        return None if _EUI_RE.fullmatch(name) else "eui. and 16 hex digits"
    if lowered.startswith("naa."):
        return None if _NAA_RE.fullmatch(name) else "naa. and 16 or 32 hex digits"
    return "an iSCSI name: iqn.YYYY-MM.reversed.domain[:unique], eui.<16 hex> or naa.<16|32 hex>"


def load_config(path: str | Path, *, check_paths: bool = True,
                resolve_medium: MediumResolver | None = None) -> Config:
    """Read and validate a configuration file.

    Args:
        path: the TOML file. Relative paths inside it (state_dir, LUN images,
            capture files) are resolved against the file's directory; without
            ``[daemon] state_dir`` the state lives in ``netstore-state`` there.
        check_paths: whether LUN images must exist (a client that only needs
            the state directory, like ``netstore status``, passes False).
        resolve_medium: ``resolve_medium(state_dir, name)`` gives the file of
            the registered base medium ``name``, or None; a bare LUN name it
            resolves is that medium (``LunSpec.medium`` set), otherwise the
            file ``<state_dir>/media/<name>``. None: no registry is asked
            (``netstore.registry.lookup.registered_medium`` is the usual one).

    Returns:
        The validated Config, with ``source`` set to the file's absolute path.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or breaks a
            rule; the message names the file, key, expectation and value.
    """
    file = str(path)
    source = Path(path).expanduser().absolute()
    reader = _Reader(file, source.parent)
    try:
        st = source.stat()
    except FileNotFoundError:
        raise reader.fail("", "a configuration file", "nothing (no such file)") from None
    except (OSError, ValueError) as e:
        raise reader.fail("", "a readable configuration file", f"an error ({e})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise reader.fail("", "a configuration file", kind)
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise reader.fail("", "a readable configuration file", f"an error ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}: line {line}: expected UTF-8 text, got the byte {raw[e.start]:#04x}",
            file=file,
        ) from None
    return parse_config(text, file=file, source=source, check_paths=check_paths,
                        resolve_medium=resolve_medium)


def parse_config(
    text: str, *, file: str = "<config>", source: Path | None = None, check_paths: bool = True,
    resolve_medium: MediumResolver | None = None,
) -> Config:
    """Validate configuration ``text``; ``file`` names it in messages.

    Relative paths resolve against ``source``'s directory, or the current
    directory without one; ``resolve_medium`` as for load_config. Raises
    ConfigError as load_config does.
    """
    base_dir = source.parent if source is not None else Path.cwd()
    reader = _Reader(file, base_dir, check_paths, resolve_medium)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        where = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        what = re.sub(r"\s*\(at [^)]*\)$", "", msg)
        if where:
            loc = f"line {where.group(1)}, column {where.group(2)}"
        else:
            loc = (
                f"line {max(1, len(text.splitlines()))}"
                if "end of document" in msg
                else "somewhere"
            )
        raise ConfigError(
            f"{file}: {loc}: expected valid TOML, got an error: {what}", file=file
        ) from None
    except RecursionError:
        raise reader.fail("", "TOML nested less deeply", "too many levels") from None
    return _build_config(reader, doc, source)


def _build_config(r: _Reader, doc: dict[str, Any], source: Path | None) -> Config:
    r.keys(doc, "", ("daemon", "iscsi", "switches", "vms", "registry"))
    daemon = _daemon(r, r.table(doc.get("daemon", {}), "daemon"))
    registry = _registry(r, r.table(doc.get("registry", {}), "registry"))
    r.registry_url = registry.url  # where a LUN's bare medium name is looked up
    iscsi = _iscsi(r, r.table(doc.get("iscsi", {}), "iscsi"), daemon)
    if "switches" in doc:
        switches = r.array(doc["switches"], "switches", lambda v, k: _switch(r, v, k))
    else:
        switches = [SwitchConfig(name=DEFAULT_SWITCH)]
    r.unique_names(switches, "switches")
    vms = _vms(r, r.table(doc.get("vms", {}), "vms"))
    return Config(daemon=daemon, iscsi=iscsi, switches=switches, source=source, vms=vms,
                  registry=registry)


def _vms(r: _Reader, t: dict[str, Any]) -> VmsConfig:
    r.keys(t, "vms", ("accel", "probe_kernel"))
    accel = t.get("accel", "auto")
    if not isinstance(accel, str) or accel not in ACCELS:
        raise r.fail("vms.accel", "one of " + ", ".join(ACCELS), _describe(accel))
    kernel = r.path(t["probe_kernel"], "vms.probe_kernel") if "probe_kernel" in t else None
    return VmsConfig(accel=accel, probe_kernel=kernel)

# A host name in a shared registry: a DNS label, or a few joined by dots.
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _registry(r: _Reader, t: dict[str, Any]) -> RegistryConfig:
    """The ``[registry]`` table, checked."""
    r.keys(t, "registry", ("url", "host", "lease", "media"))
    url = None
    if "url" in t:
        url = r.string(t["url"], "registry.url", what="a postgresql:// URL")
        if url.split(":", 1)[0] not in URL_SCHEMES or "://" not in url:
            raise r.fail("registry.url", 'a URL like "postgresql://user@server/netstore"',
                         _describe(url))
    host = default_host()
    if "host" in t:
        host = r.string(t["host"], "registry.host", what="a host name")
        if not _HOST_NAME.match(host):
            raise r.fail("registry.host", "a host name of letters, digits, '.', '-', '_' "
                         "(at most 63)", _describe(host))
    lease = DEFAULT_LEASE_S
    if "lease" in t:
        lease = r.positive_number(t["lease"], "registry.lease")
        if not LEASE_MIN_S <= lease <= LEASE_MAX_S:
            raise r.fail("registry.lease", f"seconds in {LEASE_MIN_S:g}..{LEASE_MAX_S:g}",
                         _describe(t["lease"]))
    media = r.path(t["media"], "registry.media") if "media" in t else None
    return RegistryConfig(url=url, host=host, lease_s=lease, media=media)


def _daemon(r: _Reader, t: dict[str, Any]) -> DaemonConfig:
    r.keys(t, "daemon", ("state_dir", "log_level"))
    if "state_dir" in t:
        state_dir = r.path(t["state_dir"], "daemon.state_dir")
    else:
        # Next to the file, like every relative path in it: a file means the
        # same state whatever directory netstore is started (or asked) from.
        state_dir = r.base_dir / DEFAULT_STATE_DIR
    level = t.get("log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise r.fail("daemon.log_level", "one of " + ", ".join(LOG_LEVELS), _describe(level))
    return DaemonConfig(state_dir=state_dir, log_level=level.lower())


def _iscsi(r: _Reader, t: dict[str, Any], daemon: DaemonConfig) -> IscsiConfig:
    r.keys(
        t,
        "iscsi",
        (
            "portals",
            "base_iqn",
            "discovery_chap",
            "targets",
            "nop_interval_s",
            "nop_timeout_s",
            "max_recv_data_segment_length",
            "workers",
        ),
    )
    portals = r.array(
        t.get("portals", [format_portal(*DEFAULT_PORTAL)]),
        "iscsi.portals",
        lambda v, k: _portal(r, v, k),
    )
    if not portals:
        raise r.fail("iscsi.portals", 'at least one "host:port"', "an empty array")
    for i, p in enumerate(portals):
        if p in portals[:i]:
            raise r.fail(f"iscsi.portals[{i}]", "each portal once", _describe(format_portal(*p)))
    base_iqn = r.string(t.get("base_iqn", DEFAULT_BASE_IQN), "iscsi.base_iqn", what="an IQN")
    if not base_iqn.startswith("iqn.") or iscsi_name_problem(base_iqn):
        raise r.fail("iscsi.base_iqn", "an IQN like iqn.2026-11.org.example", _describe(base_iqn))
    discovery_chap = None
    if "discovery_chap" in t:
        discovery_chap = _chap(r, t["discovery_chap"], "iscsi.discovery_chap")
    targets = r.array(t.get("targets", []), "iscsi.targets", lambda v, k: _target(r, v, k, daemon))
    seen: dict[str, int] = {}
    for i, target in enumerate(targets):
        folded = target.iqn.lower()
        if folded in seen:
            raise r.fail(
                f"iscsi.targets[{i}].iqn",
                f"a name not used by iscsi.targets[{seen[folded]}]",
                _describe(target.iqn),
            )
        seen[folded] = i
    nop_interval = r.positive_number(
        t.get("nop_interval_s", DEFAULT_NOP_INTERVAL_S), "iscsi.nop_interval_s"
    )
    nop_timeout = r.positive_number(
        t.get("nop_timeout_s", DEFAULT_NOP_TIMEOUT_S), "iscsi.nop_timeout_s"
    )
    mrdsl = r.integer(
        t.get("max_recv_data_segment_length", DEFAULT_MRDSL),
        "iscsi.max_recv_data_segment_length",
        MRDSL_MIN,
        MRDSL_MAX,
    )
    workers = r.integer(t.get("workers", default_workers()), "iscsi.workers",
                        WORKERS_MIN, WORKERS_MAX)
    return IscsiConfig(
        portals=portals,
        base_iqn=base_iqn,
        discovery_chap=discovery_chap,
        targets=targets,
        nop_interval_s=nop_interval,
        nop_timeout_s=nop_timeout,
        max_recv_data_segment_length=mrdsl,
        workers=workers,
    )


def _portal(r: _Reader, value: Any, key: str) -> tuple[str, int]:
    text = r.string(value, key, what='"host:port"')
    try:
        return parse_portal(text)
    except ValueError as e:
        raise r.fail(key, f'"host:port" or "[ipv6]:port" ({e})', _describe(text)) from None


def _iscsi_name(r: _Reader, value: Any, key: str) -> str:
    name = r.string(value, key, what="an iSCSI name")
    problem = iscsi_name_problem(name)
    if problem:
        raise r.fail(key, problem, _describe(name))
    return name


def _chap(r: _Reader, value: Any, key: str) -> ChapConfig:
    t = r.table(value, key)
    r.keys(t, key, ("user", "secret", "mutual_user", "mutual_secret"))
    for required in ("user", "secret"):
        if required not in t:
            raise r.fail(f"{key}.{required}", "a string (CHAP needs user and secret)", "nothing")
    user = _chap_user(r, t["user"], f"{key}.user")
    secret = _chap_secret(r, t["secret"], f"{key}.secret")
    mutual_user = mutual_secret = None
    if "mutual_user" in t or "mutual_secret" in t:
        if "mutual_secret" not in t:
            raise r.fail(f"{key}.mutual_secret", "a secret, since mutual_user is set", "nothing")
        if "mutual_user" not in t:
            raise r.fail(f"{key}.mutual_user", "a user name, since mutual_secret is set", "nothing")
        mutual_user = _chap_user(r, t["mutual_user"], f"{key}.mutual_user")
        mutual_secret = _chap_secret(r, t["mutual_secret"], f"{key}.mutual_secret")
        if mutual_secret == secret:
            # RFC 7143 12.1.3: a secret used to authenticate initiators MUST NOT
            # also authenticate the target.
            raise r.fail(
                f"{key}.mutual_secret",
                "a secret different from secret (RFC 7143 12.1.3)",
                "the same secret",
            )
    return ChapConfig(
        user=user, secret=secret, mutual_user=mutual_user, mutual_secret=mutual_secret
    )


def _chap_user(r: _Reader, value: Any, key: str) -> str:
    user = r.string(value, key, what="a CHAP user name")
    if len(user.encode()) > CHAP_USER_MAX:
        raise r.fail(key, f"a CHAP user name of at most {CHAP_USER_MAX} bytes", _describe(user))
    return user


def _chap_secret(r: _Reader, value: Any, key: str) -> str:
    secret = r.string(value, key, what="a CHAP secret")
    n = len(secret.encode())
    if n < CHAP_SECRET_MIN:
        raise r.fail(
            key,
            f"a secret of at least {CHAP_SECRET_MIN} bytes (shorter ones fall to an offline "
            "dictionary attack, RFC 7143 9.2.1; tgt, LIO and Windows refuse them too)",
            f"{n} bytes",
        )
    if n > CHAP_SECRET_MAX:
        raise r.fail(key, f"a secret of at most {CHAP_SECRET_MAX} bytes", f"{n} bytes")
    return secret


def _target(r: _Reader, value: Any, key: str, daemon: DaemonConfig) -> TargetConfig:
    t = r.table(value, key)
    r.keys(t, key, ("iqn", "luns", "allow", "chap", "alias"))
    if "iqn" not in t:
        raise r.fail(f"{key}.iqn", "the target's iSCSI name", "nothing")
    iqn = _iscsi_name(r, t["iqn"], f"{key}.iqn")
    if "luns" not in t:
        raise r.fail(f"{key}.luns", "an array of image paths or media names", "nothing")
    luns = r.array(t["luns"], f"{key}.luns", lambda v, k: _lun(r, v, k, daemon))
    if not luns:
        raise r.fail(f"{key}.luns", "at least one image path or media name", "an empty array")
    allow = ["*"]
    if "allow" in t:
        allow = r.array(t["allow"], f"{key}.allow", lambda v, k: _pattern(r, v, k))
        if not allow:
            raise r.fail(
                f"{key}.allow",
                "at least one initiator pattern (leave allow out to admit every initiator)",
                "an empty array",
            )
    chap = _chap(r, t["chap"], f"{key}.chap") if "chap" in t else None
    alias = None
    if "alias" in t:
        alias = r.string(t["alias"], f"{key}.alias", what="a text alias")
        if len(alias.encode()) > ALIAS_MAX or any(c in alias for c in "\r\n"):
            raise r.fail(f"{key}.alias", f"one line of at most {ALIAS_MAX} bytes", _describe(alias))
    return TargetConfig(iqn=iqn, luns=luns, allow=allow, chap=chap, alias=alias)


def _boolean(r: _Reader, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise r.fail(key, "true or false", _describe(value))
    return value


def _lun(r: _Reader, value: Any, key: str, daemon: DaemonConfig) -> LunSpec:
    if not isinstance(value, dict):
        path, medium = _lun_path(r, value, key, daemon)
        return LunSpec(path, medium=medium)
    t = value
    r.keys(t, key, ("path", "kind", "readonly", "removable", "thin"))
    if "path" not in t:
        raise r.fail(f"{key}.path", "an image path or media name", "nothing")
    path, medium = _lun_path(r, t["path"], f"{key}.path", daemon)
    kind = t.get("kind", "disk")
    if kind not in LUN_KINDS:
        raise r.fail(f"{key}.kind", "one of " + ", ".join(f'"{k}"' for k in LUN_KINDS),
                     _describe(kind))
    flags = {name: _boolean(r, t[name], f"{key}.{name}")
             for name in ("readonly", "removable", "thin") if name in t}
    if kind == "dvd":
        if flags.get("readonly") is False:
            raise r.fail(f"{key}.readonly", "true or nothing (a dvd is read-only)", "false")
        if flags.get("removable") is False:
            raise r.fail(f"{key}.removable", "true or nothing (a dvd is removable)", "false")
        if flags.get("thin"):
            raise r.fail(f"{key}.thin", "false or nothing (a dvd is not thin)", "true")
    if flags.get("thin") and flags.get("readonly"):
        raise r.fail(f"{key}.thin", "false or nothing on a read-only LUN (UNMAP writes)", "true")
    return LunSpec(path, kind=kind, readonly=flags.get("readonly", False),
                   removable=flags.get("removable", False), thin=flags.get("thin"),
                   medium=medium)


def _lun_path(r: _Reader, value: Any, key: str,
              daemon: DaemonConfig) -> tuple[str, str | None]:
    """(absolute image path, medium name or None) of one LUN entry.

    A text with '/' is a path; a bare name is a medium of the registry
    (``netstore disk list``) or, failing that, a file in the media directory.
    """
    text = r.string(value, key, what="an image path or media name")
    medium = None
    if "/" in text or text.startswith("~"):
        path = (r.base_dir / Path(text).expanduser()).absolute()
        where = "an existing image file or block device"
    else:
        if not _NAME_RE.fullmatch(text):
            raise r.fail(
                key,
                "a media name (letters, digits, '.', '_', '-') or a path with '/'",
                _describe(text),
            )
        path = daemon.media_dir / text
        where = (f"a medium of the registry in {daemon.state_dir} or a file in "
                 f"{daemon.media_dir}")
        resolve = r.resolve_medium if r.check_paths else None
        registered = resolve(daemon.state_dir, text, r.registry_url) if resolve is not None else None
        if registered is not None:
            path, medium = Path(registered), text
    if not r.check_paths:
        return str(path), medium
    try:
        st = path.stat()
    except (OSError, ValueError):
        raise r.fail(key, where, f"{_describe(text)}, and {path} does not exist") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise r.fail(key, where, f"{_describe(text)}, and {path} is not a file or block device")
    return str(path), medium


def _pattern(r: _Reader, value: Any, key: str) -> str:
    pattern = r.string(value, key, what="an initiator name pattern (fnmatch)")
    if any(c.isspace() for c in pattern):
        raise r.fail(key, "an initiator name pattern without spaces", _describe(pattern))
    return pattern
