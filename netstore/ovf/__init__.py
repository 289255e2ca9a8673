# OVF/OVA export and import (issues 5 and 14): envelope.py builds and parses
# the descriptor (pure; eula.py its licences, links.py NIC impairments,
# units.py allocation units, legacy.py the OVF 0.9 and oVirt forms,
# collection.py a VirtualSystemCollection's members and start order),
# package.py reads and writes the tar and the manifest, files.py gzip and
# chunked files, signing.py the .cert, appliance.py wires them to the
# registry and the disk images; errors.py holds what a user can meet.  The
# CLI's `netstore ovf` calls export_vms and import_appliance.
"""OVF 1.x packages: export a VM as an OVA, import an OVA or OVF as a new VM."""

from netstore.ovf.appliance import (
    ExportResult,
    ImportResult,
    current_state,
    export_vm,
    export_vms,
    import_appliance,
)
from netstore.ovf.envelope import Appliance, parse_envelope
from netstore.ovf.errors import (
    EulaNotAcceptedError,
    ManifestError,
    OvfError,
    OvfFormatError,
    OvfWarning,
    SignatureError,
    UnsupportedOvfError,
    UntrustedError,
)
from netstore.ovf.writer import build_envelope

__all__ = [
    "export_vm",
    "export_vms",
    "import_appliance",
    "current_state",
    "ExportResult",
    "ImportResult",
    "Appliance",
    "build_envelope",
    "parse_envelope",
    "OvfError",
    "OvfFormatError",
    "ManifestError",
    "UnsupportedOvfError",
    "SignatureError",
    "UntrustedError",
    "EulaNotAcceptedError",
    "OvfWarning",
]
