"""Refusing what a web page could make a user's browser send.

A page the user has open can POST to a gateway on their machine: no CORS preflight is needed for
``text/plain`` or form bodies, and DNS rebinding can make a hostile name resolve to 127.0.0.1.
So: requests from browser origins the settings do not list are refused, and a gateway without
keys (open mode, loopback clients only) answers only Host names that are loopback themselves.
JSON bodies must say so in ``Content-Type`` (see ``body.read_json_body``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from gateway.errors import GatewayError, PermissionDeniedError
from gateway.net import is_loopback

__all__ = ["browser_refusal"]


def browser_refusal(
    headers: Iterable[tuple[bytes, bytes]], allowed_origins: Collection[str], open_mode: bool
) -> GatewayError | None:
    """The error to answer with, or None when the request may proceed (raw ASGI headers)."""
    origin = None
    hosts = []
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            hosts.append(value.decode("latin-1"))
    if origin is not None and origin not in allowed_origins:
        return PermissionDeniedError(
            f"requests from browser origin {origin[:100]!r} are refused "
            "(TIERWISE_ALLOWED_ORIGINS lists the allowed ones)",
            code="origin_not_allowed",
        )
    if open_mode and (len(hosts) > 1 or any(not is_loopback(_hostname(h)) for h in hosts)):
        return PermissionDeniedError(
            "this gateway has no API keys and answers only loopback host names (localhost, 127.0.0.1, [::1])",
            code="host_not_allowed",
        )
    return None


# A Host header as browsers send it: a name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"^(?:(?P<name>[A-Za-z0-9.-]+)|\[(?P<ip6>[0-9A-Fa-f:.]+)\])(?::[0-9]{1,5})?$")


def _hostname(host: str) -> str:
    """The host name of a Host header; "" for anything not shaped like one (it is refused)."""
    found = _HOST.match(host)
    return (found.group("name") or found.group("ip6")) if found else ""
