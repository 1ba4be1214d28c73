"""Name lookups for one node in a thread of its own, bounded by the caller's deadline.

Docker's DNS can take 10 s to answer for a stopped container. Done in asyncio's shared executor,
such lookups queue up and delay the probes of every other node; here each node has one lookup
thread, a probe waits for it only until its deadline, and a lookup still running is reused
rather than started again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import Future, ThreadPoolExecutor

from pghad.errors import NodeError


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.startswith("/")  # a Unix socket directory needs no lookup either
    return True


def _lookup(host: str, port: int) -> str:
    return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])


class Resolver:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[str] | None = None

    async def address(self, timeout: float) -> str | None:
        """The address to connect to, or None when `host` needs no lookup."""
        if is_address(self.host):
            return None
        if self._pending is None or self._pending.done():
            self._executor = self._executor or ThreadPoolExecutor(1, f"resolve-{self.host}")
            self._pending = self._executor.submit(_lookup, self.host, self.port)
        try:
            found = await asyncio.wait_for(asyncio.wrap_future(self._pending), timeout)
        except TimeoutError as exc:
            raise NodeError(f"looking up {self.host} took longer than {timeout:g} s") from exc
        except OSError as exc:
            raise NodeError(f"cannot resolve {self.host}: {exc}") from exc
        return found
