"""Limits both HTTP servers (the control API and the agent) put on what a client can hold.

- Every request, headers and body, must arrive within REQUEST_TIMEOUT_S of the connection or of
  the previous response (a trickle of bytes does not re-arm it); an idle keep-alive connection
  is closed by uvicorn's own timer.
- At most MAX_CONNECTIONS in all and PER_CLIENT from one address. Over either cap the oldest
  connection that is only waiting (no request being answered) is closed to make room, so held
  connections never lock out a health check or the daemon's heartbeat.
- A body over MAX_BODY, or a body sent without the token where one is needed, is answered at
  once (413, 401) before anything reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_CONNECTIONS = 100
PER_CLIENT = 32
REQUEST_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_BODY = 64 * 1024
# asyncio accepts up to `backlog` connections in one go before the protocol sees any of them (and
# closes those over the cap): uvicorn's default of 2,048 let one burst of clients take every file
# descriptor for a moment, and a server start or probe that needed one then failed.
ACCEPT_BACKLOG = 32

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with connection caps and a deadline on every request."""

    _deadline: asyncio.TimerHandle | None = None
    _opened = 0.0
    _peer: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._opened = time.monotonic()
        self._peer = self.client[0] if self.client else None
        others = [
            c for c in self.connections if isinstance(c, BoundedH11Protocol) and c is not self
        ]
        same = [c for c in others if c._peer == self._peer]
        for group, cap in ((same, PER_CLIENT), (others, MAX_CONNECTIONS)):
            if len(group) >= cap and not _evict_one(group):
                transport.close()
                return
        self._arm()

    def waiting(self) -> bool:
        """No request of this connection is being answered (idle, or one still arriving)."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT_S, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self.waiting() and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request has REQUEST_TIMEOUT_S, however it trickles

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)


def _evict_one(group: list[BoundedH11Protocol]) -> bool:
    """Close the oldest connection of `group` that is only waiting; False when none is."""
    idle = [c for c in group if c.waiting() and not c.transport.is_closing()]
    if not idle:
        return False
    oldest = min(idle, key=lambda c: c._opened)
    oldest.transport.close()
    group.remove(oldest)
    return True


class _TooLarge(Exception):
    pass


class BodyGuard:
    """ASGI wrapper: a request's body is capped, and needs the token, before it is read."""

    def __init__(self, app: Asgi, token: Callable[[], str]) -> None:
        self.app = app
        self.token = token  # read per request: a reload changes it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (length is not None and length != b"0")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _refuse(send, 413, f"request body over {MAX_BODY} bytes")
            return
        token = self.token()
        given = headers.get(b"authorization", b"")
        if has_body and token and not hmac.compare_digest(given, f"Bearer {token}".encode()):
            await _refuse(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'")
            return
        started = False
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, f"request body over {MAX_BODY} bytes")


async def _refuse(send: Send, status: int, message: str) -> None:
    """Answer and close: the unread body is never read."""
    body = ('{"status": "error", "message": "' + message.replace('"', "'") + '"}').encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BoundedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon and the agent own their signals and stop
    their server themselves."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bounded_config(app: Asgi, token: Callable[[], str], **listen: Any) -> uvicorn.Config:
    """The one setup of both HTTP servers: the body guard, these limits, no access log."""
    return uvicorn.Config(
        BodyGuard(app, token),
        log_config=None,
        access_log=False,
        lifespan="off",
        http=BoundedH11Protocol,
        backlog=ACCEPT_BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S,
        **listen,
    )
