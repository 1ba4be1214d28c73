"""structlog setup: JSON lines by default, console format on a terminal, secrets scrubbed.

The processors that stamp, level and scrub a log line are the ones every event goes through
too (pghad.record.event_sink): one chain, whose result is written to the log, the journal and
the Redis stream.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import structlog

EventProcessor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# A password in a libpq key/value string (password=x, password = 'x y', PGPASSWORD=x) and in
# a URL's user part (postgresql://u:x@h, redis://:x@h): hidden even when it is not the config's.
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s/@]+@", re.IGNORECASE)


class ScrubSecrets:
    """Replace any known secret, and any password a connection string or URL spells out,
    inside any string value with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "***")
            value = _KEYWORD_PASSWORD.sub(r"\1***", value)
            return _URL_PASSWORD.sub(r"\1***@", value)
        if isinstance(value, dict):
            return {k: self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self.clean(value)
        return event_dict


_stamp_now = structlog.processors.TimeStamper(fmt="iso", utc=True)


def add_timestamp(
    logger: Any, name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """ISO 8601 in UTC; an event already stamped keeps its instant (its journal entry's)."""
    if "timestamp" in event_dict:
        return event_dict
    return _stamp_now(logger, name, event_dict)


def processors(scrubber: ScrubSecrets) -> list[EventProcessor]:
    """Level, timestamp, secrets scrubbed: what every log line and every event goes through."""
    return [structlog.processors.add_log_level, add_timestamp, scrubber]


# The scrubber of the last configure(): API answers go through it as log lines do (structlog's
# own configuration is process-wide as well).
_scrubber = ScrubSecrets(())


def scrub(value: Any) -> Any:
    """`value` (a string, or a dict or list of them) with every configured secret replaced."""
    return _scrubber.clean(value)


def configure(fmt: str = "auto", level: str = "info", secrets: Iterable[str] = ()) -> None:
    global _scrubber  # noqa: PLW0603 -- one scrubber per process, like structlog's configuration
    _scrubber = ScrubSecrets(secrets)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *processors(_scrubber), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
