"""A small client of the control API for the CLI."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from pghad.errors import PghadError
from pghad.system.net import unreachable_reason


class ApiCallFailed(PghadError):
    """The API answered with an error, or could not be reached."""


class ApiUnreachable(ApiCallFailed):
    """Nothing answers at the API address (the daemon is not running there)."""


def _decoded(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


class ApiClient:
    def __init__(
        self, base_url: str, token: str = "", timeout: float = 300.0, source: str | None = None
    ) -> None:
        """`source`: the config file the address and token came from (named in errors)."""
        self.base_url = base_url.rstrip("/")
        self.source = f" (address and token from {source})" if source else ""
        self.token = token or os.environ.get("PGHAD_API_TOKEN", "")
        self.timeout = timeout

    def call(self, method: str, path: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=self.timeout
            )
        except httpx.TransportError as exc:
            reason = unreachable_reason(exc)
            raise ApiUnreachable(
                f"cannot reach the pghad API at {self.base_url}{self.source} ({reason}): "
                "is `pghad run` up?"
            ) from exc
        body = _decoded(response)
        if not response.is_success:
            message = response.reason_phrase
            if isinstance(body, dict):
                message = body.get("message", message)
            raise ApiCallFailed(
                f"{method} {path}: HTTP {response.status_code}: {message}{self.source}"
            )
        if not isinstance(body, dict):
            raise ApiCallFailed(f"{method} {path}: not a JSON object: {response.text[:200]!r}")
        return body


def format_status(status: dict[str, Any]) -> str:
    lines = [
        f"Cluster {status['cluster']}: {status['state']} (primary {status['primary']}, "
        f"preferred {status['preferred_primary']})"
    ]
    if status.get("standby_streaming") is False:
        lines.append("Standby: NOT streaming from the primary (see the node table and events)")
    if status.get("paused"):
        lines.append("PAUSED (maintenance mode): no automatic action; `pghad resume` ends it")
    if status.get("operation"):
        lines.append(f"Running: {status['operation']}")
    lagging = [n["name"] for n in status["nodes"] if n.get("lag_alert")]
    if lagging:
        lines.append(f"Lag alert: {', '.join(lagging)} (replay lag above cluster.lag_alert_s)")
    header = ("NODE", "ADDRESS", "ROLE", "TL", "LSN", "LAG_S", "LAG_BYTES", "SYNC")
    rows = [header]
    for node in status["nodes"]:
        lsn = node.get("current_lsn") or node.get("replay_lsn") or "-"

        def show(value: Any) -> str:
            return (
                "-"
                if value is None
                else str(round(value, 3) if isinstance(value, float) else value)
            )

        rows.append(
            (
                node["name"],
                node["address"],
                node["role"],
                show(node.get("timeline")),
                lsn,
                show(node.get("replay_lag_s")),
                show(node.get("replay_lag_bytes")),
                show(node.get("sync_state")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    archive = status.get("archive")
    if archive:
        lines.append(_archive_line(archive))
    decision = status.get("decision")
    if decision:
        lines.append(f"Last decision: {decision['code']}: {decision['reason']}")
    return "\n".join(lines)


def _archive_line(archive: dict[str, Any]) -> str:
    if not archive.get("streaming"):
        why = archive.get("last_error") or "not started yet"
        return f"WAL archive: NOT streaming ({why}); {archive['segments']} segments stored"
    lag = archive.get("lag_s")
    return (
        f"WAL archive: streaming from {archive['source']}, at {archive['flushed_lsn']}, "
        f"{archive['lag_bytes']} B behind ({lag if lag is not None else '-'} s), "
        f"{archive['segments']} segments, {archive['stored_bytes'] / 1e6:.1f} MB"
    )
