"""The wall clock, in one place, so that code taking time as an argument has a default."""

from __future__ import annotations

from datetime import datetime


def local_now() -> datetime:
    """Now, in the host's time zone: the backup calendar's days are the operator's days."""
    return datetime.now().astimezone()
