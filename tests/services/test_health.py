"""Health checks end at their deadline even when an endpoint never answers (issue 7)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiodocker
import pytest
from aiohttp import web

from sandbox.demo_environment import database_snapshot
from services.environments import HealthConfig, HttpCheck, Strategy
from services.events import StepEvent
from services.health import run_health_checks
from services.workflow import plan_rollback, rollback_database
from tests.services.conftest import Stage, change_after_backup, container_states

DEADLINE = 1.5


class Recorder:
    async def __call__(self, event: StepEvent) -> None:
        pass


@pytest.fixture
async def hanging_url() -> AsyncIterator[str]:
    """An HTTP endpoint that accepts the request and never answers."""
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/health", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/health"
    finally:
        release.set()
        await runner.cleanup()


def hanging_health(url: str) -> HealthConfig:
    # The check's own timeout is far beyond the deadline: the deadline must win.
    return HealthConfig(
        http=(HttpCheck(name="web", url=url, timeout_seconds=60),),
        deadline_seconds=DEADLINE,
        interval_seconds=0.2,
    )


async def test_hanging_endpoint_is_a_failed_check_at_the_deadline(
    stage: Stage, hanging_url: str
) -> None:
    """Issue 7: a probe was bounded only by its own timeout, not by the health deadline."""
    environment = stage.environment.model_copy(update={"health": hanging_health(hanging_url)})
    began = time.monotonic()
    report = await run_health_checks(
        environment,
        session=stage.services.http,
        runtime=stage.services.runtime,
        database=stage.target(),
    )
    assert time.monotonic() - began < DEADLINE + 1
    assert [(r.name, r.ok) for r in report.failed] == [("web", False)]
    assert report.failed[0].detail.startswith("no answer within 1.")


async def test_swap_with_a_hanging_endpoint_goes_back_within_the_deadline(
    stage: Stage, hanging_url: str, docker: aiodocker.Docker
) -> None:
    """Issue 7: the run ends with the health failure named, swapped back: data unchanged,
    containers running."""
    staged = stage.with_environment(strategy=Strategy.SWAP, health=hanging_health(hanging_url))
    await change_after_backup(staged.dsn)
    before = await database_snapshot(staged.dsn)
    plan = await plan_rollback(staged.services, staged.environment.name, None)
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    result = await rollback_database(staged.services, plan, requested_by="t", listener=Recorder())
    assert not result.ok
    assert (result.error or "").startswith("Health checks failed: web: no answer within 1.")
    health = next(s for s in result.steps if s.step.value == "health")
    assert health.seconds < DEADLINE + 1
    assert "undone automatically" in result.environment_state
    assert await database_snapshot(staged.dsn) == before
    assert set((await container_states(docker, staged.project)).values()) == {"running"}
