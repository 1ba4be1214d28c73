"""What an agent watches with its own connections: its own server, and the other node.

Each watch keeps one connection and runs a small query every interval. A query that completes
late still counts as an answer: "down for" is the time since the last answer, so a slow or lossy
link reads as late, not as down, until no answer has come for a whole threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pghad.config.model import AuthConfig, NodeConfig
from pghad.nodes.conninfo import admin_conninfo

# A primary's timeline: the first 8 hex digits of the WAL file it writes (NULL on a standby).
TIMELINE = """CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline"""
LOCAL_QUERY = f"""
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only') = 'on' AS read_only,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       {TIMELINE}
"""
PEER_QUERY = f"SELECT pg_is_in_recovery() AS in_recovery, {TIMELINE}"
OVERDUE = 2  # intervals (plus a second) without an answer before a watch reports silence


@dataclass
class Answer:
    row: dict[str, Any] | None = None
    answered_at: float | None = None  # monotonic time of the last answer (or of the start)
    ever: bool = False
    error: str | None = None
    # When this watch began asking (the agent's start), when `answered_at` is a contact from
    # before it (kept in the contact file): answers are overdue only once the watch has had the
    # time to get one, but the silence then counts from that earlier contact.
    asked_since: float | None = None

    def silent_for(self, now: float, interval: float) -> float | None:
        """Seconds since the last answer, once answers are overdue (a query still waiting
        counts: a cut link gives no error, only silence); None while they come in time. A
        query that failed is silence at once."""
        if self.answered_at is None:
            return None
        gap = now - self.answered_at
        waited = now - max(self.answered_at, self.asked_since or self.answered_at)
        return gap if self.error is not None or waited > OVERDUE * interval + 1.0 else None


class Watch:
    def __init__(
        self, node: NodeConfig, auth: AuthConfig, query: str, interval: float, timeout: float
    ) -> None:
        self.node = node
        self.auth = auth
        self.query = query
        self.interval = interval
        self.timeout = timeout
        # Silent since start until the first answer: an agent started while cut off is isolated.
        self.answer = Answer(answered_at=time.monotonic())
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def run(self) -> None:
        while True:
            await self._once()
            await asyncio.sleep(self.interval)

    async def _once(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    admin_conninfo(
                        self.node, self.auth, connect_timeout=max(1, round(self.timeout))
                    ),
                    autocommit=True,
                    row_factory=dict_row,
                )
            # A late answer still counts (it is late, not down): wait well past the timeout.
            cursor = await asyncio.wait_for(
                self._conn.execute(self.query), max(5.0, 4 * self.timeout)
            )
            row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop()
            self.answer.error = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            return
        self.answer = Answer(row=row, answered_at=time.monotonic(), ever=True)

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
