# The licence agreements of an OVF descriptor (DSP0243 "EulaSection"): one
# EulaSection per licence, in a VirtualSystem (or a collection), its text in
# a License element:
#   <EulaSection><Info>License agreement for the virtual system</Info>
#     <License>text</License></EulaSection>
# Export writes the text `ovf export --eula FILE` gives; import reads every
# EulaSection of the descriptor and refuses unless the user accepted them.
"""EulaSection: write one, read them all."""

from __future__ import annotations

import xml.etree.ElementTree as ET

EULA_INFO = "License agreement for the virtual system"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def add_eula_section(parent: ET.Element, ns: str, text: str) -> ET.Element:
    """Append an EulaSection holding `text` to `parent` (a VirtualSystem),
    its elements in namespace `ns` (the envelope's)."""
    sec = ET.SubElement(parent, f"{{{ns}}}EulaSection")
    ET.SubElement(sec, f"{{{ns}}}Info").text = EULA_INFO
    ET.SubElement(sec, f"{{{ns}}}License").text = text
    return sec


def read_eulas(env: ET.Element) -> list[str]:
    """The text of each EulaSection's License in the envelope, in order
    (sections without text are skipped)."""
    out = []
    for sec in env.iter():
        if _local(sec.tag) != "EulaSection":
            continue
        for lic in sec:
            if _local(lic.tag) == "License" and (lic.text or "").strip():
                out.append(lic.text.strip())  # type: ignore[union-attr]
    return out


__all__ = ["add_eula_section", "read_eulas", "EULA_INFO"]
