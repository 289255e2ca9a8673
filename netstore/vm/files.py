# netstore/vm/files.py - where a headless VM's files live: its QEMU log and
# console log in <state_dir>/vms/NAME/, and its two sockets (QMP, serial
# console) there too unless that path is too long for a unix socket (108
# bytes); then in a directory of /tmp named by a hash of it, so the daemon
# and `netstore vm console` find the same place without asking each other.
"""The per-VM files of a VM the daemon runs (logs, QMP and console sockets)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VmFiles", "SOCKET_PATH_MAX"]

# sizeof(sockaddr_un.sun_path) on Linux, less the terminating NUL.
SOCKET_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class VmFiles:
    """The files of VM ``name`` under ``state_dir``."""

    state_dir: Path
    name: str

    @property
    def dir(self) -> Path:
        return Path(self.state_dir) / "vms" / self.name

    @property
    def log(self) -> Path:
        """QEMU's own stdout and stderr, every start appended."""
        return self.dir / "qemu.log"

    @property
    def console_log(self) -> Path:
        """Everything the guest wrote on its serial console, this start."""
        return self.dir / "console.log"

    @property
    def socket_dir(self) -> Path:
        home = self.dir
        if len(str(home / "console.sock")) <= SOCKET_PATH_MAX:
            return home
        digest = hashlib.sha256(str(home.absolute()).encode()).hexdigest()[:16]
        return Path("/tmp") / f"netstore-vm-{digest}"

    @property
    def qmp(self) -> Path:
        return self.socket_dir / "qmp.sock"

    @property
    def console(self) -> Path:
        return self.socket_dir / "console.sock"

    def prepare(self) -> None:
        """Make the directories (private: the sockets control the VM) and
        remove sockets an earlier run left."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sock in (self.qmp, self.console):
            try:
                sock.unlink()
            except FileNotFoundError:
                pass

    def log_tail(self, lines: int = 8, since: int = 0) -> str:
        """The last ``lines`` lines QEMU logged after byte offset ``since``."""
        try:
            with open(self.log, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
