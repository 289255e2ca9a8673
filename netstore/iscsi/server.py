# The Trio shell of the iSCSI target: listening sockets, one receive loop and
# one keeper task per connection, batching every answer of a receive into one
# sendmsg.  All protocol decisions live in the pure core (connection.py and its
# modules); this file moves bytes.
"""The iSCSI service: portals, connections, reconfiguration and clean stop."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket as _socket
import time
from pathlib import Path

import trio

from netstore.config import IscsiConfig, TargetConfig
from netstore.disk.api import DiskError
from netstore.disk.images import detect_format, open_image
from netstore.iscsi.connection import Connection, Timeouts
from netstore.iscsi.login import ChapCredentials, TargetEntry
from netstore.iscsi.portal import ExportedTarget, PortalGroup
from netstore.iscsi.text import TargetLimits
from netstore.registry import Registry
from netstore.scsi.backend import RawFileBackend
from netstore.scsi.lun import LogicalUnit, LunIdentity
from netstore.scsi.mmc import MMC_BLOCK_SIZE, OpticalUnit
from netstore.scsi.target import ScsiTarget

# One receive takes what the kernel has, up to this: big enough for a whole
# 256 KiB Data-Out PDU plus headers, so large writes need few wake-ups.
RECV_SIZE = 512 * 1024
# sendmsg takes at most IOV_MAX (1024 on Linux) buffers; stay well below.
MAX_IOV = 512
# The registry is polled this often: a VM change shows within a second.
REGISTRY_POLL_S = 0.5
# The keeper gives each connection the time at least this often (the
# resolution of the NOP and login timeouts, which the core decides).
KEEPER_PERIOD_S = 1.0
# How long a clean stop waits for initiators to answer the logout request.
LOGOUT_GRACE_S = 2.0
LISTEN_BACKLOG = 128
# accept() errors that mean "out of a resource, try again later" (as trio's
# serve_listeners): anything else ends the portal's accept loop.
ACCEPT_CAPACITY_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY_S = 0.1


class ServiceError(Exception):
    """The service cannot start as configured (a portal in use, a LUN missing)."""


def send_now(sock: _socket.socket, bufs: list) -> list:
    """Send as much of ``bufs`` as the socket takes without blocking.

    Returns what is left (empty when all was sent), with a partly sent
    buffer cut to its unsent tail.
    """
    while bufs:
        chunk = bufs[:MAX_IOV]
        try:
            sent = sock.sendmsg(chunk)
        except (BlockingIOError, InterruptedError):
            return bufs
        k = 0
        n = len(chunk)
        while k < n:
            size = len(chunk[k])
            if sent < size:
                break
            sent -= size
            k += 1
        bufs = bufs[k:]
        if sent:
            bufs[0] = memoryview(bufs[0])[sent:]
            return bufs
    return bufs


class _Wire:
    """A connection's socket side: the socket, its wake-up event, its send state.

    The socket is a plain non-blocking stdlib socket: the loops call
    ``recv_into``/``sendmsg`` directly and only ask Trio to wait when the
    kernel says EAGAIN.  Going through Trio's socket wrappers costs two trips
    through the scheduler per call, which at one command in flight is most
    of the time a command takes.
    """

    __slots__ = ("sock", "conn", "wake", "sending", "_send_done")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.conn: Connection | None = None
        self.wake = trio.Event()
        self.sending = False  # a task is waiting for the socket to drain
        self._send_done = trio.lowlevel.ParkingLot()

    def wakeup(self) -> None:
        self.wake.set()

    async def flush(self) -> None:
        """Send everything in the connection's outbox, in order."""
        conn = self.conn
        assert conn is not None
        while self.sending:  # the other task is mid-send: our bytes go after its
            await self._send_done.park()
        if not conn.outbox:
            return
        self.sending = True
        try:
            while conn.outbox:
                bufs = conn.outbox
                conn.outbox = []
                rest = send_now(self.sock, bufs)
                while rest:
                    await trio.lowlevel.wait_writable(self.sock)
                    rest = send_now(self.sock, rest)
        finally:
            self.sending = False
            self._send_done.unpark_all()


def _lun_digest(target: str, path: str) -> bytes:
    """What names a LUN across restarts: its target and its image's real path."""
    return hashlib.sha256(f"{target}\0{os.path.realpath(path)}".encode()).digest()


def _lun_identity(target: str, path: str, index: int) -> LunIdentity:
    digest = _lun_digest(target, path)
    # NAA type 6 would need a 16-byte designator; type 5 (IEEE registered) with
    # a locally derived value is what tgt and LIO do for file-backed LUNs.
    naa = bytes([0x50 | (digest[0] & 0x0F)]) + digest[1:8]
    return LunIdentity(serial=digest[8:16].hex(), naa=naa, target_name=target)


class IscsiService:
    """The iSCSI target service of the daemon.

    Args:
        config: the ``[iscsi]`` settings.
        state_dir: the daemon's state directory (media names resolve there later).
        log: where protocol events and refusals are logged.
    """

    def __init__(self, config: IscsiConfig, *, state_dir: Path,
                 log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("netstore.iscsi")
        self.state_dir = Path(state_dir)
        self.config = config
        limits = TargetLimits(max_recv_data_segment_length=config.max_recv_data_segment_length)
        self.group = PortalGroup(portals=list(config.portals), limits=limits,
                                 discovery_chap=_chap(config.discovery_chap), log=self.log)
        self._luns: dict[tuple[str, str, object], LogicalUnit] = {}
        # per-machine units of immutable/multiattach media: (target, lun, initiator)
        self._private: dict[tuple[str, int, str], LogicalUnit] = {}
        # VM targets (<base-iqn>:vm.<name>) and their units, keyed by what
        # decides the image: (target, medium uuid, path, type, VM start time)
        self._vm_targets: set[str] = set()
        self._vm_units: dict[tuple, LogicalUnit] = {}
        self._registry_generation: int | None = None
        self._wires: set[_Wire] = set()
        self._nursery: trio.Nursery | None = None
        self.bound: list[tuple[str, int]] = []
        self._apply_targets(config.targets)

    # -- targets ---------------------------------------------------------------------
    def _open_lun(self, target: str, spec: str, index: int) -> LogicalUnit:
        # spec is a LunSpec (config.py) or a plain path: a writable disk.
        kind = getattr(spec, "kind", "disk")
        readonly = getattr(spec, "readonly", False)
        key = (target, str(spec), getattr(spec, "options", None))
        lu = self._luns.get(key)
        if lu is None:
            path = str(spec)
            if not os.path.exists(path):
                raise ServiceError(
                    f"target {target}: LUN {index} {spec!r} is not an existing image file")
            lu = self._make_unit(target, index, path, kind=kind, readonly=readonly,
                                 removable=getattr(spec, "removable", False),
                                 thin=getattr(spec, "thin", None))
            self._luns[key] = lu
        return lu

    def _make_unit(self, target: str, index: int, path: str, *, kind: str, readonly: bool,
                   removable: bool, thin: bool | None, identity_path: str | None = None,
                   ) -> LogicalUnit:
        """A logical unit on the image at `path` (any format netstore reads)."""
        identity = _lun_identity(target, identity_path or path, index)
        store = self._reservation_file(target, identity_path or path)
        if kind == "dvd":
            backend = RawFileBackend(path, read_only=True, block_size=MMC_BLOCK_SIZE)
            return OpticalUnit(backend, identity, reservation_store=store)
        backend = _open_backend(path, read_only=readonly)
        # Thin (UNMAP, LBPME) when the backend can deallocate, unless the LUN
        # says thin = false.
        can_discard = callable(getattr(backend, "discard", None)) and not backend.read_only
        if thin and not can_discard:
            backend.close()
            raise ServiceError(f"target {target}: LUN {index} {path!r} cannot be thin "
                               "(read-only, or its format cannot deallocate)")
        return LogicalUnit(backend, identity, reservation_store=store,
                           thin=can_discard if thin is None else thin, removable=removable)

    def _open_medium_lun(self, exported_private: dict, exclusive: dict, target: str,
                         spec, index: int) -> LogicalUnit | None:
        """A LUN on a registered medium, served as its type says (semantics.md 1).

        Returns the shared unit, or None after putting an opener for a
        per-machine unit (immutable, multiattach) in `exported_private`.
        """
        with Registry.open(self.state_dir) as reg:
            m = reg.medium(spec.medium)
            top = reg.current_top(m) if m.type == "normal" else None
        kind = "dvd" if m.kind == "dvd" else getattr(spec, "kind", "disk")
        if m.type in ("immutable", "multiattach"):
            exported_private[index] = self._private_opener(target, index, m.name, m.location)
            return None
        if m.type in ("normal", "writethrough"):
            exclusive[m.uuid] = m.name
        path = str(top) if top is not None else m.location
        key = (target, path, ("medium", m.type, kind, index))
        lu = self._luns.get(key)
        if lu is None:
            lu = self._make_unit(
                target, index, path, kind=kind,
                readonly=m.type == "readonly" or getattr(spec, "readonly", False),
                removable=getattr(spec, "removable", False), thin=getattr(spec, "thin", None),
                identity_path=m.location)
            self._luns[key] = lu
        return lu

    def _private_opener(self, target: str, index: int, medium: str, base: str):
        """Opens `initiator`'s own layer of an immutable or multiattach medium."""

        def open_for(initiator: str, power_on: bool) -> LogicalUnit:
            key = (target, index, initiator)
            old = self._private.pop(key, None)
            if old is not None:
                old.close()
            with Registry.open(self.state_dir) as reg:
                if power_on:
                    path = reg.layer_at_power_on(medium, initiator)
                else:
                    path = reg.layer_for(medium, initiator)
            if power_on:
                self.log.info("target %s LUN %d: %s powered on, layer %s", target, index,
                              initiator, path)
            lu = self._make_unit(target, index, str(path), kind="disk", readonly=False,
                                 removable=False, thin=None, identity_path=base)
            self._private[key] = lu
            return lu

        return open_for

    # -- VMs of the registry ------------------------------------------------------
    async def _watch_registry(self) -> None:
        """Follow the VM registry: a change shows within REGISTRY_POLL_S."""
        while True:
            try:
                self.sync_vms()
            except Exception:
                self.log.exception("reading the VM registry failed; retrying")
            await trio.sleep(REGISTRY_POLL_S)

    def sync_vms(self) -> None:
        """Serve every running VM as target ``<base-iqn>:vm.<name>``.

        Its LUNs are its attached media in controller/port order, each served
        as its type says (the VM's own layer for immutable and multiattach
        media, reset by ``vm start``); a stopped or removed VM's target refuses
        logins and its sessions end; LUNs attached or detached while running
        raise REPORTED LUNS DATA HAS CHANGED.
        """
        if not (self.state_dir / "registry.db").exists():
            return
        with Registry.open(self.state_dir) as reg:
            generation = reg.generation()
            if generation == self._registry_generation:
                return
            self._registry_generation = generation
            running = {}
            for vm in reg.machines.list():
                if vm.running:
                    running[f"{self.config.base_iqn}:vm.{vm.name}"] = (
                        vm, reg.machines.attachments(vm.name),
                        {a.medium: self._vm_image(reg, vm.name, a)
                         for a in reg.machines.attachments(vm.name)})
        g = self.group
        for iqn in list(self._vm_targets):
            if iqn not in running:
                self._stop_vm_target(iqn)
        for iqn, (vm, attachments, images) in running.items():
            luns = {}
            for i, a in enumerate(attachments):
                key = (iqn, a.medium_uuid, images[a.medium], a.type, vm.started)
                lu = self._vm_units.get(key)
                if lu is None:
                    lu = self._make_unit(
                        iqn, i, images[a.medium], kind="dvd" if a.slot_kind == "dvd" else "disk",
                        readonly=a.type == "readonly", removable=a.slot_kind == "dvd",
                        thin=None, identity_path=a.location)
                    self._vm_units[key] = lu
                luns[i] = lu
            exported = g.exported.get(iqn)
            if exported is None or not exported.accepting:
                entry = TargetEntry(name=iqn, alias=vm.name)
                g.exported[iqn] = ExportedTarget(entry, ScsiTarget(iqn, luns))
                self._vm_targets.add(iqn)
                self.log.info("VM %s running: target %s with %d LUN(s)", vm.name, iqn, len(luns))
            elif exported.scsi.luns != luns:
                exported.scsi.set_luns(luns)
                self.log.info("VM %s: LUNs changed, now %d", vm.name, len(luns))
        # units no VM uses any more are flushed and closed
        used = {id(lu) for t in running for lu in g.exported[t].scsi.luns.values()}
        for key, lu in list(self._vm_units.items()):
            if id(lu) not in used:
                del self._vm_units[key]
                lu.close()

    def _vm_image(self, reg, vm: str, a) -> str:
        """The file a VM's attachment reads and writes, by the medium's type."""
        if a.type in ("immutable", "multiattach"):
            return str(reg.layer_for(a.medium, vm))
        if a.type == "normal":
            return str(reg.current_top(a.medium))
        return a.location

    def _stop_vm_target(self, iqn: str) -> None:
        g = self.group
        exported = g.exported.get(iqn)
        self._vm_targets.discard(iqn)
        if exported is None:
            return
        exported.accepting = False
        del g.exported[iqn]
        for session in [s for s in g.sessions.values() if s.target is exported]:
            session.close("the VM was powered off")
        self.log.info("VM target %s stopped", iqn)

    def _reservation_file(self, target: str, path: str) -> Path:
        """Where a LUN's persistent reservations live (APTPL, SPC-4 5.13.4)."""
        return self.state_dir / "reservations" / f"{_lun_digest(target, path).hex()[:24]}.json"

    def _apply_targets(self, targets: list[TargetConfig]) -> None:
        g = self.group
        wanted = {t.iqn: t for t in targets}
        for name, exported in g.exported.items():
            if name in self._vm_targets:
                continue  # VM targets follow the registry, not the file
            if name not in wanted and exported.accepting:
                exported.accepting = False
                self.log.info("target %s removed: new logins are refused", name)
        for t in targets:
            luns: dict[int, LogicalUnit] = {}
            private: dict = {}
            exclusive: dict[str, str] = {}
            for i, spec in enumerate(t.luns):
                if getattr(spec, "medium", None):
                    lu = self._open_medium_lun(private, exclusive, t.iqn, spec, i)
                    if lu is not None:
                        luns[i] = lu
                else:
                    luns[i] = self._open_lun(t.iqn, spec, i)
            entry = TargetEntry(name=t.iqn, alias=t.alias, chap=_chap(t.chap),
                                allow=list(t.allow))
            exported = g.exported.get(t.iqn)
            if exported is None:
                g.exported[t.iqn] = ExportedTarget(entry, ScsiTarget(t.iqn, luns),
                                                   private=private, exclusive=exclusive)
                self.log.info("target %s: %d LUN(s)", t.iqn, len(luns) + len(private))
            else:
                exported.entry = entry
                exported.accepting = True
                exported.exclusive = exclusive
                if exported.scsi.luns != luns or set(exported.private) != set(private):
                    exported.private = private
                    exported.scsi.set_luns(luns)
                    # machines pick up their own units at their next power-on
                    exported.views.clear()
                    self.log.info("target %s: LUNs changed, now %d", t.iqn,
                                  len(luns) + len(private))

    def reconfigure(self, config: IscsiConfig) -> None:
        """Apply a new configuration: new targets appear, removed ones refuse new logins."""
        self.config = config
        self.group.discovery_chap = _chap(config.discovery_chap)
        self._apply_targets(config.targets)

    def status(self) -> dict:
        """JSON-able view of portals, targets and sessions."""
        st = self.group.status()
        st["portals"] = [f"{h}:{p}" for h, p in self.bound]
        return st

    # -- serving ------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Bind every portal, report the bound addresses, serve until cancelled."""
        socks = []
        try:
            for host, port in self.config.portals:
                socks.append(await self._listen(host, port))
        except OSError as e:
            for s in socks:
                s.close()
            raise ServiceError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.bound = [(h, s.getsockname()[1]) for (h, _), s in zip(self.config.portals, socks,
                                                                    strict=True)]
        # Portals bound to port 0 (tests) advertise the port the kernel chose.
        self.group.portals = list(self.bound)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for s in socks:
                    nursery.start_soon(self._accept_loop, s)
                nursery.start_soon(self._watch_registry)
                task_status.started(list(self.bound))
        finally:
            for s in socks:
                s.close()
            self._flush_luns()

    async def _listen(self, host: str, port: int) -> trio.socket.SocketType:
        family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
        sock = trio.socket.socket(family, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
        try:
            await sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        """Accept connections on one portal until cancelled.

        Running out of descriptors or memory is retried after a pause (the
        connections that hold them will end); any other accept error ends
        this portal's loop with a log line, the other portals keep serving.
        """
        assert self._nursery is not None
        while True:
            try:
                sock, addr = await listener.accept()
            except OSError as e:
                if e.errno not in ACCEPT_CAPACITY_ERRORS:
                    self.log.error("accept failed: %s; this portal accepts no more "
                                   "connections", e)
                    return
                self.log.error("accept failed: %s; retrying in %g s", e, ACCEPT_RETRY_S)
                await trio.sleep(ACCEPT_RETRY_S)
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            raw = _socket.socket(sock.family, sock.type, fileno=sock.detach())
            raw.setblocking(False)
            self._nursery.start_soon(self._serve_connection, raw, addr)

    async def _serve_connection(self, sock: _socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        wire = _Wire(sock)
        cfg = self.config
        conn = Connection(self.group, peer, wire.wakeup,
                          Timeouts(nop_interval_s=cfg.nop_interval_s,
                                   nop_timeout_s=cfg.nop_timeout_s))
        wire.conn = conn
        self._wires.add(wire)
        self.log.debug("connection from %s", peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keeper, wire, nursery.cancel_scope)
                await self._receive_loop(wire)
                nursery.cancel_scope.cancel()
        except Exception:
            self.log.exception("connection %s failed; closing it", peer)
        finally:
            self._wires.discard(wire)
            try:
                conn.connection_lost()
            except Exception:
                self.log.exception("cleanup of connection %s failed", peer)
            sock.close()

    async def _receive_loop(self, wire: _Wire) -> None:
        conn = wire.conn
        assert conn is not None
        sock = wire.sock
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv_into = sock.recv_into
        checkpoint = trio.lowlevel.checkpoint
        wait_readable = trio.lowlevel.wait_readable
        waited = False
        while True:
            try:
                n = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                await wait_readable(sock)
                waited = True
                continue
            except OSError as e:
                self.log.info("connection %s: %s", conn.peer, e)
                return
            if not n:
                if conn.session is not None or conn.login is None:
                    self.log.info("connection %s closed by the initiator", conn.peer)
                return
            conn.receive_data(view[:n])
            if conn.outbox:
                try:
                    await wire.flush()
                except OSError as e:
                    self.log.info("connection %s: send failed: %s", conn.peer, e)
                    return
            if conn.closing:
                return
            if not waited:
                # Nothing else ran since this connection's last batch: let the
                # other connections have their turn.
                await checkpoint()
            waited = False

    async def _keeper(self, wire: _Wire, scope: trio.CancelScope) -> None:
        """Gives the core the time; sends what it produced outside the receive loop.

        Pings and timeouts are the core's decision (Connection.tick); this
        task only wakes (on output, or every KEEPER_PERIOD_S) and sends.
        """
        conn = wire.conn
        assert conn is not None
        while True:
            conn.tick(time.monotonic())
            if conn.outbox:
                try:
                    await wire.flush()
                except OSError:
                    scope.cancel()
                    return
            if conn.closing:
                scope.cancel()
                return
            with trio.move_on_after(KEEPER_PERIOD_S):
                await wire.wake.wait()
            wire.wake = trio.Event()

    async def aclose(self) -> None:
        """Ask every session to log out, wait a little, close the rest, flush LUNs."""
        wires = list(self._wires)
        for w in wires:
            if w.conn is not None:
                w.conn.async_logout_request()
        with trio.move_on_after(LOGOUT_GRACE_S):
            while self._wires:
                await trio.sleep(0.05)
        for w in list(self._wires):
            if w.conn is not None:
                w.conn.shut("target shutting down")
        with trio.move_on_after(0.5):
            while self._wires:
                await trio.sleep(0.02)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._flush_luns()

    def _flush_luns(self) -> None:
        for lu in [*self._luns.values(), *self._private.values(), *self._vm_units.values()]:
            try:
                lu.backend.flush()
            except Exception:
                self.log.exception("flushing a LUN failed")


def _open_backend(path: str, *, read_only: bool):
    """A LUN backend for the image at `path`: raw files keep hole punching,
    other formats go through netstore.disk (qcow2 read-write, others read-only)."""
    try:
        fmt = detect_format(path)
    except DiskError as e:
        raise ServiceError(str(e)) from e
    if fmt == "raw":
        return RawFileBackend(path, read_only=read_only)
    try:
        image = open_image(path, read_only=read_only, format=fmt)
    except DiskError as e:
        raise ServiceError(str(e)) from e
    header = getattr(image, "header", None)
    if fmt == "qcow2" and header is not None:
        # discard() frees whole clusters only; the SCSI layer zeroes the rest.
        image.discard_granularity = 1 << header.cluster_bits
    return image


def _chap(c) -> ChapCredentials | None:
    if c is None:
        return None
    return ChapCredentials(user=c.user, secret=c.secret, mutual_user=c.mutual_user,
                           mutual_secret=c.mutual_secret)
