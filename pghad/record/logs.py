"""structlog setup: JSON lines by default, console format on a terminal, secrets scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class ScrubSecrets:
    """Replace any known secret inside any string value with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._clean(value)
        return event_dict


# The scrubber of the last configure(): events bound for the journal, Redis and API answers go
# through it as log lines do (structlog's own configuration is process-wide as well).
_scrubber = ScrubSecrets(())


def scrub(value: Any) -> Any:
    """`value` (a string, or a dict or list of them) with every configured secret replaced."""
    return _scrubber._clean(value)


def configure(fmt: str = "auto", level: str = "info", secrets: Iterable[str] = ()) -> None:
    global _scrubber  # noqa: PLW0603 -- one scrubber per process, like structlog's configuration
    _scrubber = ScrubSecrets(secrets)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
