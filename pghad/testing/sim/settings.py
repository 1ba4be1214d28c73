"""pghad as the simulation runs it: its config file, and its logging kept quiet."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from pghad.testing.fakes import scratch_config_text
from pghad.testing.sim.schedule import NODES, Schedule

RELAX_AFTER_S = 3.0
PROBE_INTERVAL_S = 1.0


def fence_after(schedule: Schedule) -> float:
    return 0.75 * schedule.threshold  # pghad's default: agent.self_fence_after unset


def config_text(state_dir: Path, schedule: Schedule) -> str:
    nodes = ""
    for index, name in enumerate(NODES, start=1):
        nodes += f'\n[[nodes]]\nname = "{name}"\nhost = "10.0.0.{index}"\n'
        nodes += f'data_dir = "/sim/{name}"\n'
        if schedule.agents:
            nodes += f'driver = "agent"\nagent_url = "http://10.0.0.{index}:8089"\n'
    cluster = (
        f"failover_threshold = {schedule.threshold}\n"
        f"sync_relax_after = {RELAX_AFTER_S}\n"
        f"probe_interval = {PROBE_INTERVAL_S}"
    )
    return scratch_config_text(state_dir, cluster, nodes)


def _drop(_logger: object, _name: str, _event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    raise structlog.DropEvent


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The daemon's log lines are not the simulation's output (its journal is still written)."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[_drop], wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
    )
    try:
        yield
    finally:
        structlog.configure(**saved)
