"""What stands between the network and the API handlers.

- A connection cap and a deadline for the first request's headers: idle or trickling
  connections cannot use up the daemon's file descriptors.
- Host and Origin checks: a web page the operator visits cannot drive the API (cross-site
  requests, DNS rebinding), even on loopback without a token.
- Off loopback, everything but the command list, /health and /metrics needs the token.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_CONNECTIONS = 100
# asyncio accepts up to `backlog` connections in one go before the protocol sees any of them (and
# closes those over the cap): uvicorn's default of 2,048 let one burst of clients take every file
# descriptor for a moment, and a server start or probe that needed one then failed.
ACCEPT_BACKLOG = 32
FIRST_REQUEST_TIMEOUT_S = 10.0
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a connection cap and an idle deadline."""

    _idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._idle = self.loop.call_later(FIRST_REQUEST_TIMEOUT_S, self._close_if_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        super().connection_lost(exc)

    def _close_if_idle(self) -> None:
        # No complete request (headers included) within the deadline, even if bytes trickled in.
        self._idle = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def _host_of(value: str) -> str:
    """'localhost:8088' -> 'localhost'; '[::1]:8088' -> '::1'."""
    if value.startswith("["):
        return value[1 : value.find("]")]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    def __init__(
        self,
        bind: str,
        port: int,
        allowed_hosts: Iterable[str],
        open_paths: tuple[str, ...],
        token_ok: Callable[[Request], bool],
    ) -> None:
        self.hosts = {bind, *LOCAL_NAMES, *allowed_hosts}
        self.port = port
        self.loopback = is_loopback(bind)
        self.open_paths = open_paths
        self.token_ok = token_ok

    def refusal(self, request: Request) -> tuple[int, str] | None:
        host = _host_of(request.headers.get("host", ""))
        if host not in self.hosts:
            return 403, (
                f"Host {host!r} is not an address of this API: use one of "
                f"{sorted(self.hosts)}, or add the name to api.allowed_hosts"
            )
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).hostname not in self.hosts:
            return 403, f"cross-site request from {origin!r} refused"
        if (
            not self.loopback
            and request.method == "GET"
            and request.url.path not in self.open_paths
            and not self.token_ok(request)
        ):
            return 401, "missing or wrong token: send 'Authorization: Bearer <token>'"
        return None

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = self.refusal(request)
        if refused is not None:
            status, message = refused
            return JSONResponse({"status": "error", "message": message}, status_code=status)
        return await call_next(request)
