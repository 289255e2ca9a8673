# What a user can meet exporting or importing an OVF package: each error is
# one line naming the file and what is wrong; the CLI prints it and exits 1.
# They are DiskErrors, as the registry's are, so every caller that handles
# disk and registry refusals handles these too.
"""OVF/OVA errors and warnings."""

from __future__ import annotations

from netstore.disk.api import DiskError


class OvfError(DiskError):
    """An OVF export or import was refused; nothing was registered or left behind."""


class OvfFormatError(OvfError):
    """The package is malformed: not a tar, the descriptor not first, a name
    escaping the package (../x), XML that is not an OVF envelope."""


class ManifestError(OvfError):
    """A file is missing from the package or differs from its manifest digest
    (the message names the file)."""


class SignatureError(ManifestError):
    """The package's .cert file is malformed or its signature does not match
    the manifest: the manifest or the certificate file was changed."""


class UntrustedError(OvfError):
    """A good signature by a certificate this host does not trust (self-signed,
    unknown issuer, expired), refused because trust was required."""


class EulaNotAcceptedError(OvfError):
    """The package holds a licence agreement (``licences``) that was not accepted."""

    def __init__(self, message: str, licences: list[str]) -> None:
        super().__init__(message)
        self.licences = licences


class UnsupportedOvfError(OvfError):
    """A valid package using something netstore does not do (named): a disk
    format other than streamOptimized VMDK or raw, nested collections."""


class OvfWarning(UserWarning):
    """Imported, but something was skipped or changed (an Item netstore does
    not model, a MAC that collided); the CLI prints it on stderr."""


__all__ = ["OvfError", "OvfFormatError", "ManifestError", "SignatureError", "UntrustedError",
           "EulaNotAcceptedError", "UnsupportedOvfError", "OvfWarning"]
