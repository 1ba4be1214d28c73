"""The agent node driver: the node's process work is done by `pghad agent` on its own host.

Every round's heartbeat renews this daemon's lease on the agent and brings back the server's
state and the agent's own view of the other node: the second witness of a failover.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pghad.config.model import AgentNodeConfig, Config, NodeConfig
from pghad.decide.observation import ControlData, ServerState, Witness
from pghad.errors import ConfigError, NodeError
from pghad.system.net import is_loopback

HEARTBEAT_TIMEOUT_S = 2.0
# A witness older than this says nothing about now (a heartbeat still waiting keeps the last).
WITNESS_MAX_AGE_S = 2 * HEARTBEAT_TIMEOUT_S
LONG_OPERATION_S = 6 * 3600.0  # rewind and clone copy data


class LeaseRefused(NodeError):
    def __init__(self, url: str, host: str | None) -> None:
        super().__init__(
            f"the agent at {url} takes changes from another pghad (on {host}): stop that daemon "
            "first, or wait for its lease to lapse (10 s after it stopped)"
        )
        self.host = host


def holder_id(config: Config) -> str:
    """This daemon as agents know it: host and state directory (a restart is the same holder)."""
    return f"{socket.gethostname()}:{config.state.dir}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """An agent never redirects: a redirect is answered as an error, and the token is never
    sent on to wherever it points."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _in_clear_off_loopback(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme != "https" and not is_loopback(parts.hostname or "")


class AgentClient:
    def __init__(
        self, url: str, token: str, ca_file: Path | None, holder: str, plain_http: bool = False
    ) -> None:
        self.url = url.rstrip("/")
        if token and not plain_http and _in_clear_off_loopback(self.url):
            raise ConfigError(
                f"agent_url {url!r} would carry agent.token in clear: use https:// (agent.tls_cert "
                "and agent.tls_key on the agent, agent.ca_file here), a loopback address, or "
                "agent.plain_http = true on a private network"
            )
        self.token = token
        self.holder = holder
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        # No proxy from the environment (http_proxy, https_proxy): agents are reached directly.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.context),
            _NoRedirect(),
        )
        # Threads of its own: an agent that does not answer holds up only its own calls,
        # never the loop's other work in the shared pool.
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent")

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("X-Pghad-Holder", self.holder)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}")
            except json.JSONDecodeError:
                detail = {}
            finally:
                exc.close()
            if exc.code == 409 and "holder" in detail:
                raise LeaseRefused(self.url, detail.get("host")) from exc
            message = detail.get("message") or exc.reason
            raise NodeError(f"agent {self.url}{path}: {exc.code} {message}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NodeError(f"agent {self.url} unreachable: {reason}") from exc

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._call, method, path, body, timeout)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class AgentDriver:
    def __init__(self, node: AgentNodeConfig, config: Config) -> None:
        self._node = node
        agent = config.agent
        self.client = AgentClient(
            node.agent_url, agent.token, agent.ca_file, holder_id(config), agent.plain_http
        )
        self._witness: Witness | None = None
        self._host = socket.gethostname()
        self._beat: asyncio.Future[dict[str, Any]] | None = None
        # Sent with every beat: the agent fences on the daemon's timing, not its own file's.
        self._self_fence_after = config.self_fence_after

    @property
    def node(self) -> NodeConfig:
        return self._node

    async def heartbeat(self) -> dict[str, Any]:
        """One heartbeat at a time: a round while the last one still waits shares it."""
        if self._beat is None or self._beat.done():
            beat = {
                "holder": self.client.holder,
                "host": self._host,
                "ttl": 10.0,
                "self_fence_after": self._self_fence_after,
            }
            self._beat = asyncio.ensure_future(
                self.client.call("POST", "/heartbeat", beat, HEARTBEAT_TIMEOUT_S)
            )
            # Its waiter may be gone (a round that decided without it): the error is not lost,
            # the next heartbeat reports it, but it must not go unretrieved.
            self._beat.add_done_callback(_retrieve)
        try:
            answer: dict[str, Any] = await asyncio.shield(self._beat)
        except NodeError:
            self._witness = Witness(False, None, time.monotonic())
            raise
        confirmed = answer.get("self_fence_after")
        peer = answer.get("peer") or {}
        down = peer.get("down_for_s")
        self._witness = Witness(
            available=True,
            primary_down_for_s=float(down) if down is not None else None,
            at=time.monotonic(),
            self_fence_after=float(confirmed) if confirmed is not None else None,
            self_fenced=bool(answer.get("fenced_isolated")),
            serving=bool(answer.get("serving")),
        )
        return answer

    def witness(self) -> Witness | None:
        witness = self._witness
        if witness is None or time.monotonic() - witness.at > WITNESS_MAX_AGE_S:
            return Witness(False, None, witness.at if witness else 0.0)
        return witness

    async def is_running(self) -> bool:
        answer = await self.client.call("GET", "/process")
        return bool(answer["running"])

    async def server_state(self) -> ServerState:
        return ServerState((await self.heartbeat())["server"])

    async def start(self, role: Any, primary: NodeConfig | None = None) -> None:
        body = {"role": str(role), "primary": primary.name if primary else None}
        await self.client.call("POST", "/start", body, 120.0)

    async def stop(self, mode: str = "fast") -> None:
        await self.client.call("POST", "/stop", {"mode": mode}, 60.0)

    async def fence(self) -> str:
        return str((await self.client.call("POST", "/fence", {}, 30.0))["detail"])

    async def rewind(self, source: NodeConfig) -> None:
        await self.client.call("POST", "/rewind", {"source": source.name}, LONG_OPERATION_S)

    async def clone(self, source: NodeConfig) -> None:
        await self.client.call("POST", "/clone", {"source": source.name}, LONG_OPERATION_S)

    async def checkpoint_lsn(self) -> str:
        return str((await self.client.call("GET", "/checkpoint_lsn"))["lsn"])

    async def control_data(self) -> ControlData:
        body = await self.client.call("GET", "/control")
        timeline, lsn = body.get("timeline"), body.get("checkpoint_lsn")
        return ControlData(
            state=str(body["state"]),
            timeline=int(timeline) if timeline is not None else None,
            checkpoint_lsn=int(lsn) if lsn is not None else None,
        )
