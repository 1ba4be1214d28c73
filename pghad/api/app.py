"""The HTTP control API, served by the daemon in its own event loop (FastAPI + uvicorn).

Handlers never touch PostgreSQL themselves: they read the daemon's last snapshot, or submit an
operation to the daemon and report its outcome.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pghad.act import requests as ops
from pghad.act.procedures import OperationResult
from pghad.api.control import Control
from pghad.api.guard import RequestGuard
from pghad.api.limits import ACCEPT_BACKLOG, BoundedServer, bounded_config
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.planner import Requested
from pghad.config.model import require_api_token
from pghad.errors import OperationRefused, PghadError, SetupError
from pghad.record import logs

COMMANDS = (
    ("GET", "/", "this list"),
    ("GET", "/status", "cluster state, every node's role, LSNs and lag"),
    ("GET", "/events?limit=20", "recent decisions and actions with their reasons"),
    ("GET", "/health", "liveness: 200 while the loop is probing"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("POST", "/failover", "make the standby the primary (?force=true when it is not eligible)"),
    ("POST", "/switchover", "planned swap, only when both nodes are healthy"),
    ("POST", "/failback", "make the preferred node the primary again"),
    ("POST", "/pause", "maintenance mode: no automatic action until /resume"),
    ("POST", "/resume", "end maintenance mode"),
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


def _control(request: Request) -> Control:
    control: Control = request.app.state.control
    return control


ControlDep = Annotated[Control, Depends(_control)]
OPEN_PATHS = ("/", "/health", "/metrics")


def _token_ok(control: Control, request: Request) -> bool:
    token = control.config.api.token
    given = request.headers.get("authorization", "")
    return not token or hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def require_token(control: ControlDep, request: Request) -> None:
    if not _token_ok(control, request):
        raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")


router = APIRouter()
authorized = [Depends(require_token)]


async def _run(control: Control, request: ops.Request) -> Any:
    try:
        return await control.submit(request)
    except OperationRefused as exc:
        raise ApiError(409, str(exc)) from exc
    except PghadError as exc:
        raise ApiError(500, f"operation failed: {exc}") from exc
    except Exception as exc:  # recorded as operation_failed by the loop; answered as JSON
        raise ApiError(500, f"operation failed unexpectedly: {type(exc).__name__}: {exc}") from exc


@router.get("/", summary="Available commands")
async def index(control: ControlDep) -> dict[str, Any]:
    api = control.config.api
    base = f"http://{api.bind}:{api.port}"
    auth = ' -H "Authorization: Bearer $PGHAD_API_TOKEN"' if api.token else ""
    commands = []
    for method, path, text in COMMANDS:
        post = method == "POST"
        curl = f"curl{' -X POST' + auth if post else ''} '{base}{path}'"
        commands.append({"method": method, "path": path, "description": text, "curl": curl})
    message = f"pghad control API for cluster {control.config.cluster.name}"
    return {"status": "success", "message": message, "commands": commands}


@router.get("/status", summary="Cluster status")
async def status(control: ControlDep) -> dict[str, Any]:
    answer: dict[str, Any] = logs.scrub(control.status())  # node errors may quote a conninfo
    return answer


@router.get("/events", summary="Recent decisions and actions")
async def events(
    control: ControlDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    return {"status": "success", "events": await asyncio.to_thread(control.events, limit)}


@router.get("/health", summary="Liveness")
async def health(control: ControlDep) -> JSONResponse:
    ok, reason = control.health()
    body = {"status": "success" if ok else "error", "message": reason}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(control: ControlDep) -> Response:
    return Response(control.metrics_text(), media_type="text/plain; version=0.0.4")


@router.post("/failover", dependencies=authorized, summary="Fail over to the standby")
async def failover(control: ControlDep, force: bool = False) -> dict[str, Any]:
    return success_body(await _run(control, ops.Failover(force)))


@router.post("/switchover", dependencies=authorized, summary="Planned switchover")
async def switchover(control: ControlDep) -> dict[str, Any]:
    return success_body(await _run(control, ops.Switchover()))


@router.post("/failback", dependencies=authorized, summary="Return to the preferred primary")
async def failback(control: ControlDep) -> dict[str, Any]:
    return success_body(await _run(control, ops.Failback()))


async def _set_paused(control: Control, paused: bool) -> bool:
    try:
        return await control.set_paused(paused)
    except OSError as exc:
        raise ApiError(500, str(exc)) from exc


@router.post("/pause", dependencies=authorized, summary="Maintenance mode on")
async def pause(control: ControlDep) -> dict[str, Any]:
    changed = await _set_paused(control, True)
    message = "paused: no automatic action until resume" if changed else "already paused"
    return {"status": "success", "message": message, "paused": True}


@router.post("/resume", dependencies=authorized, summary="Maintenance mode off")
async def resume(control: ControlDep) -> dict[str, Any]:
    changed = await _set_paused(control, False)
    message = "resumed: automatic actions again" if changed else "was not paused"
    return {"status": "success", "message": message, "paused": False}


@router.get("/backups", summary="Backups with chain, size and status")
async def list_backups(control: ControlDep) -> dict[str, Any]:
    records = await control.backups()
    return {"status": "success", "backups": [r.to_dict() for r in records]}


@router.post("/backups", dependencies=authorized, summary="Take a backup now")
async def take_backup(control: ControlDep, kind: Requested = Requested.AUTO) -> JSONResponse:
    record: BackupRecord = await _run(control, ops.TakeBackup(kind))
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
    headers = dict(exc.headers or {})
    return JSONResponse(error_body(message), status_code=exc.status_code, headers=headers)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'query')}: {e['msg']}" for e in exc.errors()
    ]
    return JSONResponse(error_body("bad request: " + "; ".join(problems)), status_code=422)


def build_app(control: Control) -> FastAPI:
    app = FastAPI(
        title="pghad control API",
        description="Status and control of a PostgreSQL primary/standby pair.",
        version="0.1.0",
    )
    app.state.control = control
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    api = control.config.api
    guard = RequestGuard(
        api.bind,
        api.port,
        api.allowed_hosts,
        open_paths=OPEN_PATHS,
        token_ok=lambda request: _token_ok(control, request),
    )
    app.middleware("http")(guard)
    return app


class ApiServer:
    def __init__(self, control: Control) -> None:
        require_api_token(control.config, "api")  # checked at start too: never serve without it
        self.control = control
        self.socket: socket.socket | None = None
        # The daemon owns SIGTERM/SIGINT/SIGHUP: it stops the API itself, after the current round.
        self.server = BoundedServer(
            bounded_config(build_app(control), lambda: control.config.api.token)
        )

    def bind(self) -> None:
        api = self.control.config.api
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
        sock.listen(ACCEPT_BACKLOG)
        sock.setblocking(False)
        self.socket = sock

    async def serve(self) -> None:
        assert self.socket is not None
        await self.server.serve(sockets=[self.socket])

    def shutdown(self) -> None:
        self.server.should_exit = True
