"""The agent's HTTP API: health checks for load balancers, and the node's process work for the
daemon holding the lease.

Open: GET /health, /primary, /replica (200 or 503, for HAProxy). Everything else needs the
token; changes also need the lease holder's id in X-Pghad-Holder while a lease is live.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from pghad.agent.service import AgentService
from pghad.errors import NodeError, PghadError
from pghad.nodes.agent_api import (
    AgentErrorBody,
    CheckpointLsn,
    Control,
    Done,
    Fenced,
    Health,
    Heartbeat,
    HeartbeatAnswer,
    PrimaryCheck,
    Process,
    ReplicaCheck,
    Source,
    Start,
    Stop,
)

router = APIRouter()


def _service(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


Service = Annotated[AgentService, Depends(_service)]


class AgentError(Exception):
    def __init__(self, status: int, message: str, **details: str | None) -> None:
        super().__init__(message)
        self.status, self.details = status, details


def require_token(service: Service, authorization: Annotated[str, Header()] = "") -> None:
    token = service.config.agent.token
    if token and not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        raise AgentError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")


def require_lease(service: Service, x_pghad_holder: Annotated[str | None, Header()] = None) -> None:
    lease = service.lease
    if not lease.allows(x_pghad_holder, time.monotonic()):
        raise AgentError(
            409,
            f"another pghad (on {lease.host}) holds this agent's lease: only it may change "
            f"{service.node.name}",
            holder=lease.holder,
            host=lease.host,
        )


authorized = [Depends(require_token)]
changes = [Depends(require_token), Depends(require_lease)]


@router.get("/health")
async def health(service: Service) -> Health:
    now = time.monotonic()
    # Whether this host reaches the other node's server: that node's agent counts this host as
    # present only while it does (a partial cut must not keep a primary from fencing itself).
    return Health(node=service.node.name, peer_reachable=service.peer_view(now).reachable)


@router.get("/primary")
async def primary(service: Service) -> JSONResponse:
    """200 while this node is a writable primary (HAProxy: option httpchk GET /primary)."""
    ok = service.writable and service.self_fenced is None
    body = PrimaryCheck(node=service.node.name, primary=ok)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/replica")
async def replica(service: Service) -> JSONResponse:
    ok = service.streaming_replica
    body = ReplicaCheck(node=service.node.name, replica=ok)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.post("/heartbeat", dependencies=authorized)
async def heartbeat(service: Service, beat: Heartbeat) -> HeartbeatAnswer:
    """The daemon's round: renew its lease; answer the server's state and the other node as
    this host sees it (the daemon's second witness)."""
    now = time.monotonic()
    if not service.lease.renew(beat.holder, beat.host, now, beat.ttl):
        lease = service.lease
        raise AgentError(
            409,
            f"another pghad (on {lease.host}) holds this agent's lease",
            holder=lease.holder,
            host=lease.host,
        )
    if beat.self_fence_after is not None:
        service.follow_timing(beat.self_fence_after)
    return HeartbeatAnswer(
        node=service.node.name,
        server=await service.server_state(),
        writable=service.writable,
        serving=service.serving(now),
        self_fenced=service.self_fenced,
        fenced_isolated=service.self_fenced is not None and service.fenced_isolated,
        self_fence_after=service.self_fence_after,
        peer=service.peer_view(now),
    )


@router.get("/process", dependencies=authorized)
async def process(service: Service) -> Process:
    return Process(running=await service.driver.is_running(), server=await service.server_state())


@router.post("/start", dependencies=changes)
async def start(service: Service, body: Start) -> Done:
    primary = service.config.node(body.primary) if body.primary else None
    await service.driver.start(body.role, primary)
    return Done()


@router.post("/stop", dependencies=changes)
async def stop(service: Service, body: Stop) -> Done:
    await service.driver.stop(body.mode)
    return Done()


@router.post("/fence", dependencies=changes)
async def fence(service: Service) -> Fenced:
    return Fenced(detail=await service.driver.fence())


@router.post("/rewind", dependencies=changes)
async def rewind(service: Service, body: Source) -> Done:
    await service.driver.rewind(service.config.node(body.source))
    return Done()


@router.post("/clone", dependencies=changes)
async def clone(service: Service, body: Source) -> Done:
    await service.driver.clone(service.config.node(body.source))
    return Done()


@router.get("/checkpoint_lsn", dependencies=authorized)
async def checkpoint_lsn(service: Service) -> CheckpointLsn:
    return CheckpointLsn(lsn=await service.driver.checkpoint_lsn())


@router.get("/control", dependencies=authorized)
async def control(service: Service) -> Control:
    """The stopped server's pg_control: how it stopped, its timeline and checkpoint."""
    return Control(**dataclasses.asdict(await service.driver.control_data()))


async def _agent_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentError)
    body = AgentErrorBody(status="error", message=str(exc), **exc.details)
    # A lease refusal alone names the holder: its presence is what the client reads.
    return JSONResponse(body.model_dump(exclude_unset=True), status_code=exc.status)


async def _node_error(_request: Request, exc: Exception) -> JSONResponse:
    status = 502 if isinstance(exc, NodeError) else 500
    return JSONResponse(AgentErrorBody(message=str(exc)).model_dump(), status_code=status)


def build_agent_app(service: AgentService) -> FastAPI:
    app = FastAPI(title="pghad agent", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.include_router(router)
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(PghadError, _node_error)

    @app.middleware("http")
    async def no_browsers(request: Request, call_next: Any) -> Any:
        if request.headers.get("origin") is not None:  # a web page the operator visits
            return JSONResponse({"status": "error", "message": "refused"}, status_code=403)
        return await call_next(request)

    return app
