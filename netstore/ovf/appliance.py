# OVF export and import against the registry.  Export writes the current
# state of each attached disk (a normal disk's current top, a VM's own layer
# on an immutable or multiattach disk, read through the chain) as a
# streamOptimized VMDK, dvd and floppy images as they are (each gzipped
# and cut in chunks if asked: files.py), the descriptor first (with an
# EulaSection if asked: eula.py), the manifest (SHA256, SHA1 or SHA512)
# and the signed .cert (signing.py) last, into a temporary file renamed
# over OUT.ova only when complete.  Import checks the signature, then the
# manifest, before anything else reads the package, parses the descriptor,
# refuses a licence not accepted, joins chunks and unpacks gzip files,
# converts each disk to qcow2 under <state>/media/ and recreates the VM with
# new UUIDs (each VM of a VirtualSystemCollection, in one VM group in its
# StartupSection's order: collection.py); any failure unregisters and deletes everything it made, so
# nothing is half-registered.
"""Export a registered VM as an OVA; import an OVA or OVF as a new VM."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netstore.disk.api import DiskError, Progress
from netstore.disk.images import convert, create_image, open_image, probe, resize_image
from netstore.disk.media import LAYERED_TYPES, MediumRuleError
from netstore.ovf.collection import Package, parse_package
from netstore.ovf.envelope import (
    STREAM_URIS,
    VMDK_STREAM_URI,
    Appliance,
    ControllerDesc,
    DriveDesc,
    FileRef,
    MachineDesc,
    NicDesc,
    VirtualDisk,
)
from netstore.ovf.errors import (
    EulaNotAcceptedError,
    OvfError,
    OvfFormatError,
    OvfWarning,
    UnsupportedOvfError,
)
from netstore.ovf.files import chunk_name, chunk_ranges, gzip_file, stored_names, unpack_stored
from netstore.ovf.legacy import RAW_URI
from netstore.ovf.package import (
    MANIFEST_ALGORITHMS,
    USTAR_MAX_SIZE,
    OvaWriter,
    Unpacked,
    copy_into,
    open_ovf,
    unpack_ova,
    verify_coverage,
    verify_digests,
    verify_signature,
)
from netstore.ovf.writer import Startup, build_collection, build_envelope
from netstore.registry.errors import NameTakenError, NotFoundError
from netstore.registry.host import host_cores
from netstore.registry.machines import NIC_SLOTS, check_cpus, check_machine_name, normal_mac

if TYPE_CHECKING:
    from netstore.ovf.signing import Signer
    from netstore.registry import Machine, Medium, Registry

# File name extensions of the package's members, by drive kind.
MEMBER_EXTENSIONS = {"hdd": "vmdk", "dvd": "iso", "floppy": "img"}
_SWITCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class _Meter:
    """Several steps' progress as one (done, total): each step adds to the
    total when it knows its size."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress, self.done, self.total = progress, 0, 0

    def grow(self, n: int) -> None:
        self.total += n
        self._report()

    def count(self, n: int) -> None:
        self.done += n
        self._report()

    def _report(self) -> None:
        if self._progress:
            self._progress(min(self.done, self.total), self.total)

    def step(self) -> Callable[[int, int], None]:
        """A Progress callback for convert(): its (done, total) added to ours."""
        seen = [0, 0]

        def update(done: int, total: int) -> None:
            if total != seen[1]:
                self.grow(total - seen[1])
                seen[1] = total
            self.count(done - seen[0])
            seen[0] = done

        return update


def _allocated(path: str) -> int:
    img = open_image(path, read_only=True)
    try:
        return sum(e.length for e in img.extents() if e.allocated)
    finally:
        img.close()


# -- export -------------------------------------------------------------------

@dataclass
class ExportResult:
    """What export wrote: the OVA and its members (name, bytes), descriptor first."""

    path: str
    machine: str
    members: list[tuple[str, int]]
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "machine": self.machine, "size": self.size,
                "members": [{"name": n, "size": s} for n, s in self.members]}


def current_state(reg: Registry, medium: Medium, machine: str) -> str:
    """The file whose chain holds what `machine` sees of `medium` now: its own
    layer on an immutable or multiattach medium (the base until it has one),
    the current top of any other."""
    if medium.type in LAYERED_TYPES:
        layer = reg.layer_path(medium, machine)
        return str(layer) if layer.exists() else medium.location
    return str(reg.current_top(medium))


# A package member: (name, local file, offset, length); a chunk is a range.
_Part = tuple[str, Path, int, int]


def _store(files: list[FileRef], sources: list[tuple[str, Path]], tmp: Path, compress: bool,
           chunk_size: int | None, meter: _Meter) -> list[_Part]:
    """Gzip each file (when `compress`) and cut it in chunks (when
    `chunk_size`), setting its FileRef's attributes; the members to write."""
    parts: list[_Part] = []
    for f, (member, local) in zip(files, sources, strict=True):
        if compress:
            gz = tmp / f"{member}.gz"
            meter.grow(local.stat().st_size)
            gzip_file(local, gz, meter.count)
            local, f.compression = gz, "gzip"
        f.size = size = local.stat().st_size
        if chunk_size is None:
            parts.append((member, local, 0, size))
            continue
        f.chunk_size = chunk_size
        parts += [(chunk_name(member, i), local, off, n)
                  for i, (off, n) in enumerate(chunk_ranges(size, chunk_size))]
    return parts


def export_vm(reg: Registry, name: str, out: str | os.PathLike[str], **options: Any
              ) -> ExportResult:
    """Write VM `name` as the OVA `out` (export_vms with one VM)."""
    return export_vms(reg, [name], out, **options)


def export_vms(reg: Registry, names: list[str], out: str | os.PathLike[str], *,
               progress: Progress | None = None, compress: bool = False,
               chunk_size: int | None = None, manifest: str = "SHA256",
               signer: Signer | None = None, eula: str | None = None) -> ExportResult:
    """Write the VMs `names` as the OVA `out`: one VirtualSystem, or for
    several a VirtualSystemCollection whose StartupSection follows their VM
    group (the group's name, each VM's start order and delay; without a
    group, the order given).

    Args:
        progress: (bytes done, bytes total) over disk conversion and packing.
        compress: gzip every file (ovf:compression="gzip").
        chunk_size: cut every file in chunks of this many bytes (ovf:chunkSize).
        manifest: the manifest's digest: SHA1, SHA256 or SHA512.
        signer: sign the manifest into NAME.cert (signing.Signer.load).
        eula: a licence text, written as an EulaSection.

    Returns: the members written, descriptor first, manifest (and .cert) last.

    Raises:
        NotFoundError: no such VM.
        OvfError: a VM runs or is named twice, `out` exists or its directory
            does not, a bad digest name or chunk size.
        DiskError: a disk cannot be read (nothing is left behind).
    """
    manifest = manifest.upper()
    if manifest not in MANIFEST_ALGORITHMS:
        raise OvfError(f"manifest digest {manifest!r}: expected one of "
                       f"{', '.join(a.lower() for a in MANIFEST_ALGORITHMS)}")
    if chunk_size is not None and chunk_size <= 0:
        raise OvfError(f"chunk size {chunk_size}: expected a positive number of bytes")
    if eula is not None and not eula.strip():
        raise OvfError("the licence text is empty")
    vms = [reg.machines.get(n) for n in names]
    if not vms:
        raise OvfError("no VM to export")
    if len({vm.name for vm in vms}) != len(vms):
        raise OvfError("a VM is named twice; each VM goes in the package once")
    for vm in vms:
        if vm.running:
            raise OvfError(f"{vm.name} is running; export a powered-off VM so its disks hold "
                           f"still (netstore vm stop {vm.name})")
    out_path = Path(out).absolute()
    if os.path.lexists(out_path):
        raise OvfError(f"{out_path} exists already; remove it or choose another name")
    if not out_path.parent.is_dir():
        raise OvfError(f"{out_path.parent}: no such directory")
    meter = _Meter(progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        apps: list[Appliance] = []
        sources: list[tuple[str, Path]] = []  # package member name, local file
        for vm in vms:
            app = _describe(reg, vm, tmp, meter, sources,
                            prefix=f"{vm.name}-" if len(vms) > 1 else "")
            apps.append(app)
        files = [f for a in apps for f in a.files]
        parts = _store(files, sources, tmp, compress, chunk_size, meter)
        eulas = [eula.strip()] if eula is not None else []
        if len(vms) == 1:
            apps[0].eulas = eulas
            stem, descriptor = vms[0].name, build_envelope(apps[0])
        else:  # the licence once, at the collection
            stem, startup = _startup(vms)
            descriptor = build_collection(stem, apps, startup, eulas)
        sizes = [(f"{stem}.ovf", len(descriptor))] + [(m, n) for m, _, _, n in parts]
        meter.grow(sum(s for _, s in sizes[1:]))
        package = tmp / "package.ova"
        writer = OvaWriter(package, large=any(s > USTAR_MAX_SIZE for _, s in sizes),
                           algorithm=manifest)
        try:
            writer.add_bytes(f"{stem}.ovf", descriptor)
            for member, local, offset, length in parts:
                writer.add_file(member, local, meter.count, offset=offset, length=length)
            mf_name = f"{stem}.mf"
            mf = writer.add_manifest(mf_name)
            sizes.append((mf_name, len(mf)))
            if signer is not None:
                cert = signer.cert_file(mf_name, mf, manifest)
                writer.add_bytes(f"{stem}.cert", cert, digest=False)
                sizes.append((f"{stem}.cert", len(cert)))
        finally:
            writer.close()
        if os.path.lexists(out_path):
            raise OvfError(f"{out_path} appeared while exporting; not overwritten")
        os.replace(package, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(str(out_path), ", ".join(vm.name for vm in vms), sizes,
                        out_path.stat().st_size)


def _startup(vms: list[Machine]) -> tuple[str, list[Startup]]:
    """A collection's name and start order: the VMs' common group, else the order given."""
    groups = {vm.startup.group for vm in vms}
    if len(groups) == 1 and None not in groups:
        name = groups.pop()
        ranked = sorted(vms, key=lambda vm: (vm.startup.order, vm.name))
        return str(name), [Startup(vm.name, vm.startup.order, vm.startup.delay_s)
                           for vm in ranked]
    return f"{vms[0].name}-collection", [Startup(vm.name, i + 1, 0)
                                         for i, vm in enumerate(vms)]


def _describe(reg: Registry, vm: Machine, tmp: Path, meter: _Meter,
              sources: list[tuple[str, Path]], prefix: str) -> Appliance:
    """VM `vm` as an Appliance: its hardware, each disk converted into `tmp`
    (its package member appended to `sources`); file and disk ids start
    with `prefix` (a collection's members must not share them)."""
    controllers = reg.machines.controllers(vm.name)
    attachments = reg.machines.attachments(vm.name)
    nics = reg.machines.nics(vm.name)
    app = Appliance(MachineDesc(
        vm.name, vm.ostype, vm.cpus, vm.memory_mb, vm.cpu_hotplug, tuple(vm.plugged_cpus),
        vm.cpu_cap, vm.weight, vm.memory_min_mb, vm.page_fusion, vm.chipset),
        product=vm.product)
    ids = iter(range(3, 1 << 30))  # 1 and 2 are the processor and memory Items
    by_name: dict[str, str] = {}
    for c in controllers:
        iid = str(next(ids))
        by_name[c.name] = iid
        app.controllers.append(ControllerDesc(iid, c.bus, c.chipset, c.name))
    counts = {"hdd": 0, "dvd": 0, "floppy": 0}
    for a in attachments:
        m = reg.medium(a.medium)
        counts[a.slot_kind] += 1
        n = counts[a.slot_kind]
        member = f"{vm.name}-{'disk' if a.slot_kind == 'hdd' else a.slot_kind}{n}." \
                 f"{MEMBER_EXTENSIONS[a.slot_kind]}"
        file_id = f"{prefix}file{len(app.files) + 1}"
        src = current_state(reg, m, vm.name)
        drive = DriveDesc(str(next(ids)), a.slot_kind, by_name[a.controller], a.port,
                          a.device, medium=m.name, type=m.type, variant=m.variant,
                          description=m.description)
        if a.slot_kind == "hdd":
            local = tmp / member
            populated = _allocated(src)
            convert(src, str(local), "vmdk", variant="streamOptimized", progress=meter.step())
            disk_id = f"{prefix}vmdisk{n}"
            app.disks.append(VirtualDisk(disk_id, file_id, m.virtual_size, VMDK_STREAM_URI,
                                         populated))
            drive.disk_id = disk_id
        elif m.format == "raw":
            local = Path(src)
        else:  # a floppy kept as qcow2 travels as the raw image it holds
            local = tmp / member
            convert(src, str(local), "raw", progress=meter.step())
        if a.slot_kind != "hdd":
            drive.file_ref = file_id
        app.files.append(FileRef(file_id, member, local.stat().st_size))
        app.drives.append(drive)
        sources.append((member, local))
    for nic in nics:
        app.nics.append(NicDesc(str(next(ids)), nic.switch, nic.mac, None, nic.slot,
                                nic.switch, nic.vlan, nic.transport, nic.impair_in,
                                nic.impair_out, nic.model))
    return app


# -- import -------------------------------------------------------------------

@dataclass
class ImportResult:
    """The VM an import registered, its media, and what it warned about."""

    machine: Machine
    media: list[Medium]
    warnings: list[str] = field(default_factory=list)
    others: list[Machine] = field(default_factory=list)  # a collection's other members
    group: str | None = None  # a collection's VM group (its StartupSection)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine.to_dict(), "media": [m.to_dict() for m in self.media],
                "warnings": list(self.warnings), "others": [m.to_dict() for m in self.others],
                "group": self.group}


def _looks_like_xml(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _switch_name(network: str) -> str:
    if _SWITCH_RE.fullmatch(network):
        return network
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", network).strip("-._")[:64]
    return name if name and _SWITCH_RE.fullmatch(name) else "sw0"


class _Import:
    """One import: what it made so far, to undo on failure."""

    def __init__(self, reg: Registry, progress: Progress | None) -> None:
        self.reg = reg
        self.meter = _Meter(progress)
        self.files: list[Path] = []
        self.media: list[Medium] = []
        self.machines: list[str] = []
        self.warnings: list[str] = []
        self.about = ""  # "ID: " while a collection's member ID is built

    def warn(self, text: str) -> None:
        text = self.about + text
        self.warnings.append(text)
        warnings.warn(OvfWarning(text), stacklevel=3)

    def undo(self) -> None:
        for vm in reversed(self.machines):
            try:
                self.reg.machines.remove(vm)
            except DiskError:
                pass
        for m in reversed(self.media):
            try:
                self.reg.remove(m, delete=True)
            except DiskError:
                pass
        for p in self.files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def free_medium_name(self, base: str) -> str:
        base = base[:58]
        names = {m.name for m in self.reg.media(layers=True)}
        for n in range(1, 1000):
            name = base if n == 1 else f"{base}-{n}"
            if name not in names and not any(
                    p.name.startswith(name + ".") for p in self.reg.media_dir.glob(name + ".*")):
                return name
        raise OvfError(f"no free medium name like {base} (1000 are taken)")


def import_appliance(reg: Registry, path: str | os.PathLike[str], *, name: str | None = None,
                     progress: Progress | None = None, accept_eula: bool = False,
                     require_trusted: bool = False) -> ImportResult:
    """Register the VM of the OVA (or .ovf with its files beside it) at `path`.

    The signature (a .cert) and the manifest are checked first; then the
    descriptor is parsed, its licences must be accepted (`accept_eula`),
    chunked and gzip files are joined and unpacked, each disk
    converted to qcow2 under ``<state>/media/`` and registered (new UUIDs),
    and the VM created with its controllers, attachments at the same ports
    and NICs on the same switches and VLANs.  MACs are kept unless the
    registry has them already (then new ones are generated, with a warning).

    Warns:
        OvfWarning: Items skipped, MACs replaced, a type that could not be
            kept, a signature by a certificate this host does not trust.

    Raises:
        ManifestError: a file missing or changed (named); SignatureError: a
            .cert that does not match the manifest.
        UntrustedError: `require_trusted` and the package is unsigned or its
            certificate not trusted.
        EulaNotAcceptedError: a licence and not `accept_eula` (its texts in
            ``licences``).
        OvfFormatError: not a tar, descriptor not first, a name leaving the
            package, XML that is not an OVF envelope.
        UnsupportedOvfError: a disk that is neither a streamOptimized VMDK nor raw.
        MachineRuleError, NameTakenError, ...: the registry refused the VM.
        In every case nothing stays registered and no file is left behind.
    """
    src = Path(path)
    if not src.is_file():
        raise OvfError(f"{src}: no such file")
    job = _Import(reg, progress)
    reg.media_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ovf-import-", dir=reg.state_dir))
    try:
        if tarfile.is_tarfile(src):
            job.meter.grow(src.stat().st_size)
            pkg = unpack_ova(src, tmp, job.meter.count)
        elif _looks_like_xml(src):
            pkg = open_ovf(src)
        else:
            raise OvfFormatError(f"{src.name}: neither an OVA (a tar archive) nor an OVF "
                                 "descriptor (XML)")
        for w in verify_signature(pkg, require_trusted) + verify_digests(pkg):
            job.warn(w)
        package = parse_package(pkg.descriptor.read_bytes(), pkg.descriptor.name)
        app = package.systems[0][1]  # the envelope's files, disks and licences
        if app.eulas and not accept_eula:
            raise EulaNotAcceptedError(
                f"{pkg.descriptor.name} holds a licence agreement; read it and import again "
                "with --accept-eula to accept it", app.eulas)
        stored = {f.href: stored_names(f.href, f.size, f.chunk_size,
                                       lambda n: pkg.path(n) is not None) for f in app.files}
        verify_coverage(pkg, [n for names in stored.values() for n in names])
        for sid, system in package.systems:
            for w in system.warnings:
                job.warn(f"{sid}: {w}" if package.collection else w)
        own = Path(tempfile.mkdtemp(prefix=".resolved-", dir=tmp))
        for f in app.files:
            local = unpack_stored(f.href, [(n, pkg.path(n)) for n in stored[f.href]], f.size,
                                  f.compression, f.chunk_size, own, job.meter.count)
            if local is not None:
                pkg.resolved[f.href] = local
        if package.collection is None:
            return _build(job, pkg, app, name)
        return _build_collection(job, pkg, package, name)
    except BaseException:
        job.undo()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_files(pkg: Unpacked, app: Appliance) -> None:
    for f in app.files:
        local = pkg.path(f.href)
        assert local is not None  # verify_coverage saw it
        if f.href in pkg.resolved:
            continue  # its stored size was checked as it was joined or unpacked
        actual = local.stat().st_size
        if f.size is not None and f.size != actual:
            raise OvfFormatError(f"{f.href}: {actual} bytes, but the descriptor says {f.size}")
    for d in app.disks:
        if d.file_ref is None:
            continue
        href = app.file(d.file_ref).href
        if d.format not in (*STREAM_URIS, RAW_URI):
            raise UnsupportedOvfError(f"disk {d.disk_id} ({href}) has format {d.format!r}; "
                                      "netstore imports streamOptimized VMDK disks, and raw "
                                      f"ones ({RAW_URI}, as oVirt writes them)")
        info = probe(str(pkg.path(href)))
        if d.format == RAW_URI and info.format != "raw":
            raise UnsupportedOvfError(f"{href} is a {info.format} {info.variant} image; its "
                                      f"format {RAW_URI} says raw")
        if d.format != RAW_URI and (info.format != "vmdk" or info.variant != "streamOptimized"):
            raise UnsupportedOvfError(f"{href} is a {info.format} {info.variant} image; an OVF "
                                      "disk must be a streamOptimized VMDK")


def _build_collection(job: _Import, pkg: Unpacked, package: Package,
                      prefix: str | None) -> ImportResult:
    # every member as a VM (named PREFIX-NAME with --name), then one group of
    # them in the StartupSection's order (group: --name, else the collection's id)
    group = prefix or package.collection
    made = []
    for sid, app in package.systems:
        job.about = f"{sid}: "
        made.append((sid, _build(job, pkg, app, f"{prefix}-{app.machine.name}" if prefix
                                 else None)))
    job.about = ""
    for sid, r in made:
        entry = package.startup_of(sid)
        job.reg.machines.set_startup(r.machine.name, group=group,
                                     order=entry.order if entry else 0,
                                     delay_s=entry.delay_s if entry else 0)
    vms = [job.reg.machines.get(r.machine.name) for _, r in made]
    return ImportResult(vms[0], [job.reg.medium(x.id) for x in job.media], job.warnings,
                        vms[1:], group)


def _build(job: _Import, pkg: Unpacked, app: Appliance, name: str | None) -> ImportResult:

    reg = job.reg
    m = app.machine
    vm_name = name or m.name
    try:
        check_machine_name(vm_name)
    except DiskError as e:
        raise type(e)(f"{e}; choose one with --name") from None
    try:
        reg.machines.get(vm_name)
        raise NameTakenError(f"a VM named {vm_name} is registered already; choose another "
                             "name with --name")
    except NotFoundError:
        pass
    most = 2 * host_cores()  # check_cpus's bound: a descriptor from a bigger host still imports
    if m.cpus > most:
        job.warn(f"{vm_name}: the descriptor gives {m.cpus} vCPUs, more than twice this "
                 f"host's {most // 2} cores; imported with {most} (vm modify --cpus to change)")
        m.cpus = most
    check_cpus(vm_name, m.cpus)
    _check_files(pkg, app)
    controllers = {c.instance_id: c for c in app.controllers}
    # every disk becomes a medium first, then the VM is made around them
    attach: list[tuple[DriveDesc, Medium]] = []
    counts = {"hdd": 0, "dvd": 0, "floppy": 0}
    for d in app.drives:
        counts[d.kind] += 1
        where = f"{controllers[d.controller].bus} port {d.port} device {d.device}"
        if d.kind == "hdd":
            assert d.disk_id is not None
            disk = app.disk(d.disk_id)
            mname = job.free_medium_name(f"{vm_name}-disk{counts['hdd']}")
            dst = reg.media_dir / f"{mname}.qcow2"
            variant = "fixed" if d.variant == "fixed" else "dynamic"
            job.files.append(dst)
            if disk.file_ref is not None:
                local = pkg.path(app.file(disk.file_ref).href)
                info = convert(str(local), str(dst), "qcow2", variant=variant,
                               progress=job.meter.step())
            else:
                info = create_image(str(dst), "qcow2", disk.capacity, variant=variant)
            if disk.capacity > info.virtual_size:
                resize_image(str(dst), disk.capacity)
            elif disk.capacity < info.virtual_size:
                job.warn(f"disk {d.disk_id}: its file holds {info.virtual_size} bytes, more than "
                         f"the capacity of {disk.capacity} the descriptor gives; kept whole")
            medium = reg.import_image(dst, name=mname, kind="hdd", description=d.description)
            job.media.append(medium)
            if d.type and d.type != medium.type:
                try:
                    medium = reg.modify(medium, type=d.type)
                except MediumRuleError as e:
                    job.warn(f"{mname} stays {medium.type}: {e}")
        else:
            if d.file_ref is None:
                job.warn(f"the {d.kind} drive at {where} is empty in the descriptor; netstore "
                         "attaches media only, so it is left out")
                continue
            href = app.file(d.file_ref).href
            local = pkg.path(href)
            assert local is not None
            mname = job.free_medium_name(f"{vm_name}-{d.kind}{counts[d.kind]}")
            ext = "iso" if d.kind == "dvd" else "img"
            dst = reg.media_dir / f"{mname}.{ext}"
            job.files.append(dst)
            copy_into(local, dst, move=pkg.movable(href))
            medium = reg.import_image(dst, name=mname, kind=d.kind, description=d.description)
            job.media.append(medium)
        attach.append((d, medium))
    vm = reg.machines.create(vm_name, cpus=m.cpus, memory_mb=m.memory_mb, ostype=m.ostype,
                             chipset=m.chipset)
    job.machines.append(vm_name)
    changes: dict[str, Any] = {}
    if m.cpu_cap != vm.cpu_cap:
        changes["cpu_cap"] = m.cpu_cap
    if m.weight != vm.weight:
        changes["weight"] = m.weight
    if m.memory_min_mb is not None:
        changes["memory_range"] = (m.memory_min_mb, m.memory_mb)
    if m.page_fusion:
        changes["page_fusion"] = True
    if m.cpu_hotplug:
        changes["cpu_hotplug"] = True
    if changes:
        reg.machines.modify(vm_name, **changes)
    if m.cpu_hotplug and m.plugged_cpus:
        for cpu in range(1, m.cpus):
            if cpu not in m.plugged_cpus:
                reg.machines.modify(vm_name, unplug_cpu=cpu)
    names: dict[str, str] = {}
    taken: set[str] = set()
    for c in app.controllers:
        cname = c.name if c.name and c.name not in taken else None
        k = 0
        while cname is None or cname in taken:
            cname, k = f"{c.bus.replace('-', '')}{k}", k + 1
        taken.add(cname)
        names[c.instance_id] = cname
        reg.machines.add_controller(vm_name, cname, c.bus, c.chipset)
    for d, medium in attach:
        reg.machines.attach(vm_name, names[d.controller], d.port, medium.name, device=d.device,
                            slot_kind=d.kind)
    macs = {n.mac for vmx in reg.machines.list() for n in reg.machines.nics(vmx.name)}
    used_slots = {n.slot for n in app.nics if n.slot is not None}
    free_slots = (s for s in range(NIC_SLOTS) if s not in used_slots)
    seen_slots: set[int] = set()
    for n in app.nics:
        slot = n.slot if n.slot is not None and n.slot not in seen_slots else next(free_slots, None)
        if slot is None:
            job.warn(f"NIC on {n.network!r} skipped: a VM has {NIC_SLOTS} NIC slots")
            continue
        seen_slots.add(slot)
        switch = n.switch or _switch_name(n.network)
        if switch != n.network and n.switch is None:
            job.warn(f"NIC {slot}: network {n.network!r} is not a switch name; it joins "
                     f"switch {switch}")
        mac = None
        if n.mac:
            try:
                mac = normal_mac(n.mac)
            except DiskError as e:
                job.warn(f"NIC {slot}: {e}; a new MAC is generated")
            if mac in macs:
                job.warn(f"NIC {slot}: MAC {mac} is taken in this registry; a new MAC is "
                         "generated")
                mac = None
        if n.model is None and n.subtype:
            job.warn(f"NIC {slot}: adapter {n.subtype!r} is no model netstore has; it is "
                     "virtio")
        nic = reg.machines.set_nic(vm_name, slot, switch, mac=mac, vlan=n.vlan,
                                   transport=n.transport, impair_in=n.impair_in,
                                   impair_out=n.impair_out, model=n.model)
        macs.add(nic.mac)
    if app.product:
        reg.machines.set_product(vm_name, app.product)
    return ImportResult(reg.machines.get(vm_name), [reg.medium(x.id) for x in job.media],
                        job.warnings)


__all__ = ["export_vm", "import_appliance", "current_state", "ExportResult", "ImportResult"]
