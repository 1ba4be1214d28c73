"""`pghad agent --config FILE [--node NAME]`: serve the agent API until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from pathlib import Path

import structlog
import uvicorn

from pghad import logs
from pghad.api_guard import ACCEPT_BACKLOG, BoundedH11Protocol, is_loopback
from pghad.config import Config, load_config
from pghad.errors import ConfigError

from .app import build_agent_app
from .service import AgentService

log = structlog.get_logger("pghad.agent")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # run_agent owns the signals


def check_agent_config(config: Config, source: Path, node: str | None) -> str:
    """The node this agent runs; a clear error for what would make it unsafe to start."""
    agent = config.agent
    name = node or agent.node
    if name is None:
        raise ConfigError(f"{source}: agent.node is not set: name this host's node (or --node)")
    if not is_loopback(agent.bind) and not agent.token:
        raise ConfigError(
            f"{source}: agent.bind = {agent.bind!r} is not a loopback address and agent.token "
            "is empty: set a token (or PGHAD_AGENT_TOKEN) before exposing the agent"
        )
    if (agent.tls_cert is None) != (agent.tls_key is None):
        raise ConfigError(f"{source}: agent.tls_cert and agent.tls_key go together: set both")
    return name


async def serve(service: AgentService) -> None:
    agent = service.config.agent
    config = uvicorn.Config(
        build_agent_app(service),
        host=agent.bind,
        port=agent.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=BoundedH11Protocol,
        backlog=ACCEPT_BACKLOG,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(agent.tls_cert) if agent.tls_cert else None,
        ssl_keyfile=str(agent.tls_key) if agent.tls_key else None,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
    service.start()
    scheme = "https" if agent.tls_cert else "http"
    log.info("agent_started", node=service.node.name, url=f"{scheme}://{agent.bind}:{agent.port}")
    try:
        await server.serve()
    finally:
        await service.stop()
        log.info("agent_stopped", node=service.node.name)


def run_agent(config_path: Path, node: str | None) -> int:
    config = load_config(config_path)
    name = check_agent_config(config, config_path, node)
    secrets = [config.auth.password, config.auth.replication_password, config.agent.token]
    logs.configure(config.log.format, config.log.level, secrets)
    asyncio.run(serve(AgentService(config, name)))
    return 0
