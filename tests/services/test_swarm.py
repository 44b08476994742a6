"""Issue 10: an environment on a Swarm stack, rolled back for real on a one-node swarm.

The engine becomes a swarm manager for this module only (`swarm_mode`: it leaves the
swarm at the end whatever happens, and only a swarm it made). The stack's services run the
FROM-scratch busybox image by its ID (no registry is asked). What a responder relies on
is asserted: every service at 0 while the database changes, back to its exact replica
count after, the data equal to the backup, a failed convergence reported and undone, and
after a SIGKILL the recovery scales back to the counts the run journalled.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import aiodocker
import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from sandbox.demo_environment import ComposeProject, database_snapshot, seed_demo_database
from sandbox.swarm_stack import (
    Stack,
    StackService,
    create_stack,
    remove_stack,
    replicas,
    running_tasks,
    swarm_mode,
)
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.bundle import Services
from services.database import DatabaseTarget, dump_database
from services.environments import Environment, HealthConfig, HttpCheck, Strategy, Timeouts
from services.errors import ContainerError, NoContainers
from services.events import EventKind, Step, StepEvent
from services.pgtools import PgTools, mask_password
from services.run_store import RunStatus, RunStore
from services.runtimes import route_environments
from services.workflow import plan_rollback, rollback_database
from tests.bot.test_cli import write_config
from tests.conftest import FreshDatabase
from tests.services.conftest import Stage, change_after_backup
from tests.services.test_recovery import at_step, grow_and_back_up, kill_during, recover

MakeStack = Callable[[Sequence[StackService]], Awaitable[Stack]]
WEB_AND_WORKERS = (StackService("web", 1, web=True), StackService("worker", 2))


@pytest.fixture(scope="module")
async def swarm(docker: aiodocker.Docker) -> AsyncIterator[bool]:
    async with swarm_mode(docker) as made:
        yield made


@pytest.fixture
async def make_stack(
    swarm: bool, docker: aiodocker.Docker, demo_image: str
) -> AsyncIterator[MakeStack]:
    made: list[str] = []

    async def make(services: Sequence[StackService]) -> Stack:
        name = f"rbswarm-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return await create_stack(docker, name, services, demo_image)

    try:
        yield make
    finally:
        for name in made:
            await remove_stack(docker, name)


def stack_environment(name: str, dsn: str, backups: Path, stack: Stack) -> Environment:
    return Environment(
        name=name,
        stack=stack.name,
        database_url=SecretStr(dsn),
        database_display=mask_password(dsn),
        backups_dir=backups,
        stop_timeout_seconds=5,
        strategy=Strategy.IN_PLACE,
        health=HealthConfig(
            http=tuple(HttpCheck(name=s, url=u) for s, u in stack.web_urls.items()),
            deadline_seconds=20,
            interval_seconds=0.2,
        ),
    )


@pytest.fixture
async def swarm_stage(
    fresh_db: FreshDatabase,
    make_stack: MakeStack,
    docker: aiodocker.Docker,
    http: aiohttp.ClientSession,
    tools: PgTools,
    store_pool: asyncpg.Pool,
    tmp_path: Path,
) -> tuple[Stage, Stack]:
    """A seeded database with one backup, and a stack: web (1 replica) and worker (2)."""
    await seed_demo_database(fresh_db.dsn, rows=2000)
    backups = tmp_path / "backups"
    backups.mkdir()
    backup = await dump_database(
        DatabaseTarget(fresh_db.dsn, tools), backups / "pre-deployment-20241203-120000.dump"
    )
    stack = await make_stack(WEB_AND_WORKERS)
    name = f"env-{uuid.uuid4().hex[:8]}"
    environment = stack_environment(name, fresh_db.dsn, backups, stack)
    services = Services(
        environments={name: environment},
        runtime=route_environments({name: environment}, {None: docker}),
        http=http,
        tools=tools,
        store=RunStore(store_pool),
    )
    stage = Stage(environment, fresh_db, ComposeProject(stack.name, ()), backup, services)
    return stage, stack


async def counts(docker: aiodocker.Docker, stack: Stack) -> dict[str, tuple[int, int]]:
    """service -> (replicas it is set to, tasks running)."""
    return {
        service: (await replicas(docker, sid), await running_tasks(docker, sid))
        for service, sid in stack.service_ids.items()
    }


async def place(docker: aiodocker.Docker, service_id: str, constraints: list[str]) -> None:
    """What a bad deployment can do to a service: tasks no node can take."""
    service = await docker.services.inspect(service_id)
    spec = service["Spec"]
    spec["TaskTemplate"]["Placement"] = {"Constraints": constraints}
    await docker._query_json(
        f"services/{service_id}/update",
        method="POST",
        params={"version": str(service["Version"]["Index"])},
        data=spec,
    )


async def test_a_stack_is_scaled_to_zero_during_the_rollback_and_back_to_its_exact_counts(
    swarm_stage: tuple[Stage, Stack], docker: aiodocker.Docker
) -> None:
    stage, stack = swarm_stage
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)

    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert [(c.name, c.replicas, c.state) for c in plan.containers] == [
        (stack.full_name("web"), 1, "running"),
        (stack.full_name("worker"), 2, "running"),
    ]
    during: dict[str, tuple[int, int]] = {}

    async def listener(event: StepEvent) -> None:
        if event.step is Step.STOP and event.kind is EventKind.FINISHED:
            during.update(await counts(docker, stack))

    result = await rollback_database(stage.services, plan, requested_by="U1", listener=listener)

    assert result.ok, result.environment_state
    assert during == {"web": (0, 0), "worker": (0, 0)}
    assert await counts(docker, stack) == {"web": (1, 1), "worker": (2, 2)}
    assert await database_snapshot(stage.dsn) == at_backup
    assert result.health is not None
    by_kind = {r.kind: r for r in result.health.results}
    assert by_kind["containers"].ok and by_kind["containers"].detail == "2 running"
    assert by_kind["http"].ok
    # What recovery would read: the exact counts, journalled before anything stopped.
    run = await stage.services.store.get(result.run_id)
    assert sorted((r["name"], r["replicas"]) for r in run.journal["stopping"]) == [
        (stack.full_name("web"), 1),
        (stack.full_name("worker"), 2),
    ]


async def test_a_failed_convergence_is_reported_and_the_swap_undone(
    swarm_stage: tuple[Stage, Stack], docker: aiodocker.Docker
) -> None:
    stage, stack = swarm_stage
    stage = stage.with_environment(strategy=Strategy.SWAP, timeouts=Timeouts(docker_seconds=4))
    # The stack's deadline is the environment's: a router for the changed environment.
    environments = {stage.environment.name: stage.environment}
    services = replace(stage.services, runtime=route_environments(environments, {None: docker}))
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    worker = stack.service_ids["worker"]
    broken: list[str] = []

    async def bad_deployment(event: StepEvent) -> None:
        # While it is at 0, the worker gets tasks no node can take; once the start has
        # failed, an operator fixes it, so the compensation can bring it back.
        if event.step is Step.STOP and event.kind is EventKind.FINISHED and not broken:
            await place(docker, worker, ["node.labels.rbtest-nowhere==true"])
            broken.append("worker")
        if event.step is Step.START and event.kind is EventKind.FAILED:
            await place(docker, worker, [])

    plan = await plan_rollback(services, stage.environment.name, None)
    assert plan.strategy is Strategy.SWAP
    result = await rollback_database(services, plan, requested_by="U1", listener=bad_deployment)

    assert not result.ok
    assert result.error is not None
    assert (
        f"{stack.full_name('worker')}: its tasks did not converge to 2 running within 4 s"
        in result.error
    ), result.error
    assert "no suitable node" in result.error
    assert "undone automatically" in result.environment_state
    assert f"{stage.environment.name}: all 2 containers running" in result.environment_state
    assert await database_snapshot(stage.dsn) == before
    assert await counts(docker, stack) == {"web": (1, 1), "worker": (2, 2)}
    outcome = {(s.step, s.ok) for s in result.steps}
    assert {(Step.START, False), (Step.SWAP_BACK, True), (Step.RESTART, True)} <= outcome


async def test_killed_after_the_stop_recovery_scales_back_to_the_exact_counts(
    swarm_stage: tuple[Stage, Stack],
    docker: aiodocker.Docker,
    pg: ThrowawayPostgres,
    tmp_path: Path,
) -> None:
    stage, stack = swarm_stage
    await grow_and_back_up(stage, rows=20_000)  # a safety backup long enough to be caught
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    config = write_config(stage, tmp_path)
    run = await kill_during(stage, pg, config, at_step("safety_backup"))
    assert await counts(docker, stack) == {"web": (0, 0), "worker": (0, 0)}

    shown = await recover(stage, pg, config)

    assert await counts(docker, stack) == {"web": (1, 1), "worker": (2, 2)}
    recovered = await stage.services.store.get(run.id)
    assert recovered.status is RunStatus.INTERRUPTED
    summary = (recovered.result or {})["recovery"]
    assert summary["problems"] == []
    assert "started 2 container(s) the run had stopped" in summary["actions"]
    assert summary["data"] == "unchanged"
    assert await database_snapshot(stage.dsn) == before
    assert f"all 2 containers of {stage.environment.name} running" in shown
    assert "health checks pass" in shown


async def test_a_stack_with_a_global_service_is_refused_at_plan_time(
    swarm_stage: tuple[Stage, Stack], docker: aiodocker.Docker, demo_image: str
) -> None:
    stage, stack = swarm_stage
    image_id = (await docker.images.inspect(demo_image))["Id"]
    await docker.services.create(
        {"ContainerSpec": {"Image": image_id, "Args": ["/bin/busybox", "sleep", "9999"]}},
        name=stack.full_name("agent"),
        labels={"com.docker.stack.namespace": stack.name},
        mode={"Global": {}},
    )

    with pytest.raises(ContainerError, match="is in global mode") as caught:
        await plan_rollback(stage.services, stage.environment.name, None)

    assert stack.full_name("agent") in str(caught.value)
    assert await counts(docker, stack) == {"web": (1, 1), "worker": (2, 2)}


async def test_a_stack_without_services_is_named_in_the_refusal(
    swarm_stage: tuple[Stage, Stack], docker: aiodocker.Docker
) -> None:
    stage, _ = swarm_stage
    stage = stage.with_environment(stack="rbswarm-nothing-here")
    environments = {stage.environment.name: stage.environment}
    services = replace(stage.services, runtime=route_environments(environments, {None: docker}))

    with pytest.raises(NoContainers) as caught:
        await plan_rollback(services, stage.environment.name, None)

    assert str(caught.value) == (
        "No containers found for Swarm stack 'rbswarm-nothing-here' "
        "(label com.docker.stack.namespace)."
    )


async def test_a_service_s_logs_are_read_through_the_router(
    make_stack: MakeStack, docker: aiodocker.Docker
) -> None:
    """What the health step's log excerpt reads for a stack: the service's tasks' lines."""
    talker = (
        "/bin/busybox",
        "sh",
        "-c",
        "echo hello from the task; exec /bin/busybox sleep 2147483647",
    )
    stack = await make_stack([StackService("talker", 1, command=talker)])
    environment = Environment(
        name="talks",
        stack=stack.name,
        database_url=SecretStr("postgresql://nobody@127.0.0.1/none"),
        database_display="postgresql://nobody@127.0.0.1/none",
        backups_dir=Path("/nonexistent"),
    )
    runtime = route_environments({"talks": environment}, {None: docker})
    (service,) = await runtime.containers(environment.workload)

    text = await runtime.logs(service, 10)

    assert "hello from the task" in text
