"""SIGHUP reload: which settings apply at run time and which need a restart."""

from __future__ import annotations

from typing import Any

from pghad.config.model import Config, require_api_token, validate_config
from pghad.errors import ConfigError

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
RESTART_NOTE = (
    "on reload, nodes, pg_bin, the API's address, the state directory, Redis and the cluster "
    "name keep their running values: they change with a restart"
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
    """The config to run with now, and the changed settings that wait for a restart.

    The merged config is validated whole, as at start: the running values of restart-only
    settings put into the new file's, then every rule of the model checked again.
    """
    needs_restart = changed(running, new, RESTART_ONLY)
    merged: dict[str, Any] = new.model_dump()
    kept = running.model_dump()
    for dotted in RESTART_ONLY:
        *tables, key = dotted.split(".")
        target, source = merged, kept
        for table in tables:
            target, source = target[table], source[table]
        target[key] = source[key]
    try:
        config = validate_config(merged, "reloaded config")
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n({RESTART_NOTE})") from exc
    require_api_token(config, "reloaded config")
    return config, needs_restart
