"""What stands between the network and the API handlers.

- Connection caps, request deadlines and the body cap: pghad/api/limits.py.
- Host and Origin checks: a web page the operator visits cannot drive the API (cross-site
  requests, DNS rebinding), even on loopback without a token.
- Off loopback, everything but the command list, /health and /metrics needs the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from pghad.system.net import is_loopback

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


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

    def _same_origin(self, origin: str) -> bool:
        """Scheme, host and port all this API's: a page on another port is another site."""
        try:
            parts = urlsplit(origin)
            port = parts.port or 80
        except ValueError:
            return False
        return parts.scheme == "http" and parts.hostname in self.hosts and port == self.port

    def refusal(self, request: Request) -> tuple[int, str] | None:
        host = _host_of(request.headers.get("host", ""))
        if host not in self.hosts:
            return 403, (
                f"Host {host!r} is not an address of this API: use one of "
                f"{sorted(self.hosts)}, or add the name to api.allowed_hosts"
            )
        origin = request.headers.get("origin")
        if origin is not None and not self._same_origin(origin):
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
