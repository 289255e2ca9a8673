# tests/test_ovf_signed.py - signed OVF packages and licence agreements
# (issue 14): `ovf export --sign KEY --cert CERT` writes NAME.cert as
# ovftool does (checked with openssl dgst -verify), `ovf import` takes it
# with a warning for a self-signed certificate, refuses it with
# --require-trusted, and refuses a package whose disk or .cert lost a byte
# with nothing registered; a certificate issued by a trusted CA, an expired
# one, a key and certificate that do not match.  `ovf export --eula FILE`
# writes an EulaSection; `ovf import` prints it and refuses without
# --accept-eula, imports with it.
"""Signed OVF packages and EULAs."""

from __future__ import annotations

import datetime
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from netstore.ovf import OvfError, SignatureError, UntrustedError, export_vm, import_appliance
from netstore.ovf.signing import Signer, verify_cert_file
from netstore.registry import Registry
from tests.harness import Cli
from tests.test_ovf import OV, _refused, make_vm, members

NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netstore tests")])


def make_cert(key, subject: str, issuer_key=None, issuer: str | None = None, *,  # type: ignore[no-untyped-def]
              ca: bool = False, days: int = 30, start: datetime.datetime = NOW) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(_name(issuer or subject)).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(start - datetime.timedelta(days=1))
         .not_valid_after(start + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key or key, hashes.SHA256())


def write_pems(d: Path, key, cert: x509.Certificate, stem: str = "signer") -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    k, c = d / f"{stem}-key.pem", d / f"{stem}-cert.pem"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return k, c


@pytest.fixture(scope="module")
def rsa_key():  # type: ignore[no-untyped-def]
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def reg(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Registry.open(tmp_path / "state")
    yield r
    r.close()


def _flip(ova: Path, member: str, at: int, *, hex_digit: bool = False) -> Path:
    """A copy of `ova` with one byte of `member` changed in place (at `at`, from
    its start); `hex_digit`: a hex digit becomes another hex digit (the text
    stays well formed, only its value changes)."""
    bad = ova.with_name(f"bad-{member}-{at}.ova")
    bad.write_bytes(ova.read_bytes())
    with tarfile.open(bad) as t:
        m = t.getmember(member)
    with open(bad, "r+b") as f:
        f.seek(m.offset_data + at)
        b = f.read(1)
        f.seek(-1, 1)
        if hex_digit:
            f.write(b"1" if b == b"0" else b"0")
        else:
            f.write(bytes([b[0] ^ 0x01]))
    return bad


# -- through the command line --------------------------------------------------

def test_cli_signed_self_signed_warns_and_require_trusted_refuses(tmp_path: Path,
                                                                  rsa_key) -> None:  # type: ignore[no-untyped-def]
    cli = Cli(tmp_path)
    with Registry.open(cli.state) as r:
        make_vm(r, tmp_path)
    key, cert = write_pems(tmp_path, rsa_key, make_cert(rsa_key, "Lab Vendor"))
    cli.ok("ovf", "export", "web1", "s.ova", "--sign", str(key), "--cert", str(cert))
    ova = tmp_path / "s.ova"
    with tarfile.open(ova) as t:
        names = t.getnames()
    assert names[0] == "web1.ovf" and names[-2:] == ["web1.mf", "web1.cert"]
    got = members(ova)
    assert b"web1.cert" not in got["web1.mf"]  # the .cert is not in the manifest
    # the layout ovftool writes, and openssl agrees the signature is the manifest's
    first, _, pem = got["web1.cert"].partition(b"\n")
    assert first.startswith(b"SHA256(web1.mf)= ") and len(first.split()[1]) == 512
    assert pem == cert.read_bytes()
    (tmp_path / "sig").write_bytes(bytes.fromhex(first.split()[1].decode()))
    (tmp_path / "web1.mf").write_bytes(got["web1.mf"])
    (tmp_path / "pub.pem").write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                        "-signature", str(tmp_path / "sig"), str(tmp_path / "web1.mf")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Verified OK" in p.stdout, p.stdout + p.stderr
    # --require-trusted: a self-signed certificate is refused, nothing registered
    before = cli.ok("vm", "list"), cli.ok("disk", "list")
    err = cli.refused("ovf", "import", "s.ova", "--name", "web2", "--require-trusted")
    assert "web1.cert: signed by " in err and "self-signed" in err and "--require-trusted" in err
    assert (cli.ok("vm", "list"), cli.ok("disk", "list")) == before
    # without it: imported, with a warning saying why it is not trusted
    p = cli.run("ovf", "import", "s.ova", "--name", "web2")
    assert p.returncode == 0, p.stderr
    assert "netstore: warning: web1.cert: the signature is good, but the certificate " \
           "(O=netstore tests,CN=Lab Vendor) is not trusted: it is self-signed" in p.stderr
    # an unsigned package is refused with --require-trusted
    cli.ok("ovf", "export", "web1", "u.ova")
    err = cli.refused("ovf", "import", "u.ova", "--name", "web3", "--require-trusted")
    assert "u.ova is not signed" in err
    # --sign without --cert is a usage error
    p = cli.run("ovf", "export", "web1", "x.ova", "--sign", str(key))
    assert p.returncode == 2 and "--sign and --cert go together" in p.stderr


def test_changed_disk_or_cert_byte_is_refused(reg: Registry, tmp_path: Path,
                                              rsa_key) -> None:  # type: ignore[no-untyped-def]
    make_vm(reg, tmp_path)
    key, cert = write_pems(tmp_path, rsa_key, make_cert(rsa_key, "Lab Vendor"))
    ova = tmp_path / "s.ova"
    export_vm(reg, "web1", ova, signer=Signer.load(key, cert), manifest="SHA512",
              compress=True)
    with tarfile.open(ova) as t:
        disk = t.getmember("web1-disk1.vmdk").size
    msg = _refused(reg, _flip(ova, "web1-disk1.vmdk", disk // 2), OvfError, "web1-disk1.vmdk",
                   name="w2")
    assert "its SHA512 digest does not match the manifest web1.mf" in msg
    cert_text = members(ova)["web1.cert"]
    sig_at = cert_text.index(b"= ") + 10  # inside the hex signature
    _refused(reg, _flip(ova, "web1.cert", sig_at, hex_digit=True), SignatureError,
             "web1.cert: the signature does not match the manifest web1.mf", name="w2")
    pem_at = cert_text.index(b"-----BEGIN CERTIFICATE-----") + 200  # inside the certificate
    _refused(reg, _flip(ova, "web1.cert", pem_at), SignatureError, "web1.cert: ", name="w2")
    mf = members(ova)["web1.mf"]
    _refused(reg, _flip(ova, "web1.mf", len(mf) - 5), SignatureError,
             "the manifest or the certificate file was changed", name="w2")
    # the untouched package imports (warned: self-signed)
    with pytest.warns(UserWarning, match="self-signed"):
        r = import_appliance(reg, ova, name="w2")
    assert r.machine.name == "w2"


# -- trust, at the level of the .cert file ---------------------------------------

def test_trust_chain_expiry_and_ec_keys(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert(ca_key, "Test Root CA", ca=True, days=365)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = make_cert(mid_key, "Test Intermediate", ca_key, "Test Root CA", ca=True)
    leaf = make_cert(rsa_key, "Vendor", mid_key, "Test Intermediate")
    key, cert = write_pems(tmp_path, rsa_key, leaf)
    cert.write_bytes(cert.read_bytes() + mid.public_bytes(serialization.Encoding.PEM))
    mf = b"SHA256(a.ovf)= " + b"00" * 32 + b"\n"
    data = Signer.load(key, cert).cert_file("a.mf", mf, "SHA1")
    assert data.startswith(b"SHA1(a.mf)= ")
    assert verify_cert_file(data, "a.cert", "a.mf", mf, require_trusted=True, store=[ca]) == []
    warned = verify_cert_file(data, "a.cert", "a.mf", mf, store=[])
    assert warned == ["a.cert: the signature is good, but the certificate (O=netstore tests,"
                      "CN=Vendor) is not trusted: its issuer O=netstore tests,CN=Test Root CA is "
                      "neither in the package nor among this host's trusted CAs"]
    cert.write_bytes(cert.read_bytes() + ca.public_bytes(serialization.Encoding.PEM))
    whole = Signer.load(key, cert).cert_file("a.mf", mf, "SHA256")  # the root in the file too
    (warned,) = verify_cert_file(whole, "a.cert", "a.mf", mf, store=[])
    assert "its chain ends at O=netstore tests,CN=Test Root CA, which is not among" in warned
    assert verify_cert_file(whole, "a.cert", "a.mf", mf, store=[ca]) == []
    with pytest.raises(UntrustedError):
        verify_cert_file(data, "a.cert", "a.mf", mf, require_trusted=True, store=[])
    with pytest.raises(SignatureError, match="signs 'b.mf', not the manifest a.mf"):
        verify_cert_file(data.replace(b"(a.mf)", b"(b.mf)"), "a.cert", "a.mf", mf, store=[ca])
    # an EC signer, expired
    old_key = ec.generate_private_key(ec.SECP384R1())
    old = make_cert(old_key, "Old", ca_key, "Test Root CA",
                    start=NOW - datetime.timedelta(days=400))
    k2, c2 = write_pems(tmp_path, old_key, old, "old")
    data = Signer.load(k2, c2).cert_file("a.mf", mf, "SHA512")
    (warning,) = verify_cert_file(data, "a.cert", "a.mf", mf, store=[ca])
    assert "is valid from" in warning
    # a certificate that is not the key's
    with pytest.raises(OvfError, match="the certificate is not that of the key"):
        Signer.load(key, c2)
    enc = tmp_path / "enc.pem"
    enc.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(OvfError, match="the private key is encrypted"):
        Signer.load(enc, cert)


# -- licence agreements ------------------------------------------------------------

LICENCE = "NETSTORE TEST APPLIANCE LICENCE\n\nYou may run this appliance in a lab.\n"


def test_cli_eula_refused_without_accept_and_imported_with_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with Registry.open(cli.state) as r:
        make_vm(r, tmp_path)
    (tmp_path / "eula.txt").write_text(LICENCE)
    cli.ok("ovf", "export", "web1", "e.ova", "--eula", "eula.txt")
    env = ET.fromstring(members(tmp_path / "e.ova")["web1.ovf"])
    secs = env.findall(f"{OV}VirtualSystem/{OV}EulaSection")
    assert len(secs) == 1 and secs[0].findtext(f"{OV}License") == LICENCE.strip()
    before = cli.ok("vm", "list"), cli.ok("disk", "list")
    p = cli.run("ovf", "import", "e.ova", "--name", "web2")
    assert p.returncode == 1
    assert LICENCE.strip() in p.stdout
    assert p.stderr == ("netstore: web1.ovf holds a licence agreement; read it and import again "
                        "with --accept-eula to accept it\n")
    assert (cli.ok("vm", "list"), cli.ok("disk", "list")) == before
    p = cli.run("ovf", "import", "e.ova", "--name", "web2", "--json")
    assert p.returncode == 1 and '"accepted": false' in p.stdout
    d = cli.json("ovf", "import", "e.ova", "--name", "web2", "--accept-eula")
    assert d["machine"]["name"] == "web2"
    err = cli.refused("ovf", "export", "web1", "n.ova", "--eula", "missing.txt")
    assert "missing.txt: cannot read the licence" in err
