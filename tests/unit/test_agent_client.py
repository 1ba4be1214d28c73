"""The agent driver at its HTTP boundary (httpx.MockTransport standing in for an agent): what it
sends, how long each call may wait, how it reads answers and maps failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pghad.agent.peer_agent import PeerAgentWatch
from pghad.agent.service import AgentService
from pghad.config.model import AgentNodeConfig, Config, parse_config
from pghad.decide.observation import ServerState
from pghad.errors import NodeError
from pghad.nodes.agent import (
    FENCE_TIMEOUT_S,
    HEARTBEAT_TIMEOUT_S,
    LONG_OPERATION_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    AgentClient,
    AgentDriver,
    LeaseRefused,
)
from pghad.nodes.agent_api import LEASE_TTL_S, Heartbeat
from pghad.nodes.base import Role

Handler = Callable[[httpx.Request], httpx.Response]

CONFIG = """
[cluster]
failover_threshold = 6.0
[agent]
token = "agent-secret"
self_fence_after = 4.0
[state]
dir = "/var/lib/pghad-test"
[[nodes]]
name = "node1"
driver = "agent"
host = "10.0.0.11"
agent_url = "https://10.0.0.11:8089"
data_dir = "/var/lib/postgresql/data"
[[nodes]]
name = "node2"
driver = "agent"
host = "10.0.0.12"
agent_url = "https://10.0.0.12:8089"
data_dir = "/var/lib/postgresql/data"
"""

ANSWER = {
    "node": "node1",
    "server": "running",
    "writable": True,
    "self_fenced": None,
    "fenced_isolated": False,
    "self_fence_after": 4.0,
    "peer": {"name": "node2", "reachable": False, "down_for_s": 1.5, "error": "refused"},
}


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG, base=Path("/etc/pghad"))


def driver(config: Config, handler: Handler) -> AgentDriver:
    node = config.node("node1")
    assert isinstance(node, AgentNodeConfig)
    return AgentDriver(node, config, transport=httpx.MockTransport(handler))


def test_a_heartbeat_sends_the_models_lease_ttl_and_reads_the_witness(config: Config) -> None:
    seen: list[httpx.Request] = []

    def agent(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    answer = asyncio.run(driver(config, agent).heartbeat())
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/heartbeat")
    beat = Heartbeat.model_validate_json(request.content)
    assert beat.ttl == LEASE_TTL_S
    assert json.loads(request.content)["ttl"] == LEASE_TTL_S  # on the wire, not left to the agent
    assert beat.self_fence_after == 4.0 and beat.holder.endswith(":/var/lib/pghad-test")
    assert request.headers["authorization"] == "Bearer agent-secret"
    assert request.headers["x-pghad-holder"] == beat.holder
    assert request.extensions["timeout"] == dict.fromkeys(
        ("connect", "read", "write", "pool"), HEARTBEAT_TIMEOUT_S
    )
    assert answer.server is ServerState.RUNNING


def test_the_witness_is_what_the_agent_answered(config: Config) -> None:
    fenced = {**ANSWER, "fenced_isolated": True, "self_fence_after": 3.0}
    node = driver(config, lambda _request: httpx.Response(200, json=fenced))
    assert asyncio.run(node.server_state()) is ServerState.RUNNING
    witness = node.witness()
    assert witness is not None and witness.available
    assert witness.primary_down_for_s == 1.5
    assert witness.self_fence_after == 3.0 and witness.self_fenced


def test_a_peer_in_sight_is_not_down(config: Config) -> None:
    peer = {"name": "node2", "reachable": True, "down_for_s": None, "error": None}
    node = driver(config, lambda _request: httpx.Response(200, json={**ANSWER, "peer": peer}))
    asyncio.run(node.heartbeat())
    witness = node.witness()
    assert witness is not None and witness.available and witness.primary_down_for_s is None


def test_a_lease_held_elsewhere_is_refused_by_name(config: Config) -> None:
    body = {"status": "error", "message": "held", "holder": "w2:/state", "host": "w2"}
    node = driver(config, lambda _request: httpx.Response(409, json=body))
    with pytest.raises(LeaseRefused, match=r"on w2\).*\(10 s after it stopped\)") as refused:
        asyncio.run(node.heartbeat())
    assert refused.value.host == "w2"
    witness = node.witness()
    assert witness is not None and not witness.available


def test_an_error_answer_names_the_status_and_the_agents_message(config: Config) -> None:
    body = {"status": "error", "message": "missing or wrong token"}
    node = driver(config, lambda _request: httpx.Response(401, json=body))
    with pytest.raises(NodeError, match=r"^agent https://10.0.0.11:8089/fence: 401 missing or"):
        asyncio.run(node.fence())


def test_an_answer_that_is_not_json_is_named_by_its_status(config: Config) -> None:
    node = driver(config, lambda _request: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(NodeError, match=r"/stop: 502 Bad Gateway$"):
        asyncio.run(node.stop())


def test_a_conflict_without_a_holder_is_not_a_lease_refusal(config: Config) -> None:
    node = driver(config, lambda _request: httpx.Response(409, json={"message": "busy"}))
    with pytest.raises(NodeError, match="409 busy") as failed:
        asyncio.run(node.start(Role.PRIMARY))
    assert not isinstance(failed.value, LeaseRefused)


def test_a_redirect_is_an_error_and_is_not_followed(config: Config) -> None:
    seen: list[str] = []

    def agent(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/"})

    with pytest.raises(NodeError, match="302 Found"):
        asyncio.run(driver(config, agent).checkpoint_lsn())
    assert seen == ["https://10.0.0.11:8089/checkpoint_lsn"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "Connection refused"),
        (httpx.ReadTimeout(""), "timed out"),
        (httpx.ConnectTimeout(""), "timed out"),
        (httpx.RemoteProtocolError("Server disconnected"), "Server disconnected"),
    ],
)
def test_no_answer_is_an_unreachable_agent(
    config: Config, failure: httpx.TransportError, reason: str
) -> None:
    def agent(_request: httpx.Request) -> httpx.Response:
        raise failure

    node = driver(config, agent)
    with pytest.raises(NodeError, match=f"agent https://10.0.0.11:8089 unreachable: .*{reason}"):
        asyncio.run(node.heartbeat())
    witness = node.witness()
    assert witness is not None and not witness.available


def test_an_answer_missing_what_the_daemon_reads_is_an_error(config: Config) -> None:
    node = driver(config, lambda _request: httpx.Response(200, json={"node": "node1"}))
    with pytest.raises(NodeError, match="does not understand"):
        asyncio.run(node.heartbeat())


def test_each_call_waits_as_long_as_its_operation_may_take(config: Config) -> None:
    waits: dict[str, float] = {}
    bodies: dict[str, object] = {}

    def agent(request: httpx.Request) -> httpx.Response:
        waits[request.url.path] = request.extensions["timeout"]["read"]
        bodies[request.url.path] = json.loads(request.content) if request.content else None
        answers = {
            "/process": {"running": True, "server": "running"},
            "/fence": {"status": "success", "detail": "stopped (immediate)"},
            "/checkpoint_lsn": {"lsn": "0/3000028"},
        }
        return httpx.Response(200, json=answers.get(request.url.path, {"status": "success"}))

    node = driver(config, agent)
    other = config.node("node2")

    async def every_call() -> None:
        assert await node.is_running()
        await node.start(Role.STANDBY, other)
        await node.stop("immediate")
        assert await node.fence() == "stopped (immediate)"
        await node.rewind(other)
        await node.clone(other)
        assert await node.checkpoint_lsn() == "0/3000028"

    asyncio.run(every_call())
    assert waits == {
        "/process": 10.0,
        "/start": START_TIMEOUT_S,
        "/stop": STOP_TIMEOUT_S,
        "/fence": FENCE_TIMEOUT_S,
        "/rewind": LONG_OPERATION_S,
        "/clone": LONG_OPERATION_S,
        "/checkpoint_lsn": 10.0,
    }
    assert bodies["/start"] == {"role": "standby", "primary": "node2"}
    assert bodies["/stop"] == {"mode": "immediate"}
    assert bodies["/fence"] == {}
    assert bodies["/rewind"] == bodies["/clone"] == {"source": "node2"}


def test_a_round_while_the_heartbeat_waits_shares_it(config: Config) -> None:
    calls = 0

    def agent(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return httpx.Response(200, json=ANSWER)

    node = driver(config, agent)

    async def two_rounds() -> None:
        await asyncio.gather(node.heartbeat(), node.heartbeat())

    asyncio.run(two_rounds())
    assert calls == 1


def test_a_fence_the_caller_stopped_waiting_for_still_reaches_the_agent(config: Config) -> None:
    delivered: list[str] = []

    def slow_agent(request: httpx.Request) -> httpx.Response:
        time.sleep(0.2)
        delivered.append(request.url.path)
        return httpx.Response(200, json={"status": "success", "detail": "stopped"})

    node = driver(config, slow_agent)

    async def give_up_then_wait() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(node.fence(), 0.05)
        await asyncio.sleep(0.4)

    asyncio.run(give_up_then_wait())
    assert delivered == ["/fence"]


def test_the_peers_health_is_asked_without_the_token(config: Config) -> None:
    seen: list[httpx.Request] = []

    def peer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok", "node": "node2", "peer_reachable": True})

    service = AgentService(config, "node1")
    assert service.peer_agent is not None
    client = service.peer_agent.client
    mocked = AgentClient(
        client.url, client.token, None, client.holder, transport=httpx.MockTransport(peer)
    )
    watch = PeerAgentWatch(mocked, service.peer_agent.interval, service.peer_agent.timeout)
    asyncio.run(watch._once())
    assert seen[0].url == "https://10.0.0.12:8089/health"
    assert "authorization" not in seen[0].headers
    assert seen[0].extensions["timeout"]["connect"] == config.cluster.probe_timeout
    assert watch.answer.ever and watch.answer.error is None
