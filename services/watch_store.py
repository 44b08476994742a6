"""Monitoring windows in the run store (table `monitors`): one per run that succeeded, open
until it ends, with a lease saying which process watches it now.

The lease is taken by compare-and-set and renewed while its process lives; a process that
finds it free or expired takes the watch over (exactly one wins). Opening and ending a
window write the run's audit event in the same transaction, so the log and the row agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class WatchRecord:
    run_id: str
    environment: str
    started_at: datetime
    until: datetime
    interval_seconds: float
    owner: str | None
    lease_until: datetime | None
    ended_at: datetime | None
    outcome: str | None
    line: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> WatchRecord:
        return cls(
            run_id=row["run_id"],
            environment=row["environment"],
            started_at=row["started_at"],
            until=row["until"],
            interval_seconds=float(row["interval_seconds"]),
            owner=row["owner"],
            lease_until=row["lease_until"],
            ended_at=row["ended_at"],
            outcome=row["outcome"],
            line=row["line"],
        )


_EVENT = "INSERT INTO run_events (run_id, kind, detail) VALUES ($1, $2, $3)"


class WatchStore:
    """Reads and writes monitoring windows; the pool is the run store's."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def open(
        self,
        *,
        run_id: str,
        environment: str,
        started_at: datetime,
        until: datetime,
        interval_seconds: float,
        owner: str | None,
        lease_seconds: float,
        event: tuple[str, dict[str, Any]],
    ) -> WatchRecord | None:
        """Open the run's window (None if it was opened before), owned by `owner` if given."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "INSERT INTO monitors (run_id, environment, started_at, until, interval_seconds,"
                " owner, lease_until) VALUES ($1, $2, $3, $4, $5, $6,"
                " CASE WHEN $6::text IS NULL THEN NULL"
                "   ELSE now() + make_interval(secs => $7) END)"
                " ON CONFLICT (run_id) DO NOTHING RETURNING *",
                run_id,
                environment,
                started_at,
                until,
                interval_seconds,
                owner,
                lease_seconds,
            )
            if row is not None:
                await connection.execute(_EVENT, run_id, event[0], json.dumps(event[1]))
        return WatchRecord.from_row(row) if row is not None else None

    async def get(self, run_id: str) -> WatchRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM monitors WHERE run_id = $1", run_id)
        return WatchRecord.from_row(row) if row is not None else None

    async def open_watches(self, environment: str | None = None) -> list[WatchRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM monitors WHERE ended_at IS NULL"
            " AND ($1::text IS NULL OR environment = $1) ORDER BY started_at",
            environment,
        )
        return [WatchRecord.from_row(r) for r in rows]

    async def unwatched(self) -> list[WatchRecord]:
        """Open windows nobody watches now: never owned, given back, or the lease expired."""
        rows = await self._pool.fetch(
            "SELECT * FROM monitors WHERE ended_at IS NULL"
            " AND (owner IS NULL OR lease_until < now()) ORDER BY started_at"
        )
        return [WatchRecord.from_row(r) for r in rows]

    async def claim(self, run_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Take the open window if nobody watches it (or `owner` already does)."""
        row = await self._pool.fetchrow(
            "UPDATE monitors SET owner = $2, lease_until = now() + make_interval(secs => $3)"
            " WHERE run_id = $1 AND ended_at IS NULL"
            " AND (owner IS NULL OR owner = $2 OR lease_until < now()) RETURNING run_id",
            run_id,
            owner,
            lease_seconds,
        )
        return row is not None

    async def renew(self, run_id: str, *, owner: str, lease_seconds: float) -> bool:
        """False once another process took the window over, or it ended."""
        row = await self._pool.fetchrow(
            "UPDATE monitors SET lease_until = now() + make_interval(secs => $3)"
            " WHERE run_id = $1 AND owner = $2 AND ended_at IS NULL RETURNING run_id",
            run_id,
            owner,
            lease_seconds,
        )
        return row is not None

    async def release(self, run_id: str, *, owner: str) -> None:
        """Give the window back (this process stops): another takes it over at once."""
        await self._pool.execute(
            "UPDATE monitors SET owner = NULL, lease_until = NULL WHERE run_id = $1 AND owner = $2",
            run_id,
            owner,
        )

    async def end(
        self, run_id: str, *, outcome: str, line: str, event: tuple[str, dict[str, Any]]
    ) -> bool:
        """Close the window once, with its report line; False if it had ended already."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "UPDATE monitors SET ended_at = now(), outcome = $2, line = $3, owner = NULL,"
                " lease_until = NULL WHERE run_id = $1 AND ended_at IS NULL RETURNING run_id",
                run_id,
                outcome,
                line,
            )
            if row is not None:
                await connection.execute(_EVENT, run_id, event[0], json.dumps(event[1]))
        return row is not None
