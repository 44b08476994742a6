"""Issue 9, "After Rollback": watching an environment after its rollback, from the services
and the command line: log excerpts when health fails, a new rollback ending a watch, a
watch taken over by another process after its own was SIGKILLed, and monitor_minutes = 0."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox.throwaway_postgres import ThrowawayPostgres
from services.checklist import ChecklistItem, checklist_state
from services.events import ignore
from services.log_excerpts import recorded_excerpts
from services.monitor_events import MonitorKind
from services.monitoring import MonitorEvent, open_watch, run_watch, watches_to_take_over
from services.run_store import RunStatus
from services.watch_store import WatchStore
from services.workflow import plan_rollback, rollback_database
from tests.bot.test_cli import cli, store_env, write_config
from tests.monitored import (
    KNOWN_LINE,
    SECRET,
    TOKEN,
    URL_PASSWORD,
    MakeProject,
    health_switch,
    monitored_settings,
    watched,
)
from tests.services.conftest import Stage


async def roll_back(stage: Stage) -> str:
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    result = await rollback_database(stage.services, plan, requested_by="tester", listener=ignore)
    return result.run_id


async def test_failing_health_in_the_rollback_records_a_scrubbed_log_excerpt(
    stage: Stage, make_compose_project: MakeProject
) -> None:
    async with health_switch() as switch:
        _, settings = await monitored_settings(make_compose_project, switch, minutes=10)
        switch.status = 500
        failing = watched(stage, settings)
        failing = failing.with_environment(
            health=failing.environment.health.model_copy(update={"deadline_seconds": 1.0})
        )
        run_id = await roll_back(failing)

    run = await stage.services.store.get(run_id)
    assert run.status is RunStatus.FAILED
    (excerpt,) = await recorded_excerpts(stage.services.store, run_id, during="health")
    assert KNOWN_LINE in excerpt.text and "using api key *** and ***" in excerpt.text
    assert "postgresql://app:***@db:5432/app" in excerpt.text
    recorded = json.dumps([e.detail for e in await stage.services.store.events(run_id)])
    for secret in (SECRET, TOKEN, URL_PASSWORD):
        assert secret not in recorded
    assert await open_watch(failing.services, run_id=run_id) is None  # a failure is not watched


async def test_monitor_minutes_zero_watches_nothing(stage: Stage) -> None:
    quiet = stage.with_environment(monitor_minutes=0)
    run_id = await roll_back(quiet)

    assert await open_watch(quiet.services, run_id=run_id) is None
    assert await WatchStore(stage.services.store.pool).get(run_id) is None
    events = await stage.services.store.events(run_id)
    assert checklist_state(events)[ChecklistItem.MONITORING] is None  # left to people


async def test_a_new_rollback_ends_the_watch_of_the_previous_one(stage: Stage) -> None:
    watching = stage.with_environment(monitor_minutes=1, monitor_interval_seconds=0.3)
    first = await roll_back(watching)
    watch = await open_watch(watching.services, run_id=first)
    assert watch is not None
    seen: list[MonitorEvent] = []

    async def listen(event: MonitorEvent) -> None:
        seen.append(event)

    watcher = asyncio.create_task(run_watch(watching.services, watch, listen))
    await checks_of(stage, first, 1)

    second = await roll_back(watching)  # it stops the containers: no alarm, the watch ends
    line = await asyncio.wait_for(watcher, 20)

    assert line is not None and line.startswith("Monitoring ended after ")
    assert f"run {second} (database) rolled {stage.environment.name} back again" in line
    assert "until then healthy throughout" in line
    assert [e.kind for e in seen] == [MonitorKind.STARTED, MonitorKind.ENDED]
    kinds = [e.kind for e in await stage.services.store.events(first)]
    assert MonitorKind.DEGRADED not in kinds and kinds.count(MonitorKind.ENDED) == 1
    window = await WatchStore(stage.services.store.pool).get(first)
    assert window is not None and window.outcome == "superseded"


async def checks_of(stage: Stage, run_id: str, count: int) -> None:
    """Until the run's watch has done `count` rounds of checks."""
    while True:
        events = await stage.services.store.events(run_id)
        if sum(e.kind == MonitorKind.CHECKED for e in events) >= count:
            return
        await asyncio.sleep(0.05)


async def bot_cli(config: Path, pg: ThrowawayPostgres, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot.cli", "--config", str(config), *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **store_env(pg)},
    )


async def test_a_watch_whose_process_was_killed_is_taken_over_to_its_end(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    env = stage.environment.name
    config = write_config(
        stage, tmp_path, keys="monitor_minutes = 0.08\nmonitor_interval_seconds = 0.3"
    )
    store = stage.services.store
    watching = await bot_cli(config, pg, "rollback", env, "--yes", "--watch")
    waiting: asyncio.subprocess.Process | None = None
    try:
        while not (runs := await store.recent_runs(env, 1)):
            assert watching.returncode is None
            await asyncio.sleep(0.05)
        run_id = runs[0].id
        await checks_of(stage, run_id, 1)
        # Another process asks to watch it too: it waits while the first one watches.
        waiting = await bot_cli(config, pg, "watch", env)
        assert waiting.stdout is not None
        told = await asyncio.wait_for(waiting.stdout.readline(), 30)
        assert b"is watched by another bot process" in told, told
        watching.kill()  # mid-window
        out = (await watching.communicate())[0].decode()
        assert f"Watching {env} until " in out and "Monitoring 4.8 s" not in out

        taken, err = (s.decode() for s in await asyncio.wait_for(waiting.communicate(), 30))
    finally:
        for process in (watching, waiting):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()

    assert waiting.returncode == 0, err
    assert f"Took over the watch of {env}" in taken
    assert "Monitoring 4.8 s: healthy throughout" in taken
    events = await store.events(run_id)
    kinds = [e.kind for e in events]
    assert kinds.count(MonitorKind.RESUMED) == 1 and kinds.count(MonitorKind.ENDED) == 1
    resumed = kinds.index(MonitorKind.RESUMED)
    assert MonitorKind.CHECKED in kinds[resumed:]  # the new process checked, to the end
    code, status, _ = await cli("--config", str(config), "status", env, env=store_env(pg))
    assert code == 0
    assert f"No monitoring window of {env} open." in status


async def test_a_watch_stopped_at_shut_down_is_given_back_and_taken_over_at_once(
    stage: Stage,
) -> None:
    watching = stage.with_environment(monitor_minutes=0.05, monitor_interval_seconds=0.3)
    run_id = await roll_back(watching)
    watch = await open_watch(watching.services, run_id=run_id)
    assert watch is not None
    first = asyncio.create_task(run_watch(watching.services, watch, listen_nowhere))
    await checks_of(stage, run_id, 1)
    first.cancel()  # the bot shuts down
    with pytest.raises(asyncio.CancelledError):
        await first
    window = await WatchStore(stage.services.store.pool).get(run_id)
    assert window is not None and window.owner is None and window.ended_at is None

    # The next process (another owner) finds it at once, not after a lease expires.
    successor = replace(watching.services, owner="next-process")
    (found,) = [w for w in await watches_to_take_over(successor) if w.run_id == run_id]
    line = await run_watch(successor, found, listen_nowhere, resumed=True)

    assert line is not None and line.startswith("Monitoring 3.0 s: healthy throughout")
    kinds = [e.kind for e in await stage.services.store.events(run_id)]
    assert kinds.count(MonitorKind.RESUMED) == 1 and kinds.count(MonitorKind.ENDED) == 1


async def listen_nowhere(event: MonitorEvent) -> None:
    pass
