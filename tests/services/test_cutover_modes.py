"""Issue 10: how the containers are treated during the cut-over (stop, pause, keep), on real
containers and a real PostgreSQL; and a run SIGKILLed while they are paused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import asyncpg
import pytest

from sandbox.demo_environment import ComposeProject, database_snapshot
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.environments import CutoverMode, HttpCheck, Strategy
from services.events import EventKind, Step, StepEvent
from services.run_store import RunRecord
from services.swap import derived_from
from services.workflow import RollbackResult, plan_rollback, rollback_database
from tests.bot.test_cli import write_config
from tests.services.conftest import Stage, change_after_backup, container_states
from tests.services.test_recovery import (
    Killed,
    allows_connections,
    assert_consistent,
    database_names,
    kill_during,
    recover,
    rename_blocked,
)


class Steps:
    """A listener: the steps started, and the containers' states as each step began."""

    def __init__(self, docker: aiodocker.Docker, project: ComposeProject) -> None:
        self.docker, self.project = docker, project
        self.started: list[Step] = []
        self.states: dict[Step, set[str]] = {}

    async def __call__(self, event: StepEvent) -> None:
        if event.kind is EventKind.STARTED:
            self.started.append(event.step)
            self.states[event.step] = set(
                (await container_states(self.docker, self.project)).values()
            )


async def identities(docker: aiodocker.Docker, project: ComposeProject) -> dict[str, tuple]:
    """Each container's id and start time: unchanged means it was never restarted."""
    found = {}
    for name in project.container_names.values():
        info = await docker.containers.get(name)
        found[name] = (info["Id"], info["State"]["StartedAt"])
    return found


@pytest.fixture
async def modes_stage(stage: Stage, pg: ThrowawayPostgres) -> AsyncIterator[Stage]:
    """The stage; the old and staging databases its swaps leave are dropped after."""
    yield stage
    for name in await database_names(stage):
        if derived_from(stage.database.name, name):
            await pg.drop_database(name)


async def roll_back(stage: Stage, listener: Steps) -> RollbackResult:
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.strategy is stage.environment.strategy, plan.strategy_note
    assert plan.cutover_mode is stage.environment.cutover_mode, plan.mode_note
    return await rollback_database(stage.services, plan, requested_by="t", listener=listener)


@pytest.mark.parametrize("strategy", [Strategy.SWAP, Strategy.IN_PLACE])
async def test_pause_freezes_the_containers_while_the_database_is_replaced(
    strategy: Strategy, modes_stage: Stage, docker: aiodocker.Docker
) -> None:
    stage = modes_stage.with_environment(strategy=strategy, cutover_mode=CutoverMode.PAUSE)
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await identities(docker, stage.project)
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.summary()["application_sees"].startswith("frozen (docker pause) during the ")

    steps = Steps(docker, stage.project)
    result = await roll_back(stage, steps)

    assert result.ok, (result.error, result.environment_state)
    replaced = Step.CUTOVER if strategy is Strategy.SWAP else Step.RESTORE
    assert steps.states[replaced] == {"paused"}
    assert steps.states[Step.HEALTH] == {"running"}
    assert [s.step for s in result.steps] == (
        [Step.PREPARE, Step.PAUSE, Step.CUTOVER, Step.UNPAUSE, Step.HEALTH, Step.ARCHIVE_OLD]
        if strategy is Strategy.SWAP
        else [Step.PAUSE, Step.SAFETY_BACKUP, Step.RESTORE, Step.UNPAUSE, Step.HEALTH, Step.ANALYZE]
    )
    assert [s.message for s in result.steps if s.step is Step.UNPAUSE] == ["2 thawed"]
    assert await database_snapshot(stage.dsn) == at_backup
    assert await identities(docker, stage.project) == before  # thawed, never restarted


async def test_keep_leaves_the_containers_alone_and_ends_the_sessions(
    modes_stage: Stage, docker: aiodocker.Docker
) -> None:
    stage = modes_stage.with_environment(strategy=Strategy.SWAP, cutover_mode=CutoverMode.KEEP)
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await identities(docker, stage.project)
    application = await asyncpg.connect(stage.dsn)  # a pooled session of the application's
    try:
        steps = Steps(docker, stage.project)
        result = await roll_back(stage, steps)
        assert result.ok, (result.error, result.environment_state)
        assert steps.states[Step.CUTOVER] == {"running"}
        assert [s.step for s in result.steps] == [
            Step.PREPARE,
            Step.CUTOVER,
            Step.HEALTH,
            Step.ARCHIVE_OLD,
        ]
        assert await identities(docker, stage.project) == before
        assert await database_snapshot(stage.dsn) == at_backup
        # The session was ended at the rename: the application reconnects, to the backup.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await application.fetchval("SELECT 1")
    finally:
        await application.close()


async def test_failing_health_checks_in_pause_mode_swap_back_and_thaw(
    modes_stage: Stage, docker: aiodocker.Docker
) -> None:
    web = modes_stage.project.web_urls["web"]
    health = modes_stage.environment.health.model_copy(
        update={
            "http": (HttpCheck(name="web", url=web.replace("/health", "/missing")),),
            "deadline_seconds": 1.0,
        }
    )
    stage = modes_stage.with_environment(
        strategy=Strategy.SWAP, cutover_mode=CutoverMode.PAUSE, health=health
    )
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    started = await identities(docker, stage.project)

    steps = Steps(docker, stage.project)
    result = await roll_back(stage, steps)

    assert not result.ok
    assert "Health checks failed" in (result.error or "")
    assert "undone automatically" in result.environment_state
    assert f"{stage.environment.name}: all 2 containers running" in result.environment_state
    assert steps.started == [
        Step.PREPARE,
        Step.PAUSE,
        Step.CUTOVER,
        Step.UNPAUSE,
        Step.HEALTH,
        Step.PAUSE,
        Step.SWAP_BACK,
        Step.UNPAUSE,
    ]
    assert steps.states[Step.SWAP_BACK] == {"paused"}
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await identities(docker, stage.project) == started


async def test_killed_while_paused_at_the_cut_over_is_thawed_by_recovery(
    modes_stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """SIGKILLed while the containers are frozen and the rename waits for a lock: recovery
    thaws exactly what the run paused, lets connections in again; nothing was renamed."""
    stage = modes_stage
    killed = Killed(None, None, await database_snapshot(stage.dsn))  # type: ignore[arg-type]
    await change_after_backup(stage.dsn)
    killed.before = await database_snapshot(stage.dsn)
    config = write_config(stage, tmp_path, "swap", cutover_mode="pause")
    started = await identities(docker, stage.project)
    live = stage.database.name

    async def paused_at_the_rename(run: RunRecord, stage: Stage) -> bool:
        return (
            run.journal.get("cutover") == "started"
            and not await allows_connections(pg, live)
            and set((await container_states(docker, stage.project)).values()) == {"paused"}
        )

    async with rename_blocked(pg, live):
        killed.run = await kill_during(stage, pg, config, paused_at_the_rename)
    assert set((await container_states(docker, stage.project)).values()) == {"paused"}
    assert [c["id"] for c in killed.run.journal["pausing"]] == [
        stage.project.container_ids[s] for s in ("web", "worker")
    ]

    shown = await recover(stage, pg, config)

    await assert_consistent(stage, docker, killed, "unchanged", shown)
    assert "thawed 2 container(s) the run had paused" in shown
    assert await identities(docker, stage.project) == started
