"""Network address facts, and why an HTTP call found no server."""

from __future__ import annotations

import ipaddress

import httpx


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses: a server bound there is reachable from this
    host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unreachable_reason(exc: httpx.TransportError) -> str:
    """What went wrong, as the socket said it ("All connection attempts failed" hides it)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    reason: BaseException = exc
    while reason.__cause__ is not None:
        reason = reason.__cause__
    return str(reason) or str(exc) or type(exc).__name__
