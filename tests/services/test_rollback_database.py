"""The database rollback end to end: real PostgreSQL, real containers, real dumps (issue #2)."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from pathlib import Path

import aiodocker
import asyncpg
import pytest

from sandbox.demo_environment import database_snapshot
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.backups import resolve_backup
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database, restore_in_place
from services.errors import (
    BackupError,
    EngineUnavailable,
    RunConflict,
    UnknownEnvironment,
)
from services.events import EventKind, Step, StepEvent
from services.run_store import RunStatus, RunStore, migrate
from services.workflow import plan_rollback, rollback_database
from tests.conftest import FreshDatabase
from tests.services.conftest import (
    Stage,
    change_after_backup,
    container_states,
    make_environment,
    make_services,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[StepEvent] = []

    async def __call__(self, event: StepEvent) -> None:
        self.events.append(event)

    def finished(self) -> list[Step]:
        return [e.step for e in self.events if e.kind is EventKind.FINISHED]


async def test_rollback_restores_exactly_the_backup_and_keeps_a_safety_copy(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker
) -> None:
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before_rollback = await database_snapshot(stage.dsn)
    assert before_rollback != at_backup

    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.backup.path == stage.backup.path
    events = Recorder()
    result = await rollback_database(stage.services, plan, requested_by="tester", listener=events)

    assert result.ok, result.error
    assert events.finished() == [
        Step.STOP,
        Step.SAFETY_BACKUP,
        Step.RESTORE,
        Step.START,
        Step.HEALTH,
        Step.ANALYZE,
    ]
    # Exactly the backup: the new table, view, schema, column and rows are all gone.
    assert await database_snapshot(stage.dsn) == at_backup
    states = await container_states(docker, stage.project)
    assert set(states.values()) == {"running"}
    assert result.health is not None and result.health.ok
    assert {r.kind for r in result.health.results} == {"http", "containers", "sql"}

    # The safety backup holds exactly the pre-rollback data.
    assert result.safety_backup is not None
    assert result.safety_backup.path.parent == stage.environment.backups_dir
    assert result.safety_backup.name.startswith("pre-rollback-")
    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    await pg.create_database(scratch)
    try:
        await restore_in_place(
            DatabaseTarget(pg.superuser_dsn(scratch), stage.services.tools), result.safety_backup
        )
        assert await database_snapshot(pg.superuser_dsn(scratch)) == before_rollback
    finally:
        await pg.drop_database(scratch)

    run = await stage.services.store.get(result.run_id)
    assert run.status is RunStatus.SUCCEEDED
    logged = [(e.kind, e.step) for e in await stage.services.store.events(result.run_id)]
    assert ("step_started", "stop") in logged and ("step_finished", "health") in logged


def corrupt_data_blocks(source: Path, destination: Path) -> None:
    """A dump whose table of contents reads fine but whose table data is damaged."""
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\x00" * 4096
    destination.write_bytes(bytes(data))


async def test_corrupt_dump_that_passes_precheck_leaves_pre_rollback_data(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    corrupt = stage.environment.backups_dir / "pre-deployment-20241204-120000.dump"
    await asyncio.to_thread(corrupt_data_blocks, stage.backup.path, corrupt)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)

    # Issue 7: the in-place pre-flight reads the whole dump, so it is refused before the stop.
    with pytest.raises(BackupError, match="cannot be read to its end"):
        await plan_rollback(stage.services, stage.environment.name, corrupt.name)
    # A file damaged after the pre-flight: the restore's one transaction still protects.
    plan = await plan_rollback(stage.services, stage.environment.name, stage.backup.name)
    plan = replace(plan, backup=await resolve_backup(stage.environment, corrupt.name))
    result = await rollback_database(stage.services, plan, requested_by="t", listener=Recorder())

    assert not result.ok
    assert "Restore of pre-deployment-20241204-120000.dump failed" in (result.error or "")
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert "database unchanged" in result.environment_state
    assert "all 2 containers running" in result.environment_state
    assert (await stage.services.store.get(result.run_id)).status is RunStatus.FAILED


@pytest.fixture
async def own_cluster() -> ThrowawayPostgres:
    async with ThrowawayPostgres(fast=True) as cluster:
        yield cluster  # type: ignore[misc]


async def test_database_killed_mid_restore_comes_back_on_pre_rollback_data(
    stage: Stage, own_cluster: ThrowawayPostgres, docker: aiodocker.Docker
) -> None:
    """The target's server crashes (immediate stop) while the restore is writing."""
    await own_cluster.create_database("app")
    dsn = own_cluster.superuser_dsn("app")
    target = DatabaseTarget(dsn, stage.services.tools)
    await restore_in_place(target, stage.backup)
    # Enough data that the restore is still running when the server goes down.
    connection = await asyncpg.connect(dsn)
    await connection.execute(
        "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS payload"
        " FROM generate_series(1, 400000) g"
    )
    await connection.close()
    big_backup = await dump_database(
        target, stage.environment.backups_dir / "pre-deployment-20241205-120000.dump"
    )
    await change_after_backup(dsn)
    before = await database_snapshot(dsn)

    environment = make_environment(
        stage.environment.name, dsn, stage.environment.backups_dir, stage.project
    )
    staged = stage.with_environment(database_url=environment.database_url)
    crashes: list[asyncio.Task[None]] = []

    async def crash() -> None:
        await asyncio.sleep(0.3)
        await own_cluster.restart(immediate=True)

    async def crash_during_restore(event: StepEvent) -> None:
        if event.step is Step.RESTORE and event.message.startswith("restoring"):
            crashes.append(asyncio.get_running_loop().create_task(crash()))

    plan = await plan_rollback(staged.services, staged.environment.name, big_backup.name)
    result = await rollback_database(
        staged.services, plan, requested_by="t", listener=crash_during_restore
    )
    await asyncio.gather(*crashes)
    assert len(crashes) == 1
    assert not result.ok
    assert "Restore of pre-deployment-20241205-120000.dump failed" in (result.error or "")
    after = await database_snapshot(dsn)
    assert after.checksums == before.checksums
    # Crash recovery moves sequences ahead by up to 32 (PostgreSQL pre-logs 32 values),
    # so compare them without LAST_VALUE; everything else must be identical.
    assert without_sequence_positions(after.schema) == without_sequence_positions(before.schema)
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


def without_sequence_positions(schema: dict[str, str]) -> dict[str, str]:
    return {k: re.sub(r"LAST_VALUE \d+", "", v) for k, v in schema.items()}


async def test_backup_outside_the_folder_is_refused_and_nothing_stops(
    stage: Stage, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.dump"
    outside.write_bytes(stage.backup.path.read_bytes())
    (stage.environment.backups_dir / "link.dump").symlink_to(outside)
    for name in ("../elsewhere.dump", str(outside), "link.dump", "backups/../../elsewhere.dump"):
        with pytest.raises(BackupError, match="outside the backups folder"):
            await plan_rollback(stage.services, stage.environment.name, name)
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_non_dump_and_missing_backups_are_refused(stage: Stage) -> None:
    text = stage.environment.backups_dir / "notes.dump"
    text.write_text("not an archive")
    with pytest.raises(BackupError, match="not a readable pg_dump archive"):
        await plan_rollback(stage.services, stage.environment.name, "notes.dump")
    with pytest.raises(BackupError, match="not found"):
        await plan_rollback(stage.services, stage.environment.name, "nope.dump")


async def test_runbook_form_of_a_backup_name_is_accepted(stage: Stage) -> None:
    plan = await plan_rollback(
        stage.services, stage.environment.name, f"backups/{stage.backup.name}"
    )
    assert plan.backup.path == stage.backup.path


async def test_unknown_environment_is_refused(stage: Stage) -> None:
    with pytest.raises(UnknownEnvironment, match=r"Unknown environment 'staging'.*env-"):
        await plan_rollback(stage.services, "staging", None)


async def test_stopped_engine_is_a_clear_error_before_anything_stops(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    dead = aiodocker.Docker(url="unix:///tmp/no-docker-engine-here.sock")
    try:
        services = make_services(
            stage.services.environments,
            dead,
            stage.services.http,
            stage.services.tools,
            stage.services.store._pool,
        )
        assert isinstance(services.runtime, DockerRuntime)
        with pytest.raises(EngineUnavailable, match="Docker engine does not answer"):
            await plan_rollback(services, stage.environment.name, None)
    finally:
        await dead.close()
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_two_concurrent_rollbacks_of_one_environment_run_once(
    stage: Stage, fresh_db: FreshDatabase
) -> None:
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    outcomes = await asyncio.gather(
        rollback_database(stage.services, plan, requested_by="alice", listener=Recorder()),
        rollback_database(stage.services, plan, requested_by="bob", listener=Recorder()),
        return_exceptions=True,
    )
    conflicts = [o for o in outcomes if isinstance(o, RunConflict)]
    finished = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(conflicts) == 1 and len(finished) == 1
    assert finished[0].ok
    assert "already in progress" in str(conflicts[0])
    runs = await stage.services.store.recent_runs(stage.environment.name)
    assert len(runs) == 1


async def test_run_store_dying_mid_rollback_still_restarts_the_environment(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    """The bot's own database goes away after the containers stopped: the rollback cannot
    record its next step, so it does not take it, and it starts the containers again."""
    async with ThrowawayPostgres(fast=True) as store_cluster:
        await store_cluster.create_database("store")
        pool = await asyncpg.create_pool(store_cluster.superuser_dsn("store"), min_size=1)
        assert pool is not None
        try:
            await migrate(pool)
            services = replace(stage.services, store=RunStore(pool))
            before = await database_snapshot(stage.dsn)
            plan = await plan_rollback(services, stage.environment.name, None)
            stops: list[asyncio.Task[None]] = []

            async def kill_store_after_stop(event: StepEvent) -> None:
                if event.step is Step.STOP and event.kind is EventKind.FINISHED:
                    stops.append(asyncio.ensure_future(store_cluster.stop(immediate=True)))
                    await stops[-1]

            result = await rollback_database(
                services, plan, requested_by="t", listener=kill_store_after_stop
            )
        finally:
            pool.terminate()
    assert stops, "the store was never stopped"
    assert not result.ok
    assert "not recorded in the run store" in result.environment_state
    assert "all 2 containers running" in result.environment_state
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await database_snapshot(stage.dsn) == before
