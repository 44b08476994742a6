"""The Docker runtime under deadlines: a hung engine is a clear, bounded failure (issue 7)."""

from __future__ import annotations

import time
from dataclasses import replace

import aiodocker
import pytest

from sandbox.demo_environment import database_snapshot
from services.containers import DockerRuntime
from services.errors import DeadlineExceeded
from services.events import StepEvent
from services.run_store import RunStatus
from services.workflow import plan_rollback, rollback_database
from tests.services.conftest import Stage, change_after_backup, container_states

DEADLINE = 1.0


class Recorder:
    def __init__(self) -> None:
        self.events: list[StepEvent] = []

    async def __call__(self, event: StepEvent) -> None:
        self.events.append(event)


def hung_stage(stage: Stage, engine: aiodocker.Docker) -> Stage:
    runtime = DockerRuntime(
        engine, deadlines={stage.environment.compose_project: DEADLINE}, default_seconds=DEADLINE
    )
    return replace(stage, services=replace(stage.services, runtime=runtime))


async def test_hung_engine_fails_the_pre_flight_within_its_deadline(
    stage: Stage, hung_engine: aiodocker.Docker, docker: aiodocker.Docker
) -> None:
    """Issue 7: a hung engine stalled pre-flight (and its planning lock) forever."""
    hung = hung_stage(stage, hung_engine)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await plan_rollback(hung.services, hung.environment.name, None)
    assert time.monotonic() - began < DEADLINE + 2
    assert str(caught.value) == "Timed out after 1 s: the Docker engine did not answer (version)"
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_engine_hanging_after_the_plan_fails_the_run_and_nothing_changes(
    stage: Stage, hung_engine: aiodocker.Docker, docker: aiodocker.Docker
) -> None:
    """Issue 7: the engine stops answering between the plan and the stop; the run ends
    within the deadline with a clear message, the data and the containers untouched."""
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    hung = hung_stage(stage, hung_engine)
    began = time.monotonic()
    result = await rollback_database(hung.services, plan, requested_by="t", listener=Recorder())
    assert time.monotonic() - began < 3 * DEADLINE + 3
    assert not result.ok
    assert result.error == (
        "Timed out after 1 s: the Docker engine did not answer "
        f"(listing the containers of {stage.environment.compose_project})"
    )
    assert "container state unknown (Timed out after 1 s" in result.environment_state
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert (await stage.services.store.get(result.run_id)).status is RunStatus.FAILED
