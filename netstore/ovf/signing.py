# Signed OVF packages (DSP0243 "Package signing"; VMware's OVF Tool guide,
# "OVF Package Signing").  The certificate file NAME.cert sits beside the
# manifest NAME.mf (in an OVA right after it, at the end) and is not listed
# in it.  Its layout is the one ovftool and VBoxManage signova write, and
# `openssl dgst -sha256 -sign key.pem NAME.mf | xxd -p` reproduces:
#     SHA256(NAME.mf)= <hex of the signature of the manifest file's bytes>
#     -----BEGIN CERTIFICATE-----
#     <the signer's X.509 certificate, PEM>
#     -----END CERTIFICATE-----
# followed by any intermediate certificates, PEM too.  The signature is
# PKCS#1 v1.5 for an RSA key, DER ECDSA for an EC key, over the manifest
# with the digest the line names (SHA1, SHA256 or SHA512; export uses the
# manifest's).  Reading checks the signature with the certificate's public
# key; a bad one is refused.  Then trust: the certificate must lead, through
# the file's other certificates, to one of the host's trusted CAs (the
# system bundle) and be within its validity period; otherwise the import
# warns (a self-signed certificate, an unknown issuer, expired), or refuses
# when trust is required.
"""Sign a manifest into an OVF .cert file; verify one."""

from __future__ import annotations

import datetime
import re
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from netstore.ovf.errors import OvfError, SignatureError, UntrustedError

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1, "SHA256": hashes.SHA256, "SHA512": hashes.SHA512}
_SIGNATURE_LINE = re.compile(r"\s*(SHA1|SHA256|SHA512)\s*\((.+?)\)\s*=\s*([0-9A-Fa-f]+)\s*")
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
MAX_CERT_BYTES = 1 << 20


def _sign(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes, alg: str) -> bytes:
    h = HASHES[alg]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), h)
    return key.sign(data, ec.ECDSA(h))


def _check(public: object, signature: bytes, data: bytes, alg: str) -> None:
    # raises InvalidSignature
    h = HASHES[alg]()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), h)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(h))
    else:
        raise InvalidSignature


@dataclass
class Signer:
    """A private key and its certificate (and intermediates), loaded and
    matched before an export starts."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certs: list[x509.Certificate]

    @classmethod
    def load(cls, key_path: str | Path, cert_path: str | Path) -> Signer:
        """Read KEY.pem (unencrypted PKCS#8 or traditional, RSA or EC) and
        CERT.pem (the signer's certificate first).

        Raises:
            OvfError: a file missing or unreadable, an encrypted key, a key
                of another kind, a certificate of another key (named).
        """
        try:
            key_data = Path(key_path).read_bytes()
            cert_data = Path(cert_path).read_bytes()
        except OSError as e:
            raise OvfError(f"{e.filename}: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError:
            raise OvfError(f"{key_path}: the private key is encrypted; netstore signs with an "
                           "unencrypted key (openssl pkey -in KEY -out PLAIN)") from None
        except (ValueError, UnsupportedAlgorithm) as e:
            raise OvfError(f"{key_path}: not a PEM private key ({e})") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise OvfError(f"{key_path}: a {type(key).__name__}; netstore signs with RSA or EC "
                           "keys, as ovftool")
        try:
            certs = x509.load_pem_x509_certificates(cert_data)
        except ValueError as e:
            raise OvfError(f"{cert_path}: not a PEM X.509 certificate ({e})") from None
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if certs[0].public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
            raise OvfError(f"{cert_path}: the certificate is not that of the key {key_path}")
        return cls(key, certs)

    def cert_file(self, manifest_name: str, manifest: bytes, alg: str) -> bytes:
        """The .cert file signing `manifest` (the bytes of `manifest_name`)."""
        sig = _sign(self.key, manifest, alg).hex()
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certs)
        return f"{alg}({manifest_name})= {sig}\n".encode() + pem


def system_trust_store() -> list[x509.Certificate]:
    """The host's trusted CA certificates (OpenSSL's default bundle)."""
    paths = ssl.get_default_verify_paths()
    for name in (paths.cafile, paths.openssl_cafile):
        if name and Path(name).is_file():
            try:
                with warnings.catch_warnings():
                    # a system CA with a non-positive serial is not this package's concern
                    warnings.simplefilter("ignore")
                    return x509.load_pem_x509_certificates(Path(name).read_bytes())
            except ValueError:
                continue
    return []


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def _distrust(certs: list[x509.Certificate], store: list[x509.Certificate]) -> str | None:
    """Why the chain from certs[0] is not trusted, None when it is."""
    now = datetime.datetime.now(datetime.UTC)
    leaf = certs[0]
    for c in certs:
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            return (f"the certificate of {c.subject.rfc4514_string()} is valid from "
                    f"{c.not_valid_before_utc:%Y-%m-%d} to {c.not_valid_after_utc:%Y-%m-%d}")
    trusted = {c.fingerprint(hashes.SHA256()) for c in store}
    cert, seen = leaf, 0
    while seen <= len(certs):
        if cert.fingerprint(hashes.SHA256()) in trusted:
            return None
        anchor = next((c for c in store if _issued_by(cert, c)), None)
        if anchor is not None:
            return None
        if _issued_by(cert, cert):
            if cert is leaf:
                return "it is self-signed (no CA this host trusts issued it)"
            return (f"its chain ends at {cert.subject.rfc4514_string()}, which is not among "
                    "this host's trusted CAs")
        nxt = next((c for c in certs if c is not cert and _issued_by(cert, c)), None)
        if nxt is None:
            return (f"its issuer {cert.issuer.rfc4514_string()} is neither in the package nor "
                    "among this host's trusted CAs")
        cert, seen = nxt, seen + 1
    return "its chain of certificates loops"


def verify_cert_file(data: bytes, cert_name: str, manifest_name: str, manifest: bytes, *,
                     require_trusted: bool = False,
                     store: list[x509.Certificate] | None = None) -> list[str]:
    """Check the .cert file `data` against the manifest's bytes.

    Returns: warnings (the certificate is not trusted: why).

    Raises:
        SignatureError: a malformed .cert, a signature of another file, a
            signature that does not match the manifest (it or the .cert was
            changed).
        UntrustedError: not trusted while `require_trusted`.
    """
    if len(data) > MAX_CERT_BYTES:
        raise SignatureError(f"{cert_name}: {len(data)} bytes is too large for a certificate "
                             "file (refused)")
    head, sep, _ = data.partition(PEM_BEGIN)
    line = head.decode("utf-8", "replace").strip()
    m = _SIGNATURE_LINE.fullmatch(line)
    if not sep or not m:
        raise SignatureError(f"{cert_name}: expected 'SHA256({manifest_name})= hex' and a PEM "
                             f"certificate, got {line[:80]!r} (refused)")
    alg, signed, sig_hex = m.groups()
    if signed.strip() != manifest_name:
        raise SignatureError(f"{cert_name}: signs {signed.strip()!r}, not the manifest "
                             f"{manifest_name} (refused)")
    if len(sig_hex) % 2:
        raise SignatureError(f"{cert_name}: the signature has an odd number of hex digits "
                             "(refused)")
    try:
        certs = x509.load_pem_x509_certificates(data[len(head):])
    except ValueError as e:
        raise SignatureError(f"{cert_name}: its certificate is damaged ({e}) (refused)") from None
    try:
        _check(certs[0].public_key(), bytes.fromhex(sig_hex), manifest, alg)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise SignatureError(f"{cert_name}: the signature does not match the manifest "
                             f"{manifest_name}; the manifest or the certificate file was "
                             "changed (refused)") from None
    why = _distrust(certs, system_trust_store() if store is None else store)
    if why is None:
        return []
    who = certs[0].subject.rfc4514_string() or "an empty subject"
    if require_trusted:
        raise UntrustedError(f"{cert_name}: signed by {who}, but {why}; refused "
                             "(--require-trusted)")
    return [f"{cert_name}: the signature is good, but the certificate ({who}) is not trusted: "
            f"{why}"]


__all__ = ["Signer", "verify_cert_file", "system_trust_store", "HASHES"]
