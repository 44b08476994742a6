"""The run store in the bot's own PostgreSQL database: runs, approvals, events (the audit log)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Any

import asyncpg

from services.errors import DatabaseError, RunConflict, RunNotFound, RunOwned

log = logging.getLogger(__name__)

# Serialises migrations when several bot processes start at once.
_MIGRATION_LOCK = 0x726F6C6C


class RunStatus(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"  # its process died; recovered, waiting for Resume or Abort
    ABORTED = "aborted"  # interrupted, then an approver chose Abort and restore


class RunKind(StrEnum):
    DATABASE = "database"
    CODE = "code"  # revert commits pushed to the deployed branch
    FULL = "full"  # database first, then code: one run, one approval
    UNDO = "undo"


ACTIVE = (
    RunStatus.PENDING,
    RunStatus.AWAITING_APPROVAL,
    RunStatus.APPROVED,
    RunStatus.RUNNING,
)


@dataclass(frozen=True)
class RunRecord:
    id: str
    environment: str
    kind: str
    status: RunStatus
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    backup_name: str | None
    current_step: str | None
    plan: dict[str, Any]
    result: dict[str, Any] | None
    backup_sha256: str | None = None
    strategy: str | None = None
    slack_channel: str | None = None
    slack_ts: str | None = None
    escalated_at: datetime | None = None
    journal: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    lease_until: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> RunRecord:
        return cls(
            id=row["id"],
            environment=row["environment"],
            kind=row["kind"],
            status=RunStatus(row["status"]),
            requested_by=row["requested_by"],
            requested_at=row["requested_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            backup_name=row["backup_name"],
            current_step=row["current_step"],
            plan=json.loads(row["plan"]),
            result=json.loads(row["result"]) if row["result"] is not None else None,
            backup_sha256=row["backup_sha256"],
            strategy=row["strategy"],
            slack_channel=row["slack_channel"],
            slack_ts=row["slack_ts"],
            escalated_at=row["escalated_at"],
            journal=json.loads(row["journal"]),
            owner=row["owner"],
            lease_until=row["lease_until"],
        )


@dataclass(frozen=True)
class ApprovalRecord:
    run_id: str
    user_id: str
    decision: str  # approve, reject
    plan_hash: str
    at: datetime


@dataclass(frozen=True)
class EventRecord:
    run_id: str
    at: datetime
    kind: str
    step: str | None
    actor: str | None
    detail: dict[str, Any]


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("services") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; returns their names."""
    applied: list[str] = []
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")
        }
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    return applied


def new_run_id() -> str:
    return "rb-" + secrets.token_hex(4)


def process_identity() -> str:
    """Who owns a run: host, process and a nonce (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _lock_key(run_id: str) -> str:
    return f"rollback-bot:{run_id}"


class LeaseLost(Exception):
    """Another process took the run over (this one was judged dead)."""


@dataclass
class Lease:
    """This process's ownership of a run: an advisory lock on a connection of its own
    (gone the moment the process dies) and `owner`/`lease_until` on the run, renewed."""

    run_id: str
    owner: str
    connection: asyncpg.pool.PoolConnectionProxy
    lost: bool = False


class RunStore:
    """Reads and writes runs; the pool is owned by whoever created it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """For the stores of what belongs to runs (services/watch_store.py), on one pool."""
        return self._pool

    async def create_run(
        self,
        *,
        environment: str,
        kind: str,
        requested_by: str,
        status: RunStatus,
        plan: dict[str, Any],
        backup_name: str | None = None,
        backup_sha256: str | None = None,
        strategy: str | None = None,
    ) -> RunRecord:
        """Record a new run; the database refuses a second active run of one environment."""
        run_id = new_run_id()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                row = await connection.fetchrow(
                    "INSERT INTO runs (id, environment, kind, status, requested_by, plan,"
                    " backup_name, backup_sha256, strategy,"
                    " started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                    " CASE WHEN $4 = 'running' THEN now() END) RETURNING *",
                    run_id,
                    environment,
                    kind,
                    status.value,
                    requested_by,
                    json.dumps(plan, default=str),
                    backup_name,
                    backup_sha256,
                    strategy,
                )
                await connection.execute(
                    "INSERT INTO run_events (run_id, kind, actor, detail) VALUES ($1, $2, $3, $4)",
                    run_id,
                    "requested",
                    requested_by,
                    json.dumps({"status": status.value}),
                )
        except asyncpg.UniqueViolationError:
            active = await self.active_run(environment)
            if active is None:  # it finished in between; let the caller try again
                raise RunConflict(environment, "?", "another process") from None
            raise RunConflict(environment, active.id, active.requested_by) from None
        except (OSError, asyncpg.PostgresError) as error:
            raise DatabaseError("The run store cannot record the run", str(error)) from error
        assert row is not None
        return RunRecord.from_row(row)

    async def active_run(self, environment: str) -> RunRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM runs WHERE environment = $1 AND status = ANY($2::text[])",
            environment,
            [s.value for s in ACTIVE],
        )
        return RunRecord.from_row(row) if row else None

    async def active_runs(self) -> list[RunRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM runs WHERE status = ANY($1::text[]) ORDER BY requested_at",
            [s.value for s in ACTIVE],
        )
        return [RunRecord.from_row(r) for r in rows]

    async def recent_runs(self, environment: str, limit: int = 10) -> list[RunRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM runs WHERE environment = $1 ORDER BY requested_at DESC LIMIT $2",
            environment,
            limit,
        )
        return [RunRecord.from_row(r) for r in rows]

    async def get(self, run_id: str) -> RunRecord:
        row = await self._pool.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
        if row is None:
            raise RunNotFound(run_id)
        return RunRecord.from_row(row)

    async def update(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        current_step: str | None = None,
        result: dict[str, Any] | None = None,
        expect: tuple[RunStatus, ...] | None = None,
    ) -> bool:
        """Change a run; with `expect`, only if its status is one of those (False otherwise)."""
        finished = status is not None and status not in ACTIVE
        row = await self._pool.fetchrow(
            "UPDATE runs SET status = coalesce($2, status),"
            " current_step = coalesce($3, current_step),"
            " result = coalesce($4::jsonb, result),"
            " started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now())"
            "   ELSE started_at END,"
            " finished_at = CASE WHEN $5 THEN now() ELSE finished_at END,"
            " updated_at = now()"
            " WHERE id = $1 AND ($6::text[] IS NULL OR status = ANY($6::text[])) RETURNING id",
            run_id,
            status.value if status else None,
            current_step,
            json.dumps(result, default=str) if result is not None else None,
            finished,
            [s.value for s in expect] if expect else None,
        )
        return row is not None

    async def append_event(
        self,
        run_id: str,
        kind: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self._pool.execute(
            "INSERT INTO run_events (run_id, kind, step, actor, detail)"
            " VALUES ($1, $2, $3, $4, $5)",
            run_id,
            kind,
            step,
            actor,
            json.dumps(detail or {}, default=str),
        )

    async def events(self, run_id: str) -> list[EventRecord]:
        rows = await self._pool.fetch(
            "SELECT run_id, at, kind, step, actor, detail FROM run_events"
            " WHERE run_id = $1 ORDER BY id",
            run_id,
        )
        return [
            EventRecord(
                r["run_id"], r["at"], r["kind"], r["step"], r["actor"], json.loads(r["detail"])
            )
            for r in rows
        ]

    async def set_message(self, run_id: str, channel: str, ts: str) -> None:
        """Where the run's Slack message is (so any process can update it)."""
        await self._pool.execute(
            "UPDATE runs SET slack_channel = $2, slack_ts = $3, updated_at = now() WHERE id = $1",
            run_id,
            channel,
            ts,
        )

    async def run_for_message(self, channel: str, ts: str) -> RunRecord:
        row = await self._pool.fetchrow(
            "SELECT * FROM runs WHERE slack_channel = $1 AND slack_ts = $2", channel, ts
        )
        if row is None:
            raise RunNotFound(f"for message {ts}")
        return RunRecord.from_row(row)

    async def replace_plan(
        self,
        run_id: str,
        *,
        plan: dict[str, Any],
        backup_name: str | None,
        backup_sha256: str | None,
        strategy: str | None,
    ) -> bool:
        """Record a changed plan of a run still awaiting approval (False if it is not)."""
        row = await self._pool.fetchrow(
            "UPDATE runs SET plan = $2, backup_name = $3, backup_sha256 = $4, strategy = $5,"
            " updated_at = now() WHERE id = $1 AND status = 'awaiting_approval' RETURNING id",
            run_id,
            json.dumps(plan, default=str),
            backup_name,
            backup_sha256,
            strategy,
        )
        return row is not None

    async def add_approval(
        self, run_id: str, *, user_id: str, decision: str, plan_hash: str
    ) -> bool:
        """Record one decision on one plan, with its audit event; False if already recorded."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "INSERT INTO approvals (run_id, user_id, decision, plan_hash)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING run_id",
                run_id,
                user_id,
                decision,
                plan_hash,
            )
            if row is None:
                return False
            await connection.execute(
                "INSERT INTO run_events (run_id, kind, actor, detail) VALUES ($1, $2, $3, $4)",
                run_id,
                "approved" if decision == "approve" else "rejected",
                user_id,
                json.dumps({"plan_hash": plan_hash}),
            )
        return True

    async def approvals(self, run_id: str) -> list[ApprovalRecord]:
        rows = await self._pool.fetch(
            "SELECT run_id, user_id, decision, plan_hash, at FROM approvals"
            " WHERE run_id = $1 ORDER BY at",
            run_id,
        )
        return [
            ApprovalRecord(r["run_id"], r["user_id"], r["decision"], r["plan_hash"], r["at"])
            for r in rows
        ]

    async def grant(self, run_id: str, *, plan_hash: str, required: int) -> bool:
        """Awaiting approval -> approved, in one statement, only if `required` people approved
        this very plan; exactly one caller wins however many click at once."""
        row = await self._pool.fetchrow(
            "UPDATE runs SET status = 'approved', updated_at = now()"
            " WHERE id = $1 AND status = 'awaiting_approval' AND plan->>'plan_hash' = $2"
            " AND (SELECT count(*) FROM approvals a WHERE a.run_id = $1"
            "      AND a.plan_hash = $2 AND a.decision = 'approve') >= $3"
            " RETURNING id",
            run_id,
            plan_hash,
            required,
        )
        return row is not None

    async def mark_escalated(self, run_id: str) -> bool:
        """Set the run's escalation time once; False if already escalated or no longer waiting."""
        row = await self._pool.fetchrow(
            "UPDATE runs SET escalated_at = now(), updated_at = now() WHERE id = $1"
            " AND escalated_at IS NULL AND status = 'awaiting_approval' RETURNING id",
            run_id,
        )
        return row is not None

    async def grant_action(
        self, run_id: str, *, subject: str, granted_by: str, required: int
    ) -> bool:
        """Grant a gated action once `required` people approved `subject`; in one statement,
        so exactly one caller wins however many click at once."""
        row = await self._pool.fetchrow(
            "INSERT INTO action_grants (subject, run_id, granted_by)"
            " SELECT $1, $2, $3 WHERE (SELECT count(*) FROM approvals a WHERE a.run_id = $2"
            "   AND a.plan_hash = $1 AND a.decision = 'approve') >= $4"
            " ON CONFLICT DO NOTHING RETURNING subject",
            subject,
            run_id,
            granted_by,
            required,
        )
        return row is not None

    async def release_action(self, run_id: str, *, subject: str) -> None:
        """Forget a gated action's approvals and grant (it failed: it may be asked again)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM approvals WHERE run_id = $1 AND plan_hash = $2", run_id, subject
            )
            await connection.execute("DELETE FROM action_grants WHERE subject = $1", subject)

    async def record(self, run_id: str, step: str | None = None, **facts: Any) -> None:
        """Merge facts into the run's journal (what it changed), with an audit event.

        Called before a destructive action (its intent) and after it (its outcome), so a
        process that takes the run over knows exactly what was changed."""
        payload = json.dumps(facts, default=str)
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "UPDATE runs SET journal = journal || $2::jsonb, updated_at = now()"
                    " WHERE id = $1",
                    run_id,
                    payload,
                )
                await connection.execute(
                    "INSERT INTO run_events (run_id, kind, step, detail)"
                    " VALUES ($1, 'journal', $2, $3)",
                    run_id,
                    step,
                    payload,
                )
        except (OSError, asyncpg.PostgresError) as error:
            raise DatabaseError(
                "The run store cannot record the run's progress", str(error)
            ) from error

    async def unannounced_recoveries(self) -> list[RunRecord]:
        """Recovered runs whose channel has not been told yet; each is returned to exactly
        one caller (compare-and-set on the journal)."""
        rows = await self._pool.fetch(
            "UPDATE runs SET journal = journal || '{\"announced\": true}', updated_at = now()"
            " WHERE status = 'interrupted' AND result ? 'recovery'"
            " AND NOT journal ? 'announced' RETURNING *"
        )
        return [RunRecord.from_row(r) for r in rows]

    async def unreported_runs(self, *, grace_seconds: float = 10.0) -> list[RunRecord]:
        """Runs that finished lately but whose reporter died before their channel was told
        (unowned, no `reported` fact); each is returned to exactly one caller."""
        rows = await self._pool.fetch(
            "SELECT id FROM runs WHERE status = ANY($1::text[]) AND slack_ts IS NOT NULL"
            " AND started_at IS NOT NULL AND NOT journal ? 'reported'"
            " AND finished_at BETWEEN now() - interval '1 hour'"
            " AND now() - make_interval(secs => $2)",
            [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value],
            grace_seconds,
        )
        claimed = []
        for row in rows:
            async with self._pool.acquire() as connection:
                key = _lock_key(row["id"])
                if not await connection.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                    continue  # its process is alive and reporting
                try:
                    mine = await connection.fetchrow(
                        "UPDATE runs SET journal = journal || '{\"reported\": true}'"
                        " WHERE id = $1 AND NOT journal ? 'reported' RETURNING *",
                        row["id"],
                    )
                finally:
                    await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
                if mine is not None:
                    claimed.append(RunRecord.from_row(mine))
        return claimed

    async def forget(self, run_id: str, keys: list[str]) -> None:
        """Drop facts of an earlier attempt from the journal (a resumed run starts afresh)."""
        await self._pool.execute(
            "UPDATE runs SET journal = journal - $2::text[], updated_at = now() WHERE id = $1",
            run_id,
            keys,
        )

    async def transition(
        self, run_id: str, *, to: RunStatus, expect: tuple[RunStatus, ...], owner: str | None = None
    ) -> bool:
        """Compare-and-set a run's status; with `owner`, only while this process owns it."""
        finished = to not in ACTIVE
        try:
            row = await self._transition(run_id, to, expect, owner, finished)
        except asyncpg.UniqueViolationError:
            active = await self.active_run((await self.get(run_id)).environment)
            raise RunConflict(
                active.environment if active else run_id,
                active.id if active else "?",
                active.requested_by if active else "another process",
            ) from None
        return row is not None

    async def _transition(
        self,
        run_id: str,
        to: RunStatus,
        expect: tuple[RunStatus, ...],
        owner: str | None,
        finished: bool,
    ) -> asyncpg.Record | None:
        return await self._pool.fetchrow(
            "UPDATE runs SET status = $2,"
            " started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now())"
            "   ELSE started_at END,"
            " finished_at = CASE WHEN $4 THEN now() ELSE finished_at END, updated_at = now()"
            " WHERE id = $1 AND status = ANY($3::text[])"
            " AND ($5::text IS NULL OR owner = $5) RETURNING id",
            run_id,
            to.value,
            [s.value for s in expect],
            finished,
            owner,
        )

    @contextlib.asynccontextmanager
    async def lease(
        self,
        run_id: str,
        *,
        owner: str,
        ttl_seconds: float = 30.0,
        wait_seconds: float = 0.0,
    ) -> AsyncIterator[Lease]:
        """Own the run while the block runs: its advisory lock (waiting up to `wait_seconds`
        for the current owner, e.g. a preparation, to finish) and a renewed lease.

        Raises RunConflict if another live process owns it."""
        connection = await self._pool.acquire()
        renewer: asyncio.Task[None] | None = None
        lease = Lease(run_id, owner, connection)
        try:
            deadline = asyncio.get_running_loop().time() + wait_seconds
            while not await connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", _lock_key(run_id)
            ):
                if asyncio.get_running_loop().time() >= deadline:
                    raise RunOwned(run_id)
                await asyncio.sleep(0.2)
            await connection.execute(
                "UPDATE runs SET owner = $2, lease_until = now() + make_interval(secs => $3)"
                " WHERE id = $1",
                run_id,
                owner,
                ttl_seconds,
            )
            renewer = asyncio.create_task(self._renew(lease, ttl_seconds), name=f"lease-{run_id}")
            yield lease
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewer
            await asyncio.shield(self._give_up(lease))

    async def _renew(self, lease: Lease, ttl_seconds: float) -> None:
        while True:
            await asyncio.sleep(ttl_seconds / 3)
            try:
                row = await self._pool.fetchrow(
                    "UPDATE runs SET lease_until = now() + make_interval(secs => $3)"
                    " WHERE id = $1 AND owner = $2 RETURNING id",
                    lease.run_id,
                    lease.owner,
                    ttl_seconds,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("run %s: lease not renewed (run store unreachable)", lease.run_id)
                continue
            if row is None:
                lease.lost = True
                log.error("run %s: another process took the run over", lease.run_id)
                return

    async def _give_up(self, lease: Lease) -> None:
        """Release ownership; a lost connection has released the lock already."""
        connection = lease.connection
        try:
            await connection.execute(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2",
                lease.run_id,
                lease.owner,
            )
            await connection.execute(
                "SELECT pg_advisory_unlock(hashtext($1))", _lock_key(lease.run_id)
            )
        except (asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
            log.warning("run %s: ownership went with its connection", lease.run_id)
        finally:
            with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
                await self._pool.release(connection)

    async def orphaned_runs(self, *, unowned_grace: float = 15.0) -> list[RunRecord]:
        """Runs approved or running whose owner is gone: its advisory lock is free (the
        process died) or its lease expired long ago (the process hangs; it is cut off)."""
        found = []
        for run in await self.active_runs():
            if run.status not in (RunStatus.APPROVED, RunStatus.RUNNING):
                continue
            async with self._pool.acquire() as connection:
                free = await connection.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext($1))", _lock_key(run.id)
                )
                if free:
                    await connection.execute(
                        "SELECT pg_advisory_unlock(hashtext($1))", _lock_key(run.id)
                    )
                elif await self._lease_expired(connection, run.id):
                    # A hung owner still holds the lock: end its session, so that it can
                    # change nothing more, and let recovery take the run.
                    await connection.execute(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                        " WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.objid = hashtext($1)::oid AND l.pid <> pg_backend_pid()",
                        _lock_key(run.id),
                    )
                    free = True
            # An approved run nobody owns yet may be about to be taken by the process that
            # approved it: it is an orphan only once it has stayed so for a while.
            if free and (run.owner is not None or await self._unowned_for(run.id, unowned_grace)):
                found.append(run)
        return found

    async def _unowned_for(self, run_id: str, seconds: float) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT owner IS NULL AND updated_at < now() - make_interval(secs => $2)"
                " FROM runs WHERE id = $1",
                run_id,
                seconds,
            )
        )

    @staticmethod
    async def _lease_expired(connection: asyncpg.pool.PoolConnectionProxy, run_id: str) -> bool:
        return bool(
            await connection.fetchval(
                "SELECT lease_until IS NOT NULL AND lease_until < now() - interval '30 seconds'"
                " FROM runs WHERE id = $1",
                run_id,
            )
        )
