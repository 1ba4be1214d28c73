"""Role-change hooks: a program the operator names runs when a node changes role (to move a
virtual IP, reconfigure a pooler). It runs off the loop, with a time limit, and is logged.

Events: promote (PGHAD_ROLE=primary), demote (the former primary; PGHAD_ROLE=former_primary),
fence (PGHAD_ROLE=fenced) and rejoin (PGHAD_ROLE=standby).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pghad.act.executor import Outcome
from pghad.act.procedures import OperationResult
from pghad.config.model import Config
from pghad.decide.model import Fence, Promote, Rejoin
from pghad.errors import NodeError
from pghad.record.recorder import Recorder
from pghad.system.commands import run_command


class Hooks:
    def __init__(self, recorder: Recorder, spawn: Callable[[Awaitable[None]], None]) -> None:
        self.recorder = recorder
        self.spawn = spawn

    def after_outcome(self, config: Config, outcome: Outcome) -> None:
        if not outcome.ok:
            return
        match outcome.action:
            case Promote():
                self.fire(config, "promote", outcome.node, "primary")
                if outcome.action.old_primary:
                    self.fire(config, "demote", outcome.action.old_primary, "former_primary")
            case Fence():
                self.fire(config, "fence", outcome.node, "fenced")
            case Rejoin():
                self.fire(config, "rejoin", outcome.node, "standby")

    def after_operation(self, config: Config, result: OperationResult) -> None:
        self.fire(config, "promote", result.new_primary, "primary")
        if result.old_primary:
            self.fire(config, "demote", result.old_primary, "former_primary")

    def fire(self, config: Config, event: str, node: str, role: str) -> None:
        if config.hooks.command:
            self.spawn(self._run(config, event, node, role))

    async def _run(self, config: Config, event: str, node: str, role: str) -> None:
        env = {
            "PGHAD_EVENT": event,
            "PGHAD_NODE": node,
            "PGHAD_ROLE": role,
            "PGHAD_CLUSTER": config.cluster.name,
        }
        started = time.monotonic()
        try:
            result = await run_command(list(config.hooks.command), config.hooks.timeout_s, env)
            code: int | None = result.returncode
            output = (result.stdout + result.stderr).strip()[-500:]
        except (NodeError, OSError) as exc:  # timed out, or the program cannot be run
            code, output = None, str(exc)
        ok = code == 0
        self.recorder.event(
            "hook",
            level="info" if ok else "error",
            hook_event=event,
            node=node,
            role=role,
            returncode=code,
            duration_s=round(time.monotonic() - started, 3),
            output=output,
        )
        self.recorder.metrics.hooks.labels(event, "ok" if ok else "failed").inc()
