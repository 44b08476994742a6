"""The run store on a real PostgreSQL: migrations, one active run per environment, liveness."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from sandbox.throwaway_postgres import ThrowawayPostgres
from services.errors import RunConflict, RunOwned
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


async def test_a_run_whose_owner_died_is_an_orphan_and_a_live_one_is_not(
    store_pool: asyncpg.Pool, second_pool: asyncpg.Pool, pg: ThrowawayPostgres
) -> None:
    """Issue 7: ownership is a lease in the run store; a dead owner's run is found at once."""
    store, other = RunStore(store_pool), RunStore(second_pool)
    dying_pool = await asyncpg.create_pool(pg.superuser_dsn("rollback_bot_store"), min_size=1)
    assert dying_pool is not None
    dying = RunStore(dying_pool)
    dead = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="a",
        status=RunStatus.RUNNING,
        plan={},
    )
    alive = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="b",
        status=RunStatus.RUNNING,
        plan={},
    )
    lease = dying.lease(dead.id, owner="dying-process")
    await lease.__aenter__()
    assert (await store.get(dead.id)).owner == "dying-process"
    dying_pool.terminate()  # the process is gone: its connections close, its lock is free
    async with store.lease(alive.id, owner="live-process"):
        orphans = {r.id for r in await other.orphaned_runs()}
        with pytest.raises(RunOwned):
            async with other.lease(alive.id, owner="someone-else"):
                pass
    assert dead.id in orphans
    assert alive.id not in orphans
    assert (await store.get(alive.id)).owner is None  # given up at the end of the block


async def test_an_approved_run_nobody_took_is_an_orphan_only_after_a_grace(
    store_pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """Issue 7: approved by one replica, not yet owned: the other must not steal it at once."""
    store, other = RunStore(store_pool), RunStore(second_pool)
    stuck = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="a",
        status=RunStatus.APPROVED,
        plan={},
    )
    assert stuck.id not in {r.id for r in await other.orphaned_runs()}
    await asyncio.sleep(0.3)
    assert stuck.id in {r.id for r in await other.orphaned_runs(unowned_grace=0.2)}


async def test_status_changes_are_compare_and_set_and_owned(store_pool: asyncpg.Pool) -> None:
    """Issue 7: a transition expected from one status, by the run's owner, happens once."""
    store = RunStore(store_pool)
    run = await store.create_run(
        environment=env_name(),
        kind="database",
        requested_by="a",
        status=RunStatus.APPROVED,
        plan={},
    )
    assert not await store.transition(
        run.id, to=RunStatus.RUNNING, expect=(RunStatus.APPROVED,), owner="not-the-owner"
    )
    async with store.lease(run.id, owner="me") as lease:
        results = await asyncio.gather(
            *(
                store.transition(
                    run.id, to=RunStatus.RUNNING, expect=(RunStatus.APPROVED,), owner=lease.owner
                )
                for _ in range(5)
            )
        )
    assert results.count(True) == 1
    await store.record(run.id, "stop", stopping=[{"id": "c1", "name": "web"}])
    await store.record(run.id, "stop", restore="started")
    assert (await store.get(run.id)).journal == {
        "stopping": [{"id": "c1", "name": "web"}],
        "restore": "started",
    }
