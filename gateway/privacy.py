"""Privacy helpers shared by channels: IP anonymization (plain functions, no I/O)."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=65_536)
def anonymize_ip(ip: str) -> str:
    """Zero the last octet of an IPv4 address and the last 80 bits of an IPv6 one (as Google
    Analytics and Matomo do); something that is not an address becomes ``""``."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(network.network_address)
