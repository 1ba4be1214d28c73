"""When the agent last heard the daemon and its peer, kept across a restart of the agent.

An agent restarted while its host is cut off must fence on the silence that began before it
started, not on a fresh count: the daemon counts its threshold from its own last contact. The
times are CLOCK_BOOTTIME readings, valid for this boot only (the file lives in a runtime
directory, /run by default, which a reboot empties; the boot id is checked as well).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from pghad.config.model import NodeConfig
from pghad.system.trust import untrusted_component

log = structlog.get_logger("pghad.agent")
WRITE_EVERY_S = 0.5
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def contact_path(run_dir: Path, node: NodeConfig) -> Path:
    """One file per server this host runs (several clusters may share a host)."""
    key = hashlib.sha256(str(node.data_dir).encode()).hexdigest()[:12]
    return run_dir / f"{node.name}-{key}.json"


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class ContactFile:
    path: Path | None
    _written_at: float = 0.0
    _warned: bool = False

    def load(self) -> dict[str, float]:
        """Monotonic times of the last contacts before this start (only those of this boot)."""
        if self.path is None:
            return {}
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd) as handle:
                data = json.loads(handle.read(4096))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("boot_id") != _boot_id():
            return {}
        offset = time.monotonic() - boottime()
        return {
            who: float(at) + offset
            for who, at in data.items()
            if who in ("daemon", "peer") and isinstance(at, int | float) and at <= boottime()
        }

    def save(self, daemon: float | None, peer: float | None) -> None:
        """Record the last contacts (monotonic times), at most every WRITE_EVERY_S."""
        now = time.monotonic()
        if self.path is None or now - self._written_at < WRITE_EVERY_S:
            return
        self._written_at = now
        offset = boottime() - now
        data: dict[str, object] = {"boot_id": _boot_id()}
        for who, at in (("daemon", daemon), ("peer", peer)):
            if at is not None:
                data[who] = round(at + offset, 3)
        tmp = self.path.with_name(self.path.name + ".tmp")
        problem = untrusted_component(self.path.parent)
        if problem is not None:  # root writes nowhere another user could redirect
            self._warn(f"{problem}: use a directory only this user can write")
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(data))
            tmp.replace(self.path)
        except OSError as exc:
            self._warn(str(exc))

    def _warn(self, error: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("contact_not_kept", path=str(self.path), error=error)
