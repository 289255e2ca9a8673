# netstore/config.py - the daemon configuration: a TOML file in, frozen typed settings out.
#
# Every rule a file can break is checked here, before anything starts, and
# refused with one ConfigError whose message names the file, the key path
# (``iscsi.targets[1].chap.secret``), what was expected and what was got.
# The file format is the one of ../shared/design/interface.md.
"""Load and validate netstore daemon configuration files (TOML)."""

from __future__ import annotations

import difflib
import json
import math
import re
import stat
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from netstore.addresses import DNS_LABEL as _LABEL
from netstore.addresses import MAC_RE as _MAC_RE
from netstore.addresses import format_portal, is_socket_path, normal_portal, parse_portal
from netstore.switch.limits import (
    DEFAULT_MAC_AGING_S,
    DEFAULT_MAC_TABLE_SIZE,
    DEFAULT_MTU,
    IFNAMSIZ,
    MAC_TABLE_SIZE_MAX,
    MTU_MAX,
    MTU_MIN,
    PORT_KINDS,
    STORM_PPS_MAX,
    VLAN_MAX,
    VLAN_MIN,
)
from netstore.switch.spec import PortSpec as SwitchPortConfig
from netstore.switch.spec import SwitchSpec as SwitchConfig

__all__ = [
    "ChapConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "IscsiConfig",
    "SwitchConfig",
    "SwitchPortConfig",
    "TargetConfig",
    "default_config",
    "format_portal",
    "load_config",
    "parse_portal",
]

# ---------------------------------------------------------------------------
# Limits and defaults: one place per fact.

DEFAULT_STATE_DIR = "netstore-state"
DEFAULT_PORTAL = ("127.0.0.1", 3260)  # IANA iscsi-target port
DEFAULT_BASE_IQN = "iqn.2026-11.org.netstore"
DEFAULT_SWITCH = "sw0"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# RFC 7143 9.2.1: CHAP over an unencrypted link falls to an offline dictionary
# attack; tgt, LIO and the Windows initiator refuse secrets under 12 bytes.
CHAP_SECRET_MIN = 12
# CHAP_N/CHAP secret are carried as text values; 255 keeps them in one key=value.
CHAP_SECRET_MAX = 255
CHAP_USER_MAX = 255
# RFC 7143 6.1 / RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
ISCSI_NAME_MAX = 223
# RFC 7143 13.7 (TargetAlias): a human-readable UTF-8 text value.
ALIAS_MAX = 255
# RFC 7143 13.12: MaxRecvDataSegmentLength is 512 to 2**24 - 1.
MRDSL_MIN, MRDSL_MAX = 512, 2**24 - 1
DEFAULT_MRDSL = 262144
DEFAULT_NOP_INTERVAL_S = 10.0
DEFAULT_NOP_TIMEOUT_S = 30.0

# RFC 3720 3.2.6.3.1 / RFC 7143 4.2.7.4: iqn.yyyy-mm.reversed.domain[:unique];
# after stringprep (RFC 3722) names are lowercase letters, digits, '-', '.', ':'.
_IQN_RE = re.compile(rf"iqn\.\d{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[a-z0-9.:-]*)?")
_EUI_RE = re.compile(r"eui\.[0-9a-fA-F]{16}")  # RFC 3720 3.2.6.3.2: EUI-64
_NAA_RE = re.compile(r"naa\.(?:[0-9a-fA-F]{16}|[0-9a-fA-F]{32})")  # RFC 3980
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # switch, port and media names


class ConfigError(Exception):
    """A configuration file (or one value in it) that netstore refuses.

    ``str(e)`` is one line: ``FILE: KEY: expected WHAT, got VALUE``. The
    attributes ``file`` and ``key`` hold the first two parts (either may be
    empty when not applicable).
    """

    def __init__(self, message: str, *, file: str = "", key: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.key = key


# ---------------------------------------------------------------------------
# The settings.


@dataclass(frozen=True, slots=True)
class ChapConfig:
    """CHAP credentials (RFC 1994, RFC 7143 12.1.3); mutual when mutual_user is set."""

    user: str
    secret: str
    mutual_user: str | None = None
    mutual_secret: str | None = None

    @property
    def mutual(self) -> bool:
        """Whether the target must also authenticate itself to the initiator."""
        return self.mutual_user is not None


# Kinds of LUN a target can present (semantics.md section 1 device kinds).
LUN_KINDS = ("disk", "dvd")


class LunSpec(str):
    """One LUN of a target: the string is the image's absolute path; the
    attributes say how it is presented. A plain string entry in the file is
    a writable, non-removable disk, thin when its backend can deallocate.

    Attributes:
        kind: "disk" (SBC direct access) or "dvd" (MMC CD/DVD, 2048-byte
            blocks, read-only, removable).
        readonly: writes fail with DATA PROTECT / WRITE PROTECTED.
        removable: RMB=1, PREVENT ALLOW MEDIUM REMOVAL and eject/load.
        thin: True/False forces thin provisioning on/off; None (not given)
            means thin when the backend can discard.
    """

    kind: str
    readonly: bool
    removable: bool
    thin: bool | None

    medium: str | None  # the registered medium's name, when the entry named one

    def __new__(cls, path: str, *, kind: str = "disk", readonly: bool = False,
                removable: bool = False, thin: bool | None = None,
                medium: str | None = None) -> LunSpec:
        spec = super().__new__(cls, path)
        spec.medium = medium
        spec.kind = kind
        spec.readonly = readonly or kind == "dvd"
        spec.removable = removable or kind == "dvd"
        spec.thin = False if kind == "dvd" else thin
        return spec

    @property
    def path(self) -> str:
        """The image's absolute path."""
        return str(self)

    @property
    def options(self) -> tuple[str, bool, bool, bool | None, str | None]:
        """(kind, readonly, removable, thin, medium): two specs of one path
        with other options are different LUNs."""
        return (self.kind, self.readonly, self.removable, self.thin, self.medium)

    def __repr__(self) -> str:
        return (f"LunSpec({str(self)!r}, kind={self.kind!r}, readonly={self.readonly}, "
                f"removable={self.removable}, thin={self.thin})")


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One iSCSI target from ``[[iscsi.targets]]``.

    ``luns`` are absolute image paths (or block devices), LUN 0 first: a path
    in the file is resolved against the file's directory, a bare name (no
    ``/``) is a medium under ``<state_dir>/media/``. Each is a LunSpec (a
    str) carrying kind, readonly, removable and thin; an entry in the file
    is a string or a table ``{ path = "...", kind = "disk"|"dvd", readonly,
    removable, thin }``. ``allow`` holds fnmatch
    patterns of initiator names; ``["*"]`` when the file gives none.
    """

    iqn: str
    luns: list[LunSpec]
    allow: list[str] = field(default_factory=lambda: ["*"])
    chap: ChapConfig | None = None
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class IscsiConfig:
    """The ``[iscsi]`` section: portals, names, discovery CHAP and targets."""

    portals: list[tuple[str, int]]
    base_iqn: str
    discovery_chap: ChapConfig | None
    targets: list[TargetConfig]
    nop_interval_s: float = DEFAULT_NOP_INTERVAL_S
    nop_timeout_s: float = DEFAULT_NOP_TIMEOUT_S
    max_recv_data_segment_length: int = DEFAULT_MRDSL


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The ``[daemon]`` section."""

    state_dir: Path
    log_level: str = "info"

    @property
    def media_dir(self) -> Path:
        """Where images (media) live."""
        return self.state_dir / "media"

    @property
    def socket_path(self) -> Path:
        """The control socket of a daemon using this state directory."""
        return self.state_dir / "netstore.sock"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration; ``source`` is the file it came from."""

    daemon: DaemonConfig
    iscsi: IscsiConfig
    switches: list[SwitchConfig]
    source: Path | None = None


def default_config() -> Config:
    """The configuration ``netstore serve`` uses without a file.

    State in ``./netstore-state`` (made absolute now, so a later chdir does not
    move it), portal 127.0.0.1:3260, no targets, one switch sw0 without ports.
    """
    return Config(
        daemon=DaemonConfig(state_dir=Path.cwd() / DEFAULT_STATE_DIR, log_level="info"),
        iscsi=IscsiConfig(
            portals=[DEFAULT_PORTAL],
            base_iqn=DEFAULT_BASE_IQN,
            discovery_chap=None,
            targets=[],
        ),
        switches=[SwitchConfig(name=DEFAULT_SWITCH)],
        source=None,
    )


# ---------------------------------------------------------------------------
# Small public helpers shared with the CLI and the services.


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


# ---------------------------------------------------------------------------
# The loader.

T = TypeVar("T")


def _describe(value: Any) -> str:
    """How a TOML value reads in a message: strings quoted, others by kind."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _Reader:
    """Walks a parsed TOML document, remembering the file for every error."""

    def __init__(self, file: str, base_dir: Path, check_paths: bool = True) -> None:
        self.file = file
        self.base_dir = base_dir
        self.check_paths = check_paths

    def fail(self, key: str, expected: str, got: str) -> ConfigError:
        prefix = f"{self.file}: {key}: " if key else f"{self.file}: "
        return ConfigError(f"{prefix}expected {expected}, got {got}", file=self.file, key=key)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a table", _describe(value))
        return value

    def keys(self, table: dict[str, Any], key: str, allowed: Iterable[str]) -> None:
        """Refuse keys not in ``allowed``, suggesting the closest known one."""
        allowed = list(allowed)
        for name in table:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise self.fail(
                    where,
                    "one of the keys " + ", ".join(allowed),
                    f"the unknown key {json.dumps(name, ensure_ascii=False)}{hint}",
                )

    def string(self, value: Any, key: str, *, what: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.fail(key, what, _describe(value))
        if not value:
            raise self.fail(key, f"{what}, not empty", '""')
        if "\x00" in value:
            raise self.fail(key, f"{what} without NUL characters", _describe(value))
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"an integer in {lo}..{hi}", _describe(value))
        if not lo <= value <= hi:
            raise self.fail(key, f"an integer in {lo}..{hi}", _describe(value))
        return value

    def positive_number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a positive number of seconds", _describe(value))
        if not (math.isfinite(value) and value > 0):
            raise self.fail(key, "a positive number of seconds", _describe(value))
        return float(value)

    def array(self, value: Any, key: str, item: Callable[[Any, str], T]) -> list[T]:
        if not isinstance(value, list):
            raise self.fail(key, "an array", _describe(value))
        return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key, what="a path")
        return (self.base_dir / Path(text).expanduser()).absolute()


def load_config(path: str | Path, *, check_paths: bool = True) -> Config:
    """Read and validate a configuration file.

    Args:
        path: the TOML file. Relative paths inside it (state_dir, LUN images,
            capture files) are resolved against the file's directory; without
            ``[daemon] state_dir`` the state lives in ``netstore-state`` there.
        check_paths: whether LUN images must exist (a client that only needs
            the state directory, like ``netstore status``, passes False).

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
    return parse_config(text, file=file, source=source, check_paths=check_paths)


def parse_config(
    text: str, *, file: str = "<config>", source: Path | None = None, check_paths: bool = True
) -> Config:
    """Validate configuration ``text``; ``file`` names it in messages.

    Relative paths resolve against ``source``'s directory, or the current
    directory without one. Raises ConfigError as load_config does.
    """
    base_dir = source.parent if source is not None else Path.cwd()
    reader = _Reader(file, base_dir, check_paths)
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
    r.keys(doc, "", ("daemon", "iscsi", "switches"))
    daemon = _daemon(r, r.table(doc.get("daemon", {}), "daemon"))
    iscsi = _iscsi(r, r.table(doc.get("iscsi", {}), "iscsi"), daemon)
    if "switches" in doc:
        switches = r.array(doc["switches"], "switches", lambda v, k: _switch(r, v, k))
    else:
        switches = [SwitchConfig(name=DEFAULT_SWITCH)]
    seen: dict[str, int] = {}
    for i, sw in enumerate(switches):
        if sw.name in seen:
            raise r.fail(
                f"switches[{i}].name",
                f"a name not used by switches[{seen[sw.name]}]",
                _describe(sw.name),
            )
        seen[sw.name] = i
    return Config(daemon=daemon, iscsi=iscsi, switches=switches, source=source)


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
    return IscsiConfig(
        portals=portals,
        base_iqn=base_iqn,
        discovery_chap=discovery_chap,
        targets=targets,
        nop_interval_s=nop_interval,
        nop_timeout_s=nop_timeout,
        max_recv_data_segment_length=mrdsl,
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
        registered = _registered_medium(daemon.state_dir, text) if r.check_paths else None
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


def _registered_medium(state_dir: Path, name: str) -> str | None:
    """The file of the registered base medium `name`, or None (no registry,
    no such medium).  Looking does not create a registry."""
    from netstore.registry import NotFoundError, Registry, RegistryError

    if not (state_dir / "registry.db").exists():
        return None
    try:
        with Registry.open(state_dir) as reg:
            m = reg.medium(name)
    except NotFoundError:
        return None
    except RegistryError:
        return None
    return None if m.is_layer else m.location


def _pattern(r: _Reader, value: Any, key: str) -> str:
    pattern = r.string(value, key, what="an initiator name pattern (fnmatch)")
    if any(c.isspace() for c in pattern):
        raise r.fail(key, "an initiator name pattern without spaces", _describe(pattern))
    return pattern


def _switch(r: _Reader, value: Any, key: str) -> SwitchConfig:
    t = r.table(value, key)
    r.keys(t, key, ("name", "mac_aging_s", "mac_table_size", "capture", "ports"))
    if "name" not in t:
        raise r.fail(f"{key}.name", "the switch's name", "nothing")
    name = _name(r, t["name"], f"{key}.name")
    # From here on errors name the switch, as interface.md shows: sw0.ports[1].kind
    key = name
    aging = r.positive_number(t.get("mac_aging_s", DEFAULT_MAC_AGING_S), f"{key}.mac_aging_s")
    size = r.integer(
        t.get("mac_table_size", DEFAULT_MAC_TABLE_SIZE), f"{key}.mac_table_size", 1, MAC_TABLE_SIZE_MAX
    )
    capture = str(r.path(t["capture"], f"{key}.capture")) if "capture" in t else None
    ports = r.array(t.get("ports", []), f"{key}.ports", lambda v, k: _port(r, v, k))
    seen: dict[str, int] = {}
    for i, port in enumerate(ports):
        if port.name in seen:
            raise r.fail(
                f"{key}.ports[{i}].name",
                f"a name not used by {key}.ports[{seen[port.name]}]",
                _describe(port.name),
            )
        seen[port.name] = i
    _check_mirrors(r, key, ports)
    return SwitchConfig(
        name=name, mac_aging_s=aging, mac_table_size=size, capture=capture, ports=ports
    )


def _name(r: _Reader, value: Any, key: str) -> str:
    name = r.string(value, key, what="a name")
    if not _NAME_RE.fullmatch(name):
        raise r.fail(key, "a name of letters, digits, '.', '_', '-' (at most 64)", _describe(name))
    return name


# Keys each port kind takes besides the common ones (_COMMON_PORT_KEYS).
_PORT_KEYS: dict[str, tuple[str, ...]] = {
    "udp": ("local", "remote"),
    "unixgram": ("local", "remote"),
    "stream": ("listen", "connect"),
    "tap": ("device",),
    "vde": ("path",),
}
_COMMON_PORT_KEYS = (
    "name", "kind", "vlan", "trunk", "native", "mtu",
    "mirror_to", "max_macs", "bound_mac", "storm_pps",
)  # fmt: skip


def _port(r: _Reader, value: Any, key: str) -> SwitchPortConfig:
    t = r.table(value, key)
    all_keys = _COMMON_PORT_KEYS + tuple(k for ks in _PORT_KEYS.values() for k in ks)
    r.keys(t, key, dict.fromkeys(all_keys))
    if "name" not in t:
        raise r.fail(f"{key}.name", "the port's name", "nothing")
    name = _name(r, t["name"], f"{key}.name")
    kind = t.get("kind")
    if kind not in PORT_KINDS:
        raise r.fail(
            f"{key}.kind",
            "one of " + ", ".join(PORT_KINDS),
            _describe(kind) if "kind" in t else "nothing",
        )
    own = _PORT_KEYS[kind]
    for k in t:
        if k not in _COMMON_PORT_KEYS and k not in own:
            raise r.fail(
                f"{key}.{k}",
                f'only {", ".join(_COMMON_PORT_KEYS + own)} for kind "{kind}"',
                f"the key {k} (it belongs to another kind)",
            )
    values: dict[str, Any] = {}
    if kind == "udp":
        values["local"] = _udp_addr(r, t.get("local"), f"{key}.local", required=True)
        if "remote" in t:
            values["remote"] = _udp_addr(r, t["remote"], f"{key}.remote", required=True)
    elif kind == "unixgram":
        if "local" not in t:
            raise r.fail(f"{key}.local", "a unix socket path", "nothing")
        values["local"] = str(r.path(t["local"], f"{key}.local"))
        if "remote" in t:
            values["remote"] = str(r.path(t["remote"], f"{key}.remote"))
    elif kind == "stream":
        if ("listen" in t) == ("connect" in t):
            raise r.fail(
                f"{key}.listen",
                'exactly one of listen or connect ("host:port" or a path)',
                "both" if "listen" in t else "neither",
            )
        which = "listen" if "listen" in t else "connect"
        values[which] = _stream_addr(r, t[which], f"{key}.{which}")
    elif kind == "tap":
        if "device" not in t:
            raise r.fail(f"{key}.device", "a TAP device name like tap0", "nothing")
        dev = r.string(t["device"], f"{key}.device", what="a TAP device name")
        if len(dev.encode()) >= IFNAMSIZ or "/" in dev or any(c.isspace() for c in dev):
            raise r.fail(
                f"{key}.device",
                f"an interface name of at most {IFNAMSIZ - 1} bytes without '/' or spaces",
                _describe(dev),
            )
        values["device"] = dev
    else:  # vde
        if "path" not in t:
            raise r.fail(f"{key}.path", "the VDE control directory path", "nothing")
        values["path"] = str(r.path(t["path"], f"{key}.path"))
    vlan: int | None = 1
    trunk = native = None
    if "trunk" in t:
        if "vlan" in t:
            raise r.fail(f"{key}.vlan", "either vlan (access port) or trunk, not both", "both")
        trunk = r.array(
            t["trunk"], f"{key}.trunk", lambda v, k: r.integer(v, k, VLAN_MIN, VLAN_MAX)
        )
        if not trunk:
            raise r.fail(f"{key}.trunk", "at least one VLAN", "an empty array")
        if len(set(trunk)) != len(trunk):
            raise r.fail(f"{key}.trunk", "each VLAN once", f"{trunk}")
        vlan = None
        if "native" in t:
            native = r.integer(t["native"], f"{key}.native", VLAN_MIN, VLAN_MAX)
    else:
        if "native" in t:
            raise r.fail(
                f"{key}.native",
                "native only on a trunk port (set trunk = [...])",
                _describe(t["native"]),
            )
        if "vlan" in t:
            vlan = r.integer(t["vlan"], f"{key}.vlan", VLAN_MIN, VLAN_MAX)
    mtu = r.integer(t.get("mtu", DEFAULT_MTU), f"{key}.mtu", MTU_MIN, MTU_MAX)
    if "mirror_to" in t:
        values["mirror_to"] = _name(r, t["mirror_to"], f"{key}.mirror_to")
        if values["mirror_to"] == name:
            raise r.fail(f"{key}.mirror_to", "another port of the switch (not the port itself)",
                         _describe(name))
    if "max_macs" in t:
        values["max_macs"] = r.integer(t["max_macs"], f"{key}.max_macs", 1, 1 << 24)
    if "bound_mac" in t:
        values["bound_mac"] = _unicast_mac(r, t["bound_mac"], f"{key}.bound_mac")
    if "storm_pps" in t:
        values["storm_pps"] = r.integer(t["storm_pps"], f"{key}.storm_pps", 1, STORM_PPS_MAX)
    return SwitchPortConfig(
        name=name, kind=kind, vlan=vlan, trunk=trunk, native=native, mtu=mtu, **values
    )


def _unicast_mac(r: _Reader, value: Any, key: str) -> str:
    """A VM NIC's MAC as lowercase ``aa:bb:cc:dd:ee:ff`` (``-`` separators taken too)."""
    what = 'a unicast MAC address like "52:54:00:12:34:56"'
    text = r.string(value, key, what=what)
    if not _MAC_RE.fullmatch(text):
        raise r.fail(key, what, _describe(text))
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise r.fail(key, what + " (not multicast, broadcast or all zeros)", _describe(text))
    return mac


def _check_mirrors(r: _Reader, switch: str, ports: list[SwitchPortConfig]) -> None:
    """mirror_to names a port of the same switch, one that mirrors nothing itself.

    A mirror destination is dedicated to the copies (as Open vSwitch's
    output_port): what arrives on it is dropped, so its own mirror_to could
    never carry anything.
    """
    index = {p.name: i for i, p in enumerate(ports)}
    for i, p in enumerate(ports):
        if p.mirror_to is None:
            continue
        if p.mirror_to not in index:
            others = ", ".join(n for n in index if n != p.name) or "none"
            raise r.fail(f"{switch}.ports[{i}].mirror_to",
                         f"the name of another port of {switch} ({others})",
                         _describe(p.mirror_to))
        j = index[p.mirror_to]
        if ports[j].kind == "vde":
            raise r.fail(f"{switch}.ports[{i}].mirror_to",
                         "a port, not a VDE directory (its clients come and go)",
                         _describe(p.mirror_to))
        if ports[j].mirror_to is not None:
            raise r.fail(f"{switch}.ports[{j}].mirror_to",
                         f'no mirror_to on a mirror destination (port "{ports[j].name}" gets '
                         f'the copies of port "{p.name}")', _describe(ports[j].mirror_to))


def _udp_addr(r: _Reader, value: Any, key: str, *, required: bool) -> str:
    if value is None:
        raise r.fail(key, '"host:port"', "nothing")
    text = r.string(value, key, what='"host:port"')
    try:
        return normal_portal(text)
    except ValueError as e:
        raise r.fail(key, f'"host:port" ({e})', _describe(text)) from None


def _stream_addr(r: _Reader, value: Any, key: str) -> str:
    text = r.string(value, key, what='"host:port" or a unix socket path')
    if is_socket_path(text):
        return str(r.path(text, key))
    try:
        return normal_portal(text)
    except ValueError as e:
        raise r.fail(key, f'"host:port" or a unix socket path ({e})', _describe(text)) from None
