"""SIGHUP reload: which settings apply at run time and which need a restart."""

from __future__ import annotations

from pghad.config.model import Config
from pghad.errors import ConfigError
from pghad.system.net import is_loopback

# Settings bound at start: sockets, drivers, files, clients.
RESTART_ONLY = (
    "nodes",
    "pg_bin",
    "api.bind",
    "api.port",
    "state.dir",
    "redis.url",
    "redis.key_prefix",
    "cluster.name",  # every Redis hash carries it: a new name would disown the old ones
)


def _setting(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def changed(running: Config, new: Config, settings: tuple[str, ...]) -> list[str]:
    """Which of `settings` ("section.key", or a whole section) differ between the two."""
    return [key for key in settings if _setting(new, key) != _setting(running, key)]


def merge_reloaded(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The config to run with now, and the changed settings that wait for a restart."""
    needs_restart = changed(running, new, RESTART_ONLY)
    merged = new.model_copy(
        update={
            "nodes": running.nodes,
            "pg_bin": running.pg_bin,
            "api": new.api.model_copy(update={"bind": running.api.bind, "port": running.api.port}),
            "state": new.state.model_copy(update={"dir": running.state.dir}),
            "redis": running.redis,
            "cluster": new.cluster.model_copy(update={"name": running.cluster.name}),
        }
    )
    if not is_loopback(merged.api.bind) and not merged.api.token:
        # The rule checked at start holds on reload too: an empty token would open the API.
        raise ConfigError(
            f"api.token is empty while the API is bound to {merged.api.bind!r}, not a loopback "
            "address: keep a token (or PGHAD_API_TOKEN) set"
        )
    names = [node.name for node in running.nodes]
    preferred = merged.cluster.preferred_primary
    if preferred is not None and preferred not in names:
        raise ConfigError(
            f"cluster.preferred_primary {preferred!r} is not one of the running nodes {names} "
            "(nodes change only with a restart)"
        )
    return merged, needs_restart
