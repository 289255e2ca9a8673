# Reservations of a logical unit: SPC-4 persistent reservations (5.13,
# PERSISTENT RESERVE IN 6.15, PERSISTENT RESERVE OUT 6.16) and the SPC-2
# RESERVE/RELEASE(6/10) reservation. `Reservations` holds the state and
# decides conflicts (with the reservation classes of commands.py);
# `ReservationCommands` is the logical unit's part whose methods the command
# table dispatches to. `ReservationState` is what survives
# a restart when the last REGISTER asked for it (APTPL=1), as JSON.
"""SPC-2 and SPC-4 persistent reservations of a logical unit, and their commands."""
from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .cdb import BE16, BE32
from .commands import (
    PR_ALLOWED,
    PR_PREVENT,
    PR_READ,
    PR_START,
    reservation_class,
    spc2_class,
)
from .sense import (
    GOOD,
    INVALID_RELEASE_OF_PR,
    PARAM_LIST_LENGTH_ERROR,
    REGISTRATIONS_PREEMPTED,
    RESERVATION_CONFLICT,
    RESERVATIONS_PREEMPTED,
    RESERVATIONS_RELEASED,
    ScsiError,
    Sense,
    cdb_error,
    param_error,
)
from .unit import ScsiResponse

# PERSISTENT RESERVE IN service actions (SPC-4 table 169).
PRIN_READ_KEYS = 0x00
PRIN_READ_RESERVATION = 0x01
PRIN_REPORT_CAPABILITIES = 0x02
PRIN_READ_FULL_STATUS = 0x03

# PERSISTENT RESERVE OUT service actions (SPC-4 table 178).
PROUT_REGISTER = 0x00
PROUT_RESERVE = 0x01
PROUT_RELEASE = 0x02
PROUT_CLEAR = 0x03
PROUT_PREEMPT = 0x04
PROUT_PREEMPT_AND_ABORT = 0x05
PROUT_REGISTER_AND_IGNORE = 0x06
PROUT_REGISTER_AND_MOVE = 0x07

# Persistent reservation types (SPC-4 table 171).
WRITE_EXCLUSIVE = 0x1
EXCLUSIVE_ACCESS = 0x3
WRITE_EXCLUSIVE_RO = 0x5
EXCLUSIVE_ACCESS_RO = 0x6
WRITE_EXCLUSIVE_AR = 0x7
EXCLUSIVE_ACCESS_AR = 0x8
PR_TYPES = frozenset(
    {WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS, WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO,
     WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR}
)
_ALL_REGISTRANTS = frozenset({WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR})
_REGISTRANTS = frozenset(
    {WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO, WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR}
)
# Types under which a non-holder may still read.
_WRITE_EXCLUSIVE_TYPES = frozenset({WRITE_EXCLUSIVE, WRITE_EXCLUSIVE_RO, WRITE_EXCLUSIVE_AR})
LU_SCOPE = 0x0

PROUT_PARAM_LEN = 24
_SPEC_I_PT = 0x08
_ALL_TG_PT = 0x04
_APTPL = 0x01

# REPORT CAPABILITIES (SPC-4 6.15.4): PTPL_C; TMV with ALLOW COMMANDS 010b
# (TEST UNIT READY passes WE and EA reservations, reading commands such as
# MODE SENSE pass Write Exclusive ones); all six types.
_CAPS_LEN = 8
_PTPL_C = 0x01
_TMV = 0x80
_ALLOW_COMMANDS = 0x2 << 4
_PTPL_A = 0x01
_TYPE_MASK = struct.pack(">BB", 0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01)

# iSCSI TransportID, format 01b (SPC-4 7.6.4.6): protocol identifier 5.
_ISCSI_TRANSPORT_ID_FORMAT_01 = 0x40 | 0x05

_KEYS = struct.Struct(">QQ")

@dataclass
class ReservationState:
    """Persistent reservation state: what APTPL keeps across a restart.

    registrations: I_T nexus -> reservation key, in registration order.
    holder: the nexus holding the reservation (None for all-registrants types,
        where every registrant holds it, and when there is no reservation).
    res_type: the reservation type, 0 when there is no reservation.
    """

    generation: int = 0
    registrations: dict[str, int] = field(default_factory=dict)
    holder: str | None = None
    res_type: int = 0
    aptpl: bool = False

    def to_json(self) -> bytes:
        """Serialise (version 1)."""
        doc = {
            "version": 1,
            "aptpl": self.aptpl,
            "generation": self.generation,
            "registrations": [{"nexus": n, "key": k} for n, k in self.registrations.items()],
            "reservation": {"holder": self.holder, "type": self.res_type}
            if self.res_type else None,
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, *, shared: bool = False) -> ReservationState:
        """Parse what to_json wrote; a state saved without APTPL restores as
        empty (SPC-4 5.13.5: it does not survive power loss), unless `shared`:
        the state of a unit another host served until now (ReservationStore)."""
        doc = json.loads(raw)
        if doc.get("version") != 1:
            raise ValueError(f"unknown reservation state version {doc.get('version')!r}")
        state = cls(generation=int(doc.get("generation", 0)) & 0xFFFFFFFF)
        if not doc.get("aptpl") and not shared:
            return state
        state.aptpl = bool(doc.get("aptpl"))
        for r in doc.get("registrations", ()):
            key = int(r["key"])
            if not 0 < key < 1 << 64:
                raise ValueError(f"bad reservation key {key}")
            state.registrations[str(r["nexus"])] = key
        res = doc.get("reservation")
        if res:
            t = int(res["type"])
            holder = res.get("holder")
            if t not in PR_TYPES:
                raise ValueError(f"bad reservation type {t}")
            if t in _ALL_REGISTRANTS:
                holder = None
            elif holder not in state.registrations:
                raise ValueError("reservation holder is not registered")
            if state.registrations:
                state.holder, state.res_type = holder, t
        return state


def file_persister(path: Path) -> Callable[[bytes], None]:
    """A persist callback writing `path` atomically: temporary file in the
    same directory, fsync, os.replace, fsync of the directory."""
    path = Path(path)

    def persist(data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    return persist


class ReservationStore(Protocol):
    """Where a unit's reservation state is kept.  `shared`: every change is
    kept and restored, APTPL or not, because the unit is one several hosts
    export (the next host serving it takes the state over); otherwise only
    what APTPL keeps across a power loss."""

    shared: bool

    def load(self) -> bytes | None:
        """The state saved, or None."""
        ...

    def save(self, data: bytes) -> None:
        """Keep `data` (written whole or not at all)."""
        ...


class FileStore:
    """The APTPL state in a file of its own (one host's state directory)."""

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.save = file_persister(self.path)

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None


def open_store(where: Path | ReservationStore | None) -> ReservationStore | None:
    """A store for `where`: a file's path, a store already, or none."""
    return FileStore(where) if isinstance(where, str | Path) else where


def load_state(where: Path | ReservationStore | None) -> ReservationState:
    """The state `where` keeps, or an empty one when it keeps none."""
    store = open_store(where)
    raw = store.load() if store is not None else None
    if raw is None:
        return ReservationState()
    return ReservationState.from_json(raw, shared=store.shared)


def transport_id(nexus: str) -> bytes:
    """iSCSI TransportID, format 01b (initiator port name), of an I_T nexus
    named "<initiator name>,i,0x<ISID>" (",0x<ISID>" is accepted too)."""
    name, sep, isid = nexus.rpartition(",0x")
    if not sep:
        port = nexus
    else:
        if name.endswith(",i"):
            name = name[:-2]
        port = f"{name},i,0x{isid}"
    body = port.encode() + b"\0"
    body += bytes(-len(body) % 4)
    if len(body) < 20:
        body += bytes(20 - len(body))
    return struct.pack(">BxH", _ISCSI_TRANSPORT_ID_FORMAT_01, len(body)) + body


def parse_transport_id(tid: bytes) -> str | None:
    """The I_T nexus name ("<name>,i,0x<isid>") of an iSCSI TransportID in
    format 01b; None for anything else (format 00b names no initiator port)."""
    if len(tid) < 4 or tid[0] != _ISCSI_TRANSPORT_ID_FORMAT_01:
        return None
    n = BE16.unpack_from(tid, 2)[0]
    text = tid[4:4 + n].split(b"\0", 1)[0].decode("utf-8", "replace")
    name, sep, isid = text.rpartition(",i,0x")
    if not sep or not name or not isid:
        return None
    try:
        int(isid, 16)
    except ValueError:
        return None
    return f"{name},i,0x{isid.lower()}"


def _conflicts(kind: int, cdb: bytes | memoryview, exclusive_access: bool) -> bool:
    """Whether a command of reservation class `kind` (commands.py) from a
    nexus that does not hold the reservation conflicts with it."""
    if kind == PR_ALLOWED:
        return False
    if kind == PR_READ:
        return exclusive_access
    if kind == PR_START:  # SBC-3 table 13: START=1 with POWER CONDITION 0
        return not (cdb[4] & 0x01 and not cdb[4] & 0xF0)
    if kind == PR_PREVENT:  # PREVENT=0 is allowed
        return bool(cdb[4] & 0x03)
    return True


class ReservationConflict(Exception):
    """Ends a command with RESERVATION CONFLICT status (no sense data)."""


class Reservations:
    """Reservation state of one logical unit and the rules over it.

    `ua(sense, nexuses)` queues a unit attention for those nexuses;
    `persist(data)` saves the state, called after every change while APTPL
    is (or has just stopped being) in force.
    """

    def __init__(
        self,
        *,
        ua: Callable[[Sense, Iterable[str]], None],
        persist: Callable[[bytes], None] | None = None,
        state: ReservationState | None = None,
        relative_port: int = 1,
        store: Path | ReservationStore | None = None,
    ) -> None:
        """`store` (a file's path or a ReservationStore) gives both the state
        and where it is persisted, instead of `state` and `persist`."""
        kept = open_store(store)
        if kept is not None:
            state, persist = load_state(kept), kept.save
        self.state = state if state is not None else ReservationState()
        self._ua = ua
        self._persist = persist
        self._keep_all = kept is not None and kept.shared  # persist every change
        self._relative_port = relative_port
        self.spc2_holder: str | None = None

    @property
    def active(self) -> bool:
        """True when some reservation may make a command conflict."""
        return self.spc2_holder is not None or self.state.res_type != 0

    # ------------------------------------------------------------ conflicts

    def conflicts(self, nexus: str, cdb: bytes | memoryview) -> bool:
        """Whether `cdb` from `nexus` must end with RESERVATION CONFLICT."""
        holder2 = self.spc2_holder
        if holder2 is not None:
            return nexus != holder2 and _conflicts(spc2_class(cdb), cdb, True)
        st = self.state
        t = st.res_type
        if not t:
            return False
        if t in _REGISTRANTS:
            if nexus in st.registrations:
                return False
        elif nexus == st.holder:
            return False
        return _conflicts(reservation_class(cdb), cdb, t not in _WRITE_EXCLUSIVE_TYPES)

    # ---------------------------------------------------------- SPC-2 ones

    def reserve_spc2(self, nexus: str) -> None:
        """RESERVE(6)/(10) of the whole logical unit."""
        if self.state.registrations:
            # SPC-4 5.13.3: RESERVE conflicts while registrations exist.
            raise ReservationConflict
        if self.spc2_holder not in (None, nexus):
            raise ReservationConflict
        self.spc2_holder = nexus

    def release_spc2(self, nexus: str) -> None:
        """RELEASE(6)/(10): only the holder's releases anything."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None

    def drop_spc2(self, nexus: str | None = None) -> None:
        """LU reset (nexus None) or loss of `nexus`: the SPC-2 reservation goes."""
        if nexus is None or self.spc2_holder == nexus:
            self.spc2_holder = None

    # ---------------------------------------------- PERSISTENT RESERVE IN

    def pr_in(self, sa: int, alloc: int) -> bytes:
        """Parameter data of PERSISTENT RESERVE IN service action `sa`, cut
        to `alloc` bytes."""
        st = self.state
        gen = st.generation
        if sa == PRIN_READ_KEYS:
            body = b"".join(k.to_bytes(8, "big") for k in st.registrations.values())
            data = struct.pack(">II", gen, len(body)) + body
        elif sa == PRIN_READ_RESERVATION:
            if st.res_type:
                key = 0 if st.res_type in _ALL_REGISTRANTS else st.registrations[st.holder]
                body = struct.pack(">Q4xxBxx", key, (LU_SCOPE << 4) | st.res_type)
            else:
                body = b""
            data = struct.pack(">II", gen, len(body)) + body
        elif sa == PRIN_REPORT_CAPABILITIES:
            data = struct.pack(
                ">HBB", _CAPS_LEN, _PTPL_C, _TMV | _ALLOW_COMMANDS | (_PTPL_A if st.aptpl else 0)
            ) + _TYPE_MASK + bytes(2)
        elif sa == PRIN_READ_FULL_STATUS:
            parts = []
            for nexus, key in st.registrations.items():
                holds = bool(st.res_type) and (
                    st.res_type in _ALL_REGISTRANTS or st.holder == nexus
                )
                tid = transport_id(nexus)
                parts.append(struct.pack(
                    ">Q4xBB4xHI", key, 0x01 if holds else 0,
                    ((LU_SCOPE << 4) | st.res_type) if holds else 0,
                    self._relative_port, len(tid),
                ) + tid)
            body = b"".join(parts)
            data = struct.pack(">II", gen, len(body)) + body
        else:
            raise cdb_error(1, 4)
        return data[:alloc]

    # --------------------------------------------- PERSISTENT RESERVE OUT

    def pr_out(self, nexus: str, cdb: bytes | memoryview,
               data: bytes | memoryview | None) -> None:
        """Run PERSISTENT RESERVE OUT. Raises ScsiError (CHECK CONDITION) or
        ReservationConflict; returning means GOOD."""
        sa = cdb[1] & 0x1F
        scope = cdb[2] >> 4
        rtype = cdb[2] & 0x0F
        plen = BE32.unpack_from(cdb, 5)[0]
        if sa > PROUT_REGISTER_AND_MOVE:
            raise cdb_error(1, 4)
        if sa == PROUT_REGISTER_AND_MOVE:
            self._register_and_move(nexus, plen, data)
            return
        if plen != PROUT_PARAM_LEN:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        if data is None or len(data) < plen:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        key, sark = _KEYS.unpack_from(data, 0)
        flags = data[20]
        if flags & _SPEC_I_PT:
            raise param_error(20, 3)
        if flags & _ALL_TG_PT:
            raise param_error(20, 2)
        if sa in (PROUT_RESERVE, PROUT_RELEASE, PROUT_PREEMPT, PROUT_PREEMPT_AND_ABORT):
            if scope != LU_SCOPE:
                raise cdb_error(2, 7)
            if rtype not in PR_TYPES:
                raise cdb_error(2, 3)
        st = self.state
        was_aptpl = st.aptpl
        if sa in (PROUT_REGISTER, PROUT_REGISTER_AND_IGNORE):
            changed = self._register(nexus, key, sark, sa == PROUT_REGISTER)
            if changed:
                st.aptpl = bool(flags & _APTPL)
        else:
            registered = st.registrations.get(nexus)
            if registered is None or registered != key:
                raise ReservationConflict
            if sa == PROUT_RESERVE:
                changed = self._reserve(nexus, rtype)
            elif sa == PROUT_RELEASE:
                changed = self._release(nexus, scope, rtype)
            elif sa == PROUT_CLEAR:
                changed = self._clear(nexus)
            else:  # PREEMPT, PREEMPT AND ABORT (the iSCSI layer aborts tasks)
                changed = self._preempt(nexus, sark, rtype)
        if changed and (st.aptpl or was_aptpl or self._keep_all) and self._persist is not None:
            self._persist(st.to_json())

    def _register_and_move(self, nexus: str, plen: int,
                           data: bytes | memoryview | None) -> None:
        """REGISTER AND MOVE (SPC-4 5.13.8): the reservation and a new
        registration go to the I_T nexus named by the TransportID."""
        if plen < PROUT_PARAM_LEN or data is None or len(data) < plen:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        key, sark = _KEYS.unpack_from(data, 0)
        flags = data[17]
        rtpi = BE16.unpack_from(data, 18)[0]
        tid_len = BE32.unpack_from(data, 20)[0]
        if PROUT_PARAM_LEN + tid_len > plen:
            raise ScsiError(PARAM_LIST_LENGTH_ERROR)
        st = self.state
        if st.registrations.get(nexus) != key:
            raise ReservationConflict
        if not self._holds(nexus) or st.res_type in _ALL_REGISTRANTS:
            raise ReservationConflict
        if not sark:
            raise param_error(8)
        if rtpi != self._relative_port:
            raise param_error(18)
        dest = parse_transport_id(bytes(data[PROUT_PARAM_LEN:PROUT_PARAM_LEN + tid_len]))
        if dest is None:
            raise param_error(PROUT_PARAM_LEN)
        if dest == nexus:
            raise param_error(PROUT_PARAM_LEN)
        was_aptpl = st.aptpl
        st.registrations[dest] = sark
        st.holder = dest
        if flags & 0x02:  # UNREG: the source's registration goes
            del st.registrations[nexus]
        st.aptpl = bool(flags & _APTPL)
        self._bump()
        if (st.aptpl or was_aptpl or self._keep_all) and self._persist is not None:
            self._persist(st.to_json())

    def _bump(self) -> None:
        self.state.generation = (self.state.generation + 1) & 0xFFFFFFFF

    def _register(self, nexus: str, key: int, sark: int, check_key: bool) -> bool:
        st = self.state
        current = st.registrations.get(nexus)
        if check_key and key != (current or 0):
            raise ReservationConflict
        if current is None:
            if not sark:
                return False
            st.registrations[nexus] = sark
        elif not sark:
            self._unregister(nexus)
        else:
            st.registrations[nexus] = sark
        self._bump()
        return True

    def _unregister(self, nexus: str) -> None:
        """Drop `nexus`'s registration and, when it goes with it, the
        reservation (SPC-4 5.13.11.3)."""
        st = self.state
        del st.registrations[nexus]
        t = st.res_type
        if not t:
            return
        if t in _ALL_REGISTRANTS:
            if not st.registrations:
                self._drop_reservation()
        elif st.holder == nexus:
            self._drop_reservation()
            if t in _REGISTRANTS:
                self._ua(RESERVATIONS_RELEASED, list(st.registrations))

    def _drop_reservation(self) -> None:
        self.state.holder = None
        self.state.res_type = 0

    def _holds(self, nexus: str) -> bool:
        st = self.state
        if not st.res_type:
            return False
        if st.res_type in _ALL_REGISTRANTS:
            return nexus in st.registrations
        return st.holder == nexus

    def _reserve(self, nexus: str, rtype: int) -> bool:
        st = self.state
        if st.res_type:
            if not self._holds(nexus) or st.res_type != rtype:
                raise ReservationConflict
            return False
        st.res_type = rtype
        st.holder = None if rtype in _ALL_REGISTRANTS else nexus
        return True

    def _release(self, nexus: str, scope: int, rtype: int) -> bool:
        st = self.state
        if not self._holds(nexus):
            return False
        if st.res_type != rtype:
            raise ScsiError(INVALID_RELEASE_OF_PR)
        old = st.res_type
        self._drop_reservation()
        if old in _REGISTRANTS:
            self._ua(RESERVATIONS_RELEASED, [n for n in st.registrations if n != nexus])
        return True

    def _clear(self, nexus: str) -> bool:
        st = self.state
        others = [n for n in st.registrations if n != nexus]
        st.registrations.clear()
        self._drop_reservation()
        self._bump()
        self._ua(RESERVATIONS_PREEMPTED, others)
        return True

    def _preempt(self, nexus: str, sark: int, rtype: int) -> bool:
        st = self.state
        t = st.res_type
        if t in _ALL_REGISTRANTS and not sark:
            # Every other registration goes and the reservation is replaced.
            victims = [n for n in st.registrations if n != nexus]
            for n in victims:
                del st.registrations[n]
            st.res_type = rtype
            st.holder = None if rtype in _ALL_REGISTRANTS else nexus
            self._bump()
            self._ua(REGISTRATIONS_PREEMPTED, victims)
            return True
        if not sark:
            raise param_error(8)
        victims = [n for n, k in st.registrations.items() if k == sark and n != nexus]
        preempts_holder = (
            bool(t) and t not in _ALL_REGISTRANTS and st.registrations.get(st.holder) == sark
        )
        if not victims and not preempts_holder:
            raise ReservationConflict
        for n in victims:
            del st.registrations[n]
        if preempts_holder:
            st.res_type = rtype
            st.holder = None if rtype in _ALL_REGISTRANTS else nexus
            if rtype != t:
                self._ua(RESERVATIONS_RELEASED,
                         [n for n in st.registrations if n != nexus])
        self._bump()
        self._ua(REGISTRATIONS_PREEMPTED, victims)
        return True


class ReservationCommands:
    """The reservation commands of one logical unit (handlers of commands.py):
    they run on its `Reservations` and call `changed()` after anything that
    may start or end a reservation (the unit's execute() tests a flag)."""

    def __init__(self, reservations: Reservations, changed: Callable[[], None]) -> None:
        """Run the commands on `reservations`."""
        self._pr = reservations
        self._changed = changed

    def persistent_reserve_in(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        alloc = BE16.unpack_from(cdb, 7)[0]
        return ScsiResponse(GOOD, self._pr.pr_in(cdb[1] & 0x1F, alloc))

    def persistent_reserve_out(
        self, nexus: str, cdb: bytes, data: bytes | memoryview | None
    ) -> ScsiResponse:
        try:
            self._pr.pr_out(nexus, cdb, data)
        except ReservationConflict:
            return ScsiResponse(RESERVATION_CONFLICT)
        finally:
            self._changed()
        return ScsiResponse(GOOD)

    def reserve6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x1F:  # 3rd-party (obsolete) and extent reservations
            raise cdb_error(1, 0 if cdb[1] & 0x01 else 4)
        return self._reserve_spc2(nexus)

    def reserve10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x13:  # 3RDPTY, LONGID, extents
            raise cdb_error(1, 4 if cdb[1] & 0x10 else (1 if cdb[1] & 0x02 else 0))
        return self._reserve_spc2(nexus)

    def _reserve_spc2(self, nexus: str) -> ScsiResponse:
        try:
            self._pr.reserve_spc2(nexus)
        except ReservationConflict:
            return ScsiResponse(RESERVATION_CONFLICT)
        self._changed()
        return ScsiResponse(GOOD)

    def release6(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x1F:
            raise cdb_error(1, 0 if cdb[1] & 0x01 else 4)
        return self._release_spc2(nexus)

    def release10(self, nexus: str, cdb: bytes, data: object) -> ScsiResponse:
        if cdb[1] & 0x13:
            raise cdb_error(1, 4 if cdb[1] & 0x10 else (1 if cdb[1] & 0x02 else 0))
        return self._release_spc2(nexus)

    def _release_spc2(self, nexus: str) -> ScsiResponse:
        self._pr.release_spc2(nexus)
        self._changed()
        return ScsiResponse(GOOD)
