# netstore/addresses.py - the text forms of network addresses netstore reads:
# portals and UDP endpoints ("host:port", "[v6]:port"), stream endpoints
# ("host:port" or a unix socket path) and MAC addresses. Pure; the config
# loader, the switch ports, the registry and the CLI share these rules.
"""Parse and format ``host:port`` portals, stream endpoints and MAC addresses."""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "DNS_LABEL",
    "HOSTNAME_RE",
    "MAC_RE",
    "format_portal",
    "is_ipv4",
    "is_socket_path",
    "normal_portal",
    "parse_portal",
]

# RFC 1123 2.1: a host name label (letters, digits, '-'; not at either end).
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
HOSTNAME_RE = re.compile(rf"(?i:{DNS_LABEL})(?:\.(?i:{DNS_LABEL}))*")
# Six hex octets, all ':' or all '-' separated (52:54:00:12:34:56).
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")


def parse_portal(text: str) -> tuple[str, int]:
    """Parse ``"host:port"`` (IPv6 as ``"[::1]:3260"``) into ``(host, port)``.

    Port 0 asks the kernel for a free port. Raises ValueError with the reason.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError('an IPv6 portal is written "[addr]:port"')
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError('no ":port"')
        if ":" in host:
            raise ValueError('an IPv6 portal is written "[addr]:port"')
        if not is_ipv4(host) and not HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{host!r} is not an IPv4 address or host name")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    return host, port


def format_portal(host: str, port: int) -> str:
    """The inverse of parse_portal: ``127.0.0.1:3260`` or ``[::1]:3260``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normal_portal(text: str) -> str:
    """``text`` as parse_portal reads it, written back in its one form
    (``[::1]:80``). Raises ValueError with the reason."""
    return format_portal(*parse_portal(text))


def is_socket_path(addr: str) -> bool:
    """Whether a stream endpoint names a unix socket (it has a '/') rather than
    a ``host:port``."""
    return "/" in addr


def is_ipv4(text: str) -> bool:
    """Whether ``text`` is a dotted-quad IPv4 address."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
