# netstore/config/model.py - what a configuration is, once read: the frozen
# settings of the daemon, iSCSI (targets, LUNs, CHAP) and switches, their
# limits and defaults, and ConfigError. The loader (loader.py) builds these.
"""The configuration model: frozen dataclasses, limits, defaults, ConfigError."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from netstore.iscsi.settings import (  # the iSCSI service's own limits and defaults
    DEFAULT_MRDSL,
    DEFAULT_NOP_INTERVAL_S,
    DEFAULT_NOP_TIMEOUT_S,
    MRDSL_MAX,
    MRDSL_MIN,
    WORKERS_MAX,
    WORKERS_MIN,
    default_workers,
)
from netstore.switch.spec import PortSpec as SwitchPortConfig
from netstore.switch.spec import SwitchSpec as SwitchConfig

from .registryconf import RegistryConfig

__all__ = [
    "ACCELS",
    "LUN_KINDS",
    "ChapConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "IscsiConfig",
    "LunSpec",
    "SwitchConfig",
    "SwitchPortConfig",
    "TargetConfig",
    "VmsConfig",
    "default_config",
    # the iSCSI service's limits and defaults, which the loader checks against
    "DEFAULT_MRDSL",
    "DEFAULT_NOP_INTERVAL_S",
    "DEFAULT_NOP_TIMEOUT_S",
    "MRDSL_MAX",
    "MRDSL_MIN",
    "WORKERS_MAX",
    "WORKERS_MIN",
    "default_workers",
]

# ---------------------------------------------------------------------------
# Limits and defaults: one place per fact (the switch's own are in switch/limits.py,
# the iSCSI service's in iscsi/settings.py).

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
    workers: int = field(default_factory=default_workers)


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


# How `[vms] accel` may run a VM's QEMU: probe KVM and fall back to TCG, or either.
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True, slots=True)
class VmsConfig:
    """The ``[vms]`` section: how the daemon runs VMs started headless.

    ``probe_kernel`` is the Linux kernel `accel = "auto"` boots to find out
    whether KVM works (None: the suite's test guest or the host's own kernel,
    when there is one).
    """

    accel: str = "auto"
    probe_kernel: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration; ``source`` is the file it came from."""

    daemon: DaemonConfig
    iscsi: IscsiConfig
    switches: list[SwitchConfig]
    source: Path | None = None
    vms: VmsConfig = VmsConfig()
    registry: RegistryConfig = field(default_factory=RegistryConfig)


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
