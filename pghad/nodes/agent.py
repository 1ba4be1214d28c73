"""The agent node driver: the node's process work is done by `pghad agent` on its own host.

Every round's heartbeat renews this daemon's lease on the agent and brings back the server's
state and the agent's own view of the other node: the second witness of a failover.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from pghad.config.model import AgentNodeConfig, Config, NodeConfig
from pghad.decide.observation import ControlData, ServerState, Witness
from pghad.errors import ConfigError, NodeError
from pghad.nodes.agent_api import (
    LEASE_TTL_S,
    AgentErrorBody,
    CheckpointLsn,
    Control,
    Done,
    Fence,
    Fenced,
    Heartbeat,
    HeartbeatAnswer,
    Process,
    Source,
    Start,
    Stop,
)
from pghad.nodes.base import Role
from pghad.system.net import is_loopback, unreachable_reason

HEARTBEAT_TIMEOUT_S = 2.0
# A witness older than this says nothing about now (a heartbeat still waiting keeps the last).
WITNESS_MAX_AGE_S = 2 * HEARTBEAT_TIMEOUT_S
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
FENCE_TIMEOUT_S = 30.0
LONG_OPERATION_S = 6 * 3600.0  # rewind and clone copy data

Answer = TypeVar("Answer", bound=BaseModel)


class LeaseRefused(NodeError):
    def __init__(self, url: str, host: str | None) -> None:
        super().__init__(
            f"the agent at {url} takes changes from another pghad (on {host}): stop that daemon "
            f"first, or wait for its lease to lapse ({LEASE_TTL_S:g} s after it stopped)"
        )
        self.host = host


def holder_id(config: Config) -> str:
    """This daemon as agents know it: host and state directory (a restart is the same holder)."""
    return f"{socket.gethostname()}:{config.state.dir}"


def _in_clear_off_loopback(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme != "https" and not is_loopback(parts.hostname or "")


def _refusal(body: bytes) -> AgentErrorBody | None:
    try:
        return AgentErrorBody.model_validate_json(body)
    except ValidationError:
        return None


class AgentClient:
    """The agent's API over HTTP(S) for the asyncio loop.

    Calls run in threads of this client's own: an agent that does not answer holds up only its
    own calls, never the loop or its other work, and each call's timeout runs on its socket
    whatever the loop is busy with. A caller that stops waiting (a bounded fence, a round's
    deadline) does not take the request back: it goes on to its own timeout, as an order sent to
    a host should (a fence that arrives late still fences).

    A call opens its own connection and closes it after the answer: its timeout covers connecting
    afresh, and an idle connection the agent is closing is never taken for a dead agent. No proxy
    from the environment (agents are reached directly) and no redirect followed (the token goes
    only to the agent's address)."""

    def __init__(
        self,
        url: str,
        token: str,
        ca_file: Path | None,
        holder: str,
        plain_http: bool = False,
        *,
        transport: httpx.BaseTransport | None = None,
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
        headers = {"X-Pghad-Holder": holder}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=ssl.create_default_context(cafile=str(ca_file) if ca_file else None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent")

    async def call(
        self,
        method: str,
        path: str,
        answer: type[Answer],
        body: BaseModel | None = None,
        timeout: float = CALL_TIMEOUT_S,
    ) -> Answer:
        """`timeout` bounds connecting and each wait for the agent (as a socket timeout does)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._threads, self._request, method, path, answer, body, timeout
        )

    def _request(
        self, method: str, path: str, answer: type[Answer], body: BaseModel | None, timeout: float
    ) -> Answer:
        content = body.model_dump_json().encode() if body is not None else None
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise NodeError(f"agent {self.url} unreachable: {unreachable_reason(exc)}") from exc
        if not response.is_success:
            refusal = _refusal(response.content)
            if response.status_code == 409 and refusal and "holder" in refusal.model_fields_set:
                raise LeaseRefused(self.url, refusal.host)
            message = refusal.message if refusal else response.reason_phrase
            raise NodeError(f"agent {self.url}{path}: {response.status_code} {message}")
        try:
            return answer.model_validate_json(response.content or b"{}")
        except ValidationError as exc:
            raise NodeError(
                f"agent {self.url}{path}: an answer this pghad does not understand: {exc}"
            ) from exc


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class AgentDriver:
    def __init__(
        self,
        node: AgentNodeConfig,
        config: Config,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._node = node
        agent = config.agent
        self.client = AgentClient(
            node.agent_url,
            agent.token,
            agent.ca_file,
            holder_id(config),
            agent.plain_http,
            transport=transport,
        )
        self._witness: Witness | None = None
        # Sent with every beat: the agent fences on the daemon's timing, not its own file's.
        self._beat_body = Heartbeat(
            holder=self.client.holder,
            host=socket.gethostname(),
            self_fence_after=config.self_fence_after,
        )
        self._beat: asyncio.Future[HeartbeatAnswer] | None = None

    @property
    def node(self) -> NodeConfig:
        return self._node

    async def heartbeat(self) -> HeartbeatAnswer:
        """One heartbeat at a time: a round while the last one still waits shares it."""
        if self._beat is None or self._beat.done():
            self._beat = asyncio.ensure_future(
                self.client.call(
                    "POST", "/heartbeat", HeartbeatAnswer, self._beat_body, HEARTBEAT_TIMEOUT_S
                )
            )
            # Its waiter may be gone (a round that decided without it): the error is not lost,
            # the next heartbeat reports it, but it must not go unretrieved.
            self._beat.add_done_callback(_retrieve)
        try:
            answer = await asyncio.shield(self._beat)
        except NodeError:
            self._witness = Witness(False, None, time.monotonic())
            raise
        self._witness = Witness(
            available=True,
            primary_down_for_s=answer.peer.down_for_s if answer.peer else None,
            at=time.monotonic(),
            self_fence_after=answer.self_fence_after,
            self_fenced=answer.fenced_isolated,
            serving=answer.serving,
        )
        return answer

    def witness(self) -> Witness | None:
        witness = self._witness
        if witness is None or time.monotonic() - witness.at > WITNESS_MAX_AGE_S:
            return Witness(False, None, witness.at if witness else 0.0)
        return witness

    async def is_running(self) -> bool:
        return (await self.client.call("GET", "/process", Process)).running

    async def server_state(self) -> ServerState:
        return (await self.heartbeat()).server

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        body = Start(role=role, primary=primary.name if primary else None)
        await self.client.call("POST", "/start", Done, body, START_TIMEOUT_S)

    async def stop(self, mode: str = "fast") -> None:
        await self.client.call("POST", "/stop", Done, Stop(mode=mode), STOP_TIMEOUT_S)

    async def fence(self) -> str:
        return (await self.client.call("POST", "/fence", Fenced, Fence(), FENCE_TIMEOUT_S)).detail

    async def rewind(self, source: NodeConfig) -> None:
        body = Source(source=source.name)
        await self.client.call("POST", "/rewind", Done, body, LONG_OPERATION_S)

    async def clone(self, source: NodeConfig) -> None:
        body = Source(source=source.name)
        await self.client.call("POST", "/clone", Done, body, LONG_OPERATION_S)

    async def checkpoint_lsn(self) -> str:
        return (await self.client.call("GET", "/checkpoint_lsn", CheckpointLsn)).lsn

    async def control_data(self) -> ControlData:
        body = await self.client.call("GET", "/control", Control)
        return ControlData(body.state, body.timeline, body.checkpoint_lsn)
