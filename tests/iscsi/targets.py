# tests/iscsi/targets.py - the targets the login-machine tests log into: an open
# one, one-way and mutual CHAP ones, one with an access list.
"""A TargetDirectory of test targets for the login machine (imported, never collected)."""

from __future__ import annotations

from dataclasses import dataclass, field

from netstore.iscsi.login import ChapCredentials, TargetEntry

INITIATOR = "iqn.1994-05.com.redhat:client1"
OPEN_TARGET = "iqn.2026-11.org.netstore:vm.open"
CHAP_TARGET = "iqn.2026-11.org.netstore:vm.chap"
MUTUAL_TARGET = "iqn.2026-11.org.netstore:vm.mutual"
LOCKED_TARGET = "iqn.2026-11.org.netstore:scratch"
ISID = bytes.fromhex("00023d000001")


@dataclass
class Directory:
    entries: list[TargetEntry]
    portals: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 3260)])
    discovery_chap: ChapCredentials | None = None

    def lookup(self, name: str) -> TargetEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def targets(self) -> list[TargetEntry]:
        return list(self.entries)


def make_directory(discovery_chap: ChapCredentials | None = None) -> Directory:
    return Directory(
        [
            TargetEntry(OPEN_TARGET, alias="open disk"),
            TargetEntry(CHAP_TARGET, chap=ChapCredentials("alice", "alice-secret-1")),
            TargetEntry(
                MUTUAL_TARGET,
                chap=ChapCredentials("alice", "alice-secret-1", "target", "target-secret-2"),
            ),
            TargetEntry(LOCKED_TARGET, allow=["iqn.1994-05.com.example:*"]),
        ],
        discovery_chap=discovery_chap,
    )
