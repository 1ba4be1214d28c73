"""The HTTP control API, served by the daemon in its own event loop (FastAPI + uvicorn).

Handlers never touch PostgreSQL themselves: they read the daemon's last snapshot, or submit an
operation to the daemon and report its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Generator
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pghad.backup.model import BackupStatus
from pghad.backup.planner import Requested
from pghad.cluster.observation import format_lsn
from pghad.cluster.procedures import OperationResult
from pghad.daemon import Daemon
from pghad.errors import OperationRefused, PghadError, SetupError

COMMANDS = (
    ("GET", "/", "this list"),
    ("GET", "/status", "cluster state, every node's role, LSNs and lag"),
    ("GET", "/events?limit=20", "recent decisions and actions with their reasons"),
    ("GET", "/health", "liveness: 200 while the loop is probing"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("POST", "/failover", "make the standby the primary (?force=true when it is not eligible)"),
    ("POST", "/switchover", "planned swap, only when both nodes are healthy"),
    ("POST", "/failback", "make the preferred node the primary again"),
    ("GET", "/backups", "backups with chain, size and status"),
    ("POST", "/backups?kind=auto", "take a backup now (kind: auto, full or incremental)"),
    ("GET", "/docs", "OpenAPI documentation"),
)


class ApiError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_body(message: str, **details: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, **details}


def success_body(result: OperationResult) -> dict[str, Any]:
    return {
        "status": "success",
        "message": result.message,
        "operation": result.operation,
        "new_primary": result.new_primary,
        "old_primary": result.old_primary,
        "duration_s": result.duration_s,
        **result.details,
    }


def node_status(daemon: Daemon) -> list[dict[str, Any]]:
    memory, view = daemon.memory, daemon.view
    nodes = []
    for node in daemon.config.nodes:
        obs = view.nodes.get(node.name)
        reachable = bool(obs and obs.reachable)
        if not reachable:
            role = "fenced" if node.name in memory.needs_rejoin else "down"
        else:
            role = "standby" if obs and obs.in_recovery else "primary"
        entry: dict[str, Any] = {
            "name": node.name,
            "address": node.address,
            "role": role,
            "reachable": reachable,
        }
        if obs is not None and reachable:
            primary = memory.primary if memory.primary in view.nodes else None
            replica = view[primary].replica(node.name) if primary else None
            lag = view.lag_bytes(primary, node.name) if primary else None
            entry.update(
                timeline=obs.timeline,
                current_lsn=format_lsn(obs.current_lsn),
                receive_lsn=format_lsn(obs.receive_lsn),
                replay_lsn=format_lsn(obs.replay_lsn),
                replay_lag_s=obs.replay_lag_s if obs.in_recovery else None,
                replay_lag_bytes=lag if obs.in_recovery else None,
                sync_state=replica.sync_state if replica else None,
            )
        elif obs is not None:
            entry["error"] = obs.error
        nodes.append(entry)
    return nodes


def _daemon(request: Request) -> Daemon:
    daemon: Daemon = request.app.state.daemon
    return daemon


DaemonDep = Annotated[Daemon, Depends(_daemon)]


def require_token(daemon: DaemonDep, request: Request) -> None:
    token = daemon.config.api.token
    if not token:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")


router = APIRouter()
authorized = [Depends(require_token)]


async def _run(operation: Awaitable[OperationResult]) -> dict[str, Any]:
    try:
        result = await operation
    except OperationRefused as exc:
        raise ApiError(409, str(exc)) from exc
    except PghadError as exc:
        raise ApiError(500, f"operation failed: {exc}") from exc
    return success_body(result)


@router.get("/", summary="Available commands")
async def index(daemon: DaemonDep) -> dict[str, Any]:
    base = f"http://{daemon.config.api.bind}:{daemon.config.api.port}"
    auth = ' -H "Authorization: Bearer $PGHAD_API_TOKEN"' if daemon.config.api.token else ""
    commands = []
    for method, path, text in COMMANDS:
        post = method == "POST"
        curl = f"curl{' -X POST' + auth if post else ''} {base}{path}"
        commands.append({"method": method, "path": path, "description": text, "curl": curl})
    message = f"pghad control API for cluster {daemon.config.cluster.name}"
    return {"status": "success", "message": message, "commands": commands}


@router.get("/status", summary="Cluster status")
async def status(daemon: DaemonDep) -> dict[str, Any]:
    decision = daemon.last_decision
    return {
        "status": "success",
        "cluster": daemon.config.cluster.name,
        "state": daemon.memory.state.value,
        "primary": daemon.memory.primary,
        "preferred_primary": daemon.config.preferred_primary,
        "standby_eligible": daemon.memory.standby_eligible,
        "decision": {"code": decision.code, "reason": decision.reason} if decision else None,
        "operation": daemon.running_operation(),
        "last_failover": daemon.history[-1] if daemon.history else None,
        "nodes": node_status(daemon),
    }


@router.get("/events", summary="Recent decisions and actions")
async def events(
    daemon: DaemonDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    return {"status": "success", "events": daemon.sink.journal.read(limit)}


@router.get("/health", summary="Liveness")
async def health(daemon: DaemonDep) -> JSONResponse:
    ok, reason = daemon.health()
    body = {"status": "success" if ok else "error", "message": reason}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(daemon: DaemonDep) -> Response:
    return Response(daemon.metrics.render(), media_type="text/plain; version=0.0.4")


@router.post("/failover", dependencies=authorized, summary="Fail over to the standby")
async def failover(daemon: DaemonDep, force: bool = False) -> dict[str, Any]:
    return await _run(daemon.failover(force))


@router.post("/switchover", dependencies=authorized, summary="Planned switchover")
async def switchover(daemon: DaemonDep) -> dict[str, Any]:
    return await _run(daemon.switchover())


@router.post("/failback", dependencies=authorized, summary="Return to the preferred primary")
async def failback(daemon: DaemonDep) -> dict[str, Any]:
    return await _run(daemon.failback())


@router.get("/backups", summary="Backups with chain, size and status")
async def list_backups(daemon: DaemonDep) -> dict[str, Any]:
    records = await asyncio.to_thread(daemon.backups.catalog.records)
    return {"status": "success", "backups": [r.to_dict() for r in records]}


@router.post("/backups", dependencies=authorized, summary="Take a backup now")
async def take_backup(daemon: DaemonDep, kind: Requested = Requested.AUTO) -> JSONResponse:
    try:
        record = await daemon.backups.run_now(kind)
    except OperationRefused as exc:
        raise ApiError(409, str(exc)) from exc
    ok = record.status is BackupStatus.OK
    message = f"{record.kind.value} backup {record.id} " + (
        f"taken ({record.reason})" if ok else f"failed: {record.error}"
    )
    body = {"status": "success" if ok else "error", "message": message, "backup": record.to_dict()}
    return JSONResponse(body, status_code=200 if ok else 500)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc.message), status_code=exc.status_code)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint {request.url.path}: GET / lists the commands"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: GET / lists the commands"
    return JSONResponse(error_body(message), status_code=exc.status_code)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'query')}: {e['msg']}" for e in exc.errors()
    ]
    return JSONResponse(error_body("bad request: " + "; ".join(problems)), status_code=422)


def build_app(daemon: Daemon) -> FastAPI:
    app = FastAPI(
        title="pghad control API",
        description="Status and control of a PostgreSQL primary/standby pair.",
        version="0.1.0",
    )
    app.state.daemon = daemon
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns SIGTERM/SIGINT/SIGHUP: it stops the API itself, after the current round.
        yield


class ApiServer:
    def __init__(self, daemon: Daemon) -> None:
        api = daemon.config.api
        if not is_loopback(api.bind) and not api.token:
            raise SetupError(
                f"api.bind = {api.bind!r} is not a loopback address and api.token is empty: set a "
                "token (or PGHAD_API_TOKEN) before exposing the control API"
            )
        self.daemon = daemon
        self.socket: socket.socket | None = None
        config = uvicorn.Config(
            build_app(daemon), log_config=None, access_log=False, lifespan="off"
        )
        self.server = _Server(config)

    def bind(self) -> None:
        api = self.daemon.config.api
        family = socket.AF_INET6 if ":" in api.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((api.bind, api.port))
        except OSError as exc:
            sock.close()
            raise SetupError(
                f"cannot listen on {api.bind}:{api.port} ({exc.strerror}): set api.port to a "
                "free port"
            ) from exc
        sock.listen(64)
        sock.setblocking(False)
        self.socket = sock

    async def serve(self) -> None:
        assert self.socket is not None
        await self.server.serve(sockets=[self.socket])

    def shutdown(self) -> None:
        self.server.should_exit = True
