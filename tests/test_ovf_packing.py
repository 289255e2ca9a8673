# tests/test_ovf_packing.py - how an OVA stores its files (issue 14): gzip
# compression, chunks (NAME.000000000 ...) and SHA1/SHA256/SHA512 manifests,
# written by `netstore ovf export` and checked with real tools (tar, cat,
# gzip, sha1sum, qemu-img compare), and packages made with those tools
# (gzip, split, sha512sum) imported; a truncated gzip, a missing chunk and a
# manifest digest that is not hex are refused naming what is wrong, with
# nothing registered; hypothesis on chunk split/join and manifest parsing.
"""gzip, chunked files and manifest digests in OVF packages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.ovf import ManifestError, OvfFormatError, import_appliance
from netstore.ovf.files import (
    chunk_name,
    chunk_ranges,
    join_chunks,
    read_file_attrs,
    stored_names,
)
from netstore.ovf.package import manifest_text, parse_manifest
from netstore.registry import Registry
from tests.harness import Cli
from tests.test_ovf import OV, MiB, _refused, make_vm, members, qemu_img, write


@pytest.fixture
def reg(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Registry.open(tmp_path / "state")
    yield r
    r.close()


def big_vm(reg: Registry, tmp_path: Path) -> None:
    """make_vm's web1, its first disk holding 3 MiB of random data (its
    compressed VMDK spans several 1 MiB chunks)."""
    make_vm(reg, tmp_path)
    write(reg.medium("web1-a").location, 8 * MiB, os.urandom(3 * MiB))


def sh(*args: str, cwd: Path | None = None) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert p.returncode == 0, f"{args}: {p.stdout}{p.stderr}"
    return p.stdout


def compare_attachments(cli: Cli, a: str, b: str) -> None:
    """Every medium of VM `b` holds what the one at the same slot of `a` does."""
    src = {(x["controller"], x["port"]): x["location"]
           for x in cli.json("vm", "info", a)["attachments"]}
    got = cli.json("vm", "info", b)["attachments"]
    assert len(got) == len(src) == 3
    for x in got:
        qemu_img("compare", src[(x["controller"], x["port"])], x["location"])


# -- netstore writes, netstore and the tools read ------------------------------

def test_cli_compressed_chunked_sha1_round_trip(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with Registry.open(cli.state) as r:
        big_vm(r, tmp_path)
    out = cli.ok("ovf", "export", "web1", "out.ova", "--compress", "--chunk-size", "1M",
                 "--manifest", "sha1")
    assert out.startswith(f"exported web1 to {tmp_path / 'out.ova'}")
    ova = tmp_path / "out.ova"
    with tarfile.open(ova) as t:
        names = t.getnames()
    assert names[0] == "web1.ovf" and names[-1] == "web1.mf"
    disk_chunks = [n for n in names if n.startswith("web1-disk1.vmdk.")]
    assert len(disk_chunks) >= 3
    assert disk_chunks == [f"web1-disk1.vmdk.{i:09d}" for i in range(len(disk_chunks))]
    assert "web1-disk1.vmdk" not in names
    got = members(ova)
    sizes = [len(got[n]) for n in disk_chunks]
    assert all(s == MiB for s in sizes[:-1]) and 0 < sizes[-1] <= MiB
    # the descriptor: every File gzip, 1 MiB chunks, ovf:size the whole compressed size
    refs = ET.fromstring(got["web1.ovf"]).find(f"{OV}References")
    assert refs is not None
    files = {f.get(f"{OV}href"): f for f in refs}
    assert set(files) == {"web1-disk1.vmdk", "web1-disk2.vmdk", "web1-dvd1.iso"}
    for href, f in files.items():
        assert f.get(f"{OV}compression") == "gzip" and f.get(f"{OV}chunkSize") == str(MiB)
        stored = sum(len(d) for n, d in got.items() if n.startswith(href + "."))
        assert f.get(f"{OV}size") == str(stored)
    # the manifest: one SHA1 line per chunk and the descriptor, as sha1sum says
    work = tmp_path / "x"
    work.mkdir()
    sh("tar", "-xf", str(ova), "-C", str(work))
    lines = (work / "web1.mf").read_text().splitlines()
    listed = dict(re.fullmatch(r"SHA1\((.+)\)= ([0-9a-f]{40})", ln).groups()  # type: ignore[union-attr]
                  for ln in lines)
    assert set(listed) == set(names) - {"web1.mf"}
    for name, digest in listed.items():
        assert sh("sha1sum", name, cwd=work).split()[0] == digest
    # the chunks joined with cat and unpacked with gzip are the exported VMDK
    with open(work / "disk1.vmdk.gz", "wb") as f:
        f.write(sh_bytes("cat", *disk_chunks, cwd=work))
    sh("gzip", "-d", str(work / "disk1.vmdk.gz"))
    qemu_img("compare", str(work / "disk1.vmdk"), cli.json("vm", "info", "web1")
             ["attachments"][0]["location"])
    # and netstore imports it back, disks equal
    d = cli.json("ovf", "import", "out.ova", "--name", "web2")
    assert d["machine"]["name"] == "web2" and len(d["media"]) == 3
    compare_attachments(cli, "web1", "web2")


def sh_bytes(*args: str, cwd: Path) -> bytes:
    return subprocess.run(args, capture_output=True, timeout=120, cwd=cwd, check=True).stdout


def _unpack(ova: Path, dst: Path) -> Path:
    dst.mkdir()
    sh("tar", "-xf", str(ova), "-C", str(dst))
    return dst


def _set_file_attrs(ovf: Path, href: str, **attrs: str) -> None:
    text = ovf.read_text()
    extra = "".join(f' ovf:{k}="{v}"' for k, v in attrs.items())
    new = text.replace(f'ovf:href="{href}"', f'ovf:href="{href}"{extra}', 1)
    assert new != text
    ovf.write_text(new)


def _repack(work: Path, out: Path, alg: str = "sha512") -> None:
    """Tar work/ as an OVA (descriptor first) with a manifest by `alg`sum."""
    names = sorted(p.name for p in work.iterdir() if p.suffix not in (".ovf", ".mf"))
    (work / "web1.mf").unlink(missing_ok=True)
    lines = []
    for n in ["web1.ovf", *names]:
        digest = sh(f"{alg}sum", n, cwd=work).split()[0]
        lines.append(f"{alg.upper()}({n})= {digest}\n")
    (work / "web1.mf").write_text("".join(lines))
    sh("tar", "--format=ustar", "-cf", str(out), "-C", str(work), "web1.ovf", *names, "web1.mf")


@pytest.fixture
def plain(reg: Registry, tmp_path: Path) -> Path:
    """web1 (big_vm) exported as a plain OVA, unpacked into a directory."""
    from netstore.ovf import export_vm

    big_vm(reg, tmp_path)
    export_vm(reg, "web1", tmp_path / "plain.ova")
    return _unpack(tmp_path / "plain.ova", tmp_path / "plain")


def _disks_equal(reg: Registry, a: str, b: str) -> None:
    src = {(x.controller, x.port): reg.medium(x.medium).location
           for x in reg.machines.attachments(a)}
    for x in reg.machines.attachments(b):
        qemu_img("compare", src[(x.controller, x.port)], reg.medium(x.medium).location)


def test_gzip_package_made_with_gzip_imports_equal(reg: Registry, plain: Path,
                                                   tmp_path: Path) -> None:
    for href in ("web1-disk1.vmdk", "web1-dvd1.iso"):
        sh("gzip", "-n", str(plain / href))
        (plain / f"{href}.gz").rename(plain / href)
        _set_file_attrs(plain / "web1.ovf", href, compression="gzip")
    ovf = (plain / "web1.ovf").read_text()
    (plain / "web1.ovf").write_text(re.sub(r' ovf:size="\d+"', "", ovf))  # sizes optional
    _repack(plain, tmp_path / "gz.ova", "sha512")
    import_appliance(reg, tmp_path / "gz.ova", name="gz")
    _disks_equal(reg, "web1", "gz")


def test_chunked_package_made_with_split_imports_equal(reg: Registry, plain: Path,
                                                       tmp_path: Path) -> None:
    href = "web1-disk1.vmdk"
    size = (plain / href).stat().st_size
    chunk = 256 * 1024
    sh("split", "-b", str(chunk), "-d", "-a", "9", href, f"{href}.", cwd=plain)
    (plain / href).unlink()
    assert len(list(plain.glob(f"{href}.*"))) == -(-size // chunk) > 2
    _set_file_attrs(plain / "web1.ovf", href, chunkSize=str(chunk))
    _repack(plain, tmp_path / "chunked.ova", "sha256")
    import_appliance(reg, tmp_path / "chunked.ova", name="ch")
    _disks_equal(reg, "web1", "ch")
    # the same as a plain .ovf with its chunks beside it
    import_appliance(reg, plain / "web1.ovf", name="ch2")
    _disks_equal(reg, "web1", "ch2")


# -- bad input: named, nothing registered ---------------------------------------

def test_truncated_gzip_is_refused(reg: Registry, plain: Path, tmp_path: Path) -> None:
    href = "web1-disk1.vmdk"
    sh("gzip", "-n", str(plain / href))
    data = (plain / f"{href}.gz").read_bytes()
    (plain / f"{href}.gz").unlink()
    (plain / href).write_bytes(data[: len(data) // 2])  # the manifest agrees: cut before
    ovf = plain / "web1.ovf"
    ovf.write_text(re.sub(r' ovf:size="\d+"', "", ovf.read_text()))
    _set_file_attrs(ovf, href, compression="gzip")
    _repack(plain, tmp_path / "cut.ova", "sha1")
    msg = _refused(reg, tmp_path / "cut.ova", OvfFormatError, href, name="cut")
    assert msg == f"{href}: its gzip stream is cut short (the file is truncated)"
    (plain / href).write_bytes(b"not gzip at all" * 100)
    _repack(plain, tmp_path / "notgz.ova", "sha1")
    _refused(reg, tmp_path / "notgz.ova", OvfFormatError,
             f"{href}: ovf:compression says gzip but the file is not a whole gzip stream",
             name="cut")


def test_missing_chunk_is_refused_naming_it(reg: Registry, tmp_path: Path) -> None:
    from netstore.ovf import export_vm

    big_vm(reg, tmp_path)
    export_vm(reg, "web1", tmp_path / "c.ova", compress=True, chunk_size=MiB)
    work = _unpack(tmp_path / "c.ova", tmp_path / "c")
    gone = "web1-disk1.vmdk.000000001"
    (work / gone).unlink()
    # still listed in the manifest: the manifest names it
    sh("tar", "--format=ustar", "-cf", str(tmp_path / "m1.ova"), "-C", str(work), "web1.ovf",
       *sorted(p.name for p in work.iterdir() if p.suffix not in (".ovf",)))
    _refused(reg, tmp_path / "m1.ova", ManifestError,
             f"{gone}: listed in the manifest web1.mf but missing", name="m")
    # and dropped from the manifest too: the descriptor's ovf:size still asks for it
    mf = work / "web1.mf"
    mf.write_text("".join(ln for ln in mf.read_text().splitlines(True) if gone not in ln))
    sh("tar", "--format=ustar", "-cf", str(tmp_path / "m2.ova"), "-C", str(work), "web1.ovf",
       *sorted(p.name for p in work.iterdir() if p.suffix not in (".ovf",)))
    _refused(reg, tmp_path / "m2.ova", ManifestError,
             f"{gone}: the descriptor references it but m2.ova lacks it", name="m")


def test_chunk_of_the_wrong_size_is_refused(reg: Registry, plain: Path, tmp_path: Path) -> None:
    href = "web1-disk1.vmdk"
    sh("split", "-b", "100000", "-d", "-a", "9", href, f"{href}.", cwd=plain)
    (plain / href).unlink()
    ovf = plain / "web1.ovf"
    ovf.write_text(re.sub(r' ovf:size="\d+"', "", ovf.read_text()))
    _set_file_attrs(ovf, href, chunkSize="65536")  # the descriptor says otherwise
    _repack(plain, tmp_path / "w.ova")
    _refused(reg, tmp_path / "w.ova", OvfFormatError,
             f"{href}.000000000: chunk 1 of", name="w")


def test_manifest_digest_not_hex_is_refused(reg: Registry, plain: Path, tmp_path: Path) -> None:
    _repack(plain, tmp_path / "ok.ova", "sha1")
    work = _unpack(tmp_path / "ok.ova", tmp_path / "nothex")
    mf = work / "web1.mf"
    lines = mf.read_text().splitlines(True)
    lines[1] = re.sub(r"= [0-9a-f]{40}", "= " + "zz" * 20, lines[1])
    mf.write_text("".join(lines))
    sh("tar", "--format=ustar", "-cf", str(tmp_path / "nh.ova"), "-C", str(work), "web1.ovf",
       *sorted(p.name for p in work.iterdir() if p.suffix != ".ovf"))
    msg = _refused(reg, tmp_path / "nh.ova", ManifestError, "not hexadecimal", name="nh")
    assert msg.startswith("web1.mf line 2: the SHA1 digest of ")
    assert msg.endswith(f": {'zz' * 20!r}")


def test_bad_file_attributes_are_refused(reg: Registry, plain: Path, tmp_path: Path) -> None:
    from netstore.ovf import UnsupportedOvfError

    ovf = plain / "web1.ovf"
    good = ovf.read_text()
    _set_file_attrs(ovf, "web1-disk1.vmdk", compression="bzip2")
    _repack(plain, tmp_path / "bz.ova")
    _refused(reg, tmp_path / "bz.ova", UnsupportedOvfError,
             "file web1-disk1.vmdk is bzip2-compressed; netstore reads gzip", name="b")
    ovf.write_text(good)
    _set_file_attrs(ovf, "web1-disk1.vmdk", chunkSize="-5")
    _repack(plain, tmp_path / "neg.ova")
    _refused(reg, tmp_path / "neg.ova", OvfFormatError, "ovf:chunkSize '-5' is not a positive",
             name="b")


def test_cli_export_options_refused_and_sha512(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with Registry.open(cli.state) as r:
        make_vm(r, tmp_path)
    assert "--chunk-size" in cli.run("ovf", "export", "web1", "o.ova", "--chunk-size",
                                     "lots").stderr
    p = cli.run("ovf", "export", "web1", "o.ova", "--chunk-size", "0")
    assert p.returncode == 2 and "--chunk-size" in p.stderr and not (tmp_path / "o.ova").exists()
    assert cli.run("ovf", "export", "web1", "o.ova", "--manifest", "md5").returncode == 2
    d = cli.json("ovf", "export", "web1", "o.ova", "--manifest", "sha512")
    assert [m["name"] for m in d["members"]][-1] == "web1.mf"
    mf = members(tmp_path / "o.ova")["web1.mf"].decode()
    assert all(re.fullmatch(r"SHA512\(.+\)= [0-9a-f]{128}", ln) for ln in mf.splitlines())
    assert json.loads(cli.run("ovf", "import", "o.ova", "--name", "w5", "--json").stdout)[
        "machine"]["name"] == "w5"


# -- properties ------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4000), chunk=st.integers(1, 700))
def test_chunks_split_and_join_to_the_same_bytes(tmp_path_factory: pytest.TempPathFactory,
                                                  data: bytes, chunk: int) -> None:
    d = tmp_path_factory.mktemp("chunks")
    parts = []
    for i, (off, n) in enumerate(chunk_ranges(len(data), chunk)):
        p = d / chunk_name("f.vmdk", i)
        p.write_bytes(data[off:off + n])
        parts.append((p.name, p))
    assert all(p.stat().st_size == chunk for _, p in parts[:-1])
    names = stored_names("f.vmdk", len(data), chunk, lambda n: (d / n).exists())
    assert names == [n for n, _ in parts]
    assert stored_names("f.vmdk", None, chunk, lambda n: (d / n).exists()) == names
    join_chunks(parts, chunk, d / "joined")
    assert (d / "joined").read_bytes() == data
    assert read_file_attrs("f", "identity", str(chunk)) == (None, chunk)


_NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                 max_size=30).filter(lambda s: s.strip() == s and "\x85" not in s)


@settings(max_examples=100, deadline=None)
@given(alg=st.sampled_from(["SHA1", "SHA256", "SHA512"]),
       entries=st.dictionaries(_NAMES, st.binary(min_size=64, max_size=64), max_size=6))
def test_manifest_text_parses_back(alg: str, entries: dict[str, bytes]) -> None:
    n = {"SHA1": 20, "SHA256": 32, "SHA512": 64}[alg]
    digests = [(name, raw[:n].hex()) for name, raw in entries.items()]
    parsed = parse_manifest(manifest_text(digests, alg), "x.mf")
    assert parsed == {name: (alg, hx) for name, hx in digests}


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_manifest_parsing_refuses_garbage_with_one_line(data: bytes) -> None:
    try:
        parse_manifest(data, "g.mf")
    except ManifestError as e:
        assert str(e).startswith("g.mf") and "\n" not in str(e).rstrip()
