# netstore/ovf/product.py - the ProductSection of a VirtualSystem (DSP0243
# 9.5): what the appliance is (Product, Vendor, Version, FullVersion,
# ProductUrl, VendorUrl, AppUrl) and its Properties (ovf:key, ovf:type,
# ovf:value, a Label and a Description each). Import keeps it in the
# registry as plain values (the VM's `product`); export writes it back.
# OVF 0.9's Full-version is read as FullVersion.
"""ProductSection: read one into plain values, write one back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["PRODUCT_FIELDS", "add_product_section", "read_product"]

# (element, key in the plain values), in the order the schema wants them.
PRODUCT_FIELDS = (("Product", "product"), ("Vendor", "vendor"), ("Version", "version"),
                  ("FullVersion", "full_version"), ("ProductUrl", "product_url"),
                  ("VendorUrl", "vendor_url"), ("AppUrl", "app_url"))
_ALIASES = {"Full-version": "FullVersion"}  # OVF 0.9
PRODUCT_INFO = "Information about the installed software"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(el: ET.Element, name: str) -> str | None:
    return next((v for k, v in el.attrib.items() if _local(k) == name), None)


def read_product(vs: ET.Element) -> dict[str, Any] | None:
    """The first ProductSection of VirtualSystem `vs` as plain values, or None."""
    sec = next((c for c in vs if _local(c.tag) == "ProductSection"), None)
    if sec is None:
        return None
    keys = dict(PRODUCT_FIELDS)
    out: dict[str, Any] = {}
    props = []
    for el in sec:
        tag = _ALIASES.get(_local(el.tag), _local(el.tag))
        if tag in keys and (el.text or "").strip():
            out[keys[tag]] = el.text.strip()  # type: ignore[union-attr]
        elif tag == "Property" and _attr(el, "key"):
            prop = {"key": _attr(el, "key"), "type": _attr(el, "type") or "string",
                    "value": _attr(el, "value") or ""}
            for kid in el:
                if _local(kid.tag) in ("Label", "Description") and (kid.text or "").strip():
                    prop[_local(kid.tag).lower()] = kid.text.strip()  # type: ignore[union-attr]
            props.append(prop)
    if props:
        out["properties"] = props
    return out or None


def add_product_section(vs: ET.Element, ns: str, product: dict[str, Any]) -> None:
    """Append the ProductSection of `product` (read_product's values) to `vs`."""
    sec = ET.SubElement(vs, f"{{{ns}}}ProductSection")
    ET.SubElement(sec, f"{{{ns}}}Info").text = PRODUCT_INFO
    for tag, key in PRODUCT_FIELDS:
        if product.get(key):
            ET.SubElement(sec, f"{{{ns}}}{tag}").text = str(product[key])
    for p in product.get("properties", []):
        el = ET.SubElement(sec, f"{{{ns}}}Property", {
            f"{{{ns}}}key": str(p["key"]), f"{{{ns}}}type": str(p.get("type", "string")),
            f"{{{ns}}}value": str(p.get("value", ""))})
        for tag in ("Label", "Description"):
            if p.get(tag.lower()):
                ET.SubElement(el, f"{{{ns}}}{tag}").text = str(p[tag.lower()])
