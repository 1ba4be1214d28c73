"""`pghad agent --config FILE [--node NAME]`: serve the agent API until SIGTERM or SIGINT; SIGHUP
reloads what can change while it runs."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog

from pghad.agent.app import build_agent_app
from pghad.agent.service import AgentService
from pghad.api.limits import BoundedServer, bounded_config
from pghad.config.model import Config, load_config, validate_config
from pghad.config.reload import changed
from pghad.errors import ConfigError
from pghad.record import logs
from pghad.system.net import is_loopback

GRACEFUL_SHUTDOWN_S = 5  # requests under way at a stop get this long

log = structlog.get_logger("pghad.agent")
# Bound when the agent starts: its socket and TLS, the cluster's nodes and passwords (the driver
# and the watches hold them), and its check cadence. Its failover timing comes from the daemon.
RESTART_ONLY = ("agent.bind", "agent.port", "agent.tls_cert", "agent.tls_key",
                "agent.peer_interval", "nodes", "auth")  # fmt: skip


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


def _secrets(config: Config) -> list[str]:
    return [config.auth.password, config.auth.replication_password, config.agent.token]


async def reload_agent(service: AgentService, config_path: Path) -> None:
    """SIGHUP: the token and the log settings apply at once; the rest is named as waiting for a
    restart. A config that does not load, or would be unsafe, changes nothing."""
    running = service.config
    try:
        new = await asyncio.to_thread(load_config, config_path)
        check_agent_config(new, config_path, service.node.name)
        token = new.agent.token
        # Only the token and the log settings apply at run time; validated whole, as at start.
        merged = running.model_dump()
        merged["agent"]["token"] = token
        merged["log"] = new.log.model_dump()
        reloaded = validate_config(merged, str(config_path))
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept="running config")
        return
    waiting = changed(running, new, RESTART_ONLY)
    service.config = reloaded
    logs.configure(new.log.format, new.log.level, [*_secrets(running), token])
    log.info("config_reloaded", node=service.node.name, needs_restart=waiting)


async def serve(service: AgentService, config_path: Path) -> None:
    agent = service.config.agent
    config = bounded_config(
        build_agent_app(service),
        lambda: service.config.agent.token,
        host=agent.bind,
        port=agent.port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ssl_certfile=str(agent.tls_cert) if agent.tls_cert else None,
        ssl_keyfile=str(agent.tls_key) if agent.tls_key else None,
    )
    server = BoundedServer(config)  # run_agent owns the signals
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = asyncio.create_task(reload_agent(service, config_path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
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
    logs.configure(config.log.format, config.log.level, _secrets(config))
    asyncio.run(serve(AgentService(config, name), config_path))
    return 0
