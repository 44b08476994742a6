"""The run store on a real PostgreSQL: migrations, one active run per environment, liveness."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from sandbox.throwaway_postgres import ThrowawayPostgres
from services.errors import RunConflict
from services.run_store import RunStatus, RunStore, migrate


@pytest.fixture
async def second_pool(pg: ThrowawayPostgres, store_pool: asyncpg.Pool) -> asyncpg.Pool:
    """Another pool on the same store: what a second bot process would have."""
    pool = await asyncpg.create_pool(pg.superuser_dsn("rollback_bot_store"), min_size=1)
    assert pool is not None
    yield pool  # type: ignore[misc]
    await pool.close()


def env_name() -> str:
    return f"env-{uuid.uuid4().hex[:8]}"


async def test_migrations_apply_once(store_pool: asyncpg.Pool) -> None:
    assert await migrate(store_pool) == []
    versions = await store_pool.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
    assert versions[0]["name"] == "0001_runs.sql"


async def test_two_processes_cannot_both_start_a_run(
    store_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    environment = env_name()
    stores = [RunStore(store_pool), RunStore(second_pool)]
    outcomes = await asyncio.gather(
        *(
            store.create_run(
                environment=environment,
                kind="database",
                requested_by=who,
                status=RunStatus.RUNNING,
                plan={},
            )
            for store, who in zip(stores, ("alice", "bob"), strict=True)
        ),
        return_exceptions=True,
    )
    conflicts = [o for o in outcomes if isinstance(o, RunConflict)]
    assert len(conflicts) == 1
    winner = next(o for o in outcomes if not isinstance(o, BaseException))
    assert conflicts[0].requested_by == winner.requested_by
    # Once the first run is over, the environment is free again.
    await stores[0].update(winner.id, status=RunStatus.SUCCEEDED)
    again = await stores[1].create_run(
        environment=environment,
        kind="database",
        requested_by="bob",
        status=RunStatus.RUNNING,
        plan={},
    )
    assert again.status is RunStatus.RUNNING


async def test_a_run_whose_process_died_is_marked_interrupted_and_a_live_one_is_not(
    store_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    store, other = RunStore(store_pool), RunStore(second_pool)
    dead = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="a",
        status=RunStatus.RUNNING,
        plan={},
    )
    await store.update(dead.id, current_step="restore")
    alive = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="b",
        status=RunStatus.RUNNING,
        plan={},
    )
    held = await store.hold(alive.id)
    try:
        recovered = await other.recover_interrupted()
    finally:
        await store.release(held, alive.id)
    assert dead.id in {r.id for r in recovered}
    assert alive.id not in {r.id for r in recovered}
    assert (await store.get(dead.id)).status is RunStatus.INTERRUPTED
    assert (await store.get(alive.id)).status is RunStatus.RUNNING
    events = await store.events(dead.id)
    assert [(e.kind, e.step) for e in events][-1] == ("interrupted", "restore")


async def test_an_approved_run_whose_process_died_frees_its_environment(
    store_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """Approved, then the bot died before executing: the environment must not stay locked."""
    store, other = RunStore(store_pool), RunStore(second_pool)
    environment = env_name()
    stuck = await store.create_run(
        environment=environment,
        kind="database",
        requested_by="a",
        status=RunStatus.APPROVED,
        plan={},
    )
    with pytest.raises(RunConflict):
        await other.create_run(
            environment=environment,
            kind="database",
            requested_by="b",
            status=RunStatus.RUNNING,
            plan={},
        )
    assert stuck.id in {r.id for r in await other.recover_interrupted()}
    fresh = await other.create_run(
        environment=environment,
        kind="database",
        requested_by="b",
        status=RunStatus.RUNNING,
        plan={},
    )
    assert fresh.status is RunStatus.RUNNING
