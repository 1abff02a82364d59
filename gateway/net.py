"""Addresses: is a host on this machine's loopback?"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlparse

__all__ = ["is_loopback", "is_loopback_url"]


@functools.lru_cache(maxsize=1024)  # ip_address() parsing showed up in the per-request profile
def is_loopback(host: str | None) -> bool:
    """A loopback address or name: ``127.0.0.0/8``, ``::1``, ``localhost``."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def is_loopback_url(url: str | None) -> bool:
    return is_loopback(urlparse(url or "").hostname)
