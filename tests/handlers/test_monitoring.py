"""Issue 9, "After Rollback": the bot watches the environment for monitor_minutes after a
successful rollback, and what the channel, the thread and the contacts see."""

from __future__ import annotations

import asyncio
import json

from handlers.ids import ActionId
from sandbox.slack import Message, SandboxWorkspace, render_message
from services.run_store import RunRecord, RunStatus
from services.watch_store import WatchStore
from tests.handlers.conftest import ALERTS, ALICE, BOB, CAROL, INCIDENTS, Bot, MakeBot
from tests.monitored import (
    KNOWN_LINE,
    SECRET,
    TOKEN,
    URL_PASSWORD,
    MakeProject,
    health_switch,
    monitored_settings,
)
from tests.services.conftest import change_after_backup


def shown(message: Message) -> str:
    return "\n".join(render_message(message))


def thread_text(ws: SandboxWorkspace, plan: Message) -> str:
    return "\n".join(shown(m) for m in ws.thread(INCIDENTS.id, plan.ts))


async def approved_and_done(bot: Bot, plan: Message) -> RunRecord:
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    done = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert done.status is RunStatus.SUCCEEDED, done.result
    return done


async def watching_until(bot: Bot, run: RunRecord) -> str:
    """What the message says once the window is open (just after the run's report)."""
    windows = WatchStore(bot.stage.services.store.pool)
    while True:
        window = await windows.get(run.id)
        if window is not None:
            return f"watching until {window.until:%H:%M} UTC"
        await asyncio.sleep(0.05)


async def test_the_bot_watches_after_the_rollback_and_reports_healthy_throughout(
    make_bot: MakeBot, make_compose_project: MakeProject
) -> None:
    async with health_switch() as switch:
        _, settings = await monitored_settings(make_compose_project, switch, minutes=0.04)
        bot = await make_bot(environment=settings)
        ws = bot.workspace
        await change_after_backup(bot.stage.dsn)
        plan = await bot.command(ALICE, bot.environment)
        run = await approved_and_done(bot, plan)

        # The run is finished and the environment free while it is watched.
        until = await watching_until(bot, run)
        await ws.wait_for(lambda: until in shown(plan), timeout=10)
        assert "☑ Monitoring active — the bot" in shown(plan)
        assert await bot.stage.services.store.active_run(bot.environment) is None

        await ws.wait_for(
            lambda: "Monitoring 2.4 s: healthy throughout" in thread_text(ws, plan), timeout=15
        )
        await ws.wait_for(lambda: "healthy throughout" in shown(plan), timeout=5)
        kinds = [e.kind for e in await bot.stage.services.store.events(run.id)]
        assert kinds.count("monitor_started") == 1 and kinds.count("monitor_ended") == 1
        assert "monitor_check" in kinds and "monitor_degraded" not in kinds
        assert not any("DEGRADED" in m.text for m in ws.dms(CAROL.id))  # nobody was alarmed
        await bot.tasks.aclose()  # before its health endpoint goes


async def test_failing_health_while_watched_alerts_the_contacts_with_the_logs(
    make_bot: MakeBot, make_compose_project: MakeProject
) -> None:
    async with health_switch() as switch:
        project, settings = await monitored_settings(make_compose_project, switch, minutes=0.1)
        bot = await make_bot(environment=settings)
        ws = bot.workspace
        plan = await bot.command(ALICE, bot.environment)
        run = await approved_and_done(bot, plan)
        await ws.wait_for(lambda: "watching until" in shown(plan), timeout=10)

        switch.status = 500  # the application breaks after the rollback
        dm = await ws.wait_for(
            lambda: next((m for m in ws.dms(CAROL.id) if "DEGRADED" in m.text), None), timeout=10
        )
        assert "orders-api: HTTP 500, expected 200" in dm.text and "/archives/" in dm.text
        await ws.wait_for(  # the DBA group, mentioned in the contacts' channel
            lambda: any("DEGRADED" in m.text for m in ws.messages(ALERTS.id)), timeout=5
        )
        await ws.wait_for(lambda: KNOWN_LINE in thread_text(ws, plan), timeout=10)
        thread = thread_text(ws, plan)
        assert "Health DEGRADED" in thread and project.container_names["web"] in thread
        await ws.wait_for(lambda: "health DEGRADED since" in shown(plan), timeout=5)

        switch.status = 200
        await ws.wait_for(lambda: "is healthy again after" in thread_text(ws, plan), timeout=10)
        await ws.wait_for(lambda: any("healthy again" in m.text for m in ws.dms(CAROL.id)))
        line = await ws.wait_for(
            lambda: next(
                (
                    text
                    for m in ws.thread(INCIDENTS.id, plan.ts)
                    if "Monitoring 6.0 s: degraded at" in (text := shown(m))
                ),
                None,
            ),
            timeout=15,
        )
        assert "(orders-api: HTTP 500, expected 200); healthy at the end" in line

        # What the logs said, and never a secret, anywhere Slack was sent anything.
        sent = json.dumps([c.params for c in ws.calls], ensure_ascii=False)
        assert KNOWN_LINE in sent
        for secret in (SECRET, TOKEN, URL_PASSWORD):
            assert secret not in sent
        events = await bot.stage.services.store.events(run.id)
        assert "log_excerpt" in [e.kind for e in events]
        assert SECRET not in json.dumps([e.detail for e in events])
        await bot.tasks.aclose()  # before its health endpoint goes


async def test_failing_health_in_the_rollback_puts_the_logs_after_the_failure(
    make_bot: MakeBot, make_compose_project: MakeProject
) -> None:
    async with health_switch() as switch:
        project, settings = await monitored_settings(make_compose_project, switch, minutes=10)
        settings["health"] = settings["health"].model_copy(update={"deadline_seconds": 1.0})
        bot = await make_bot(environment=settings)
        ws = bot.workspace
        switch.status = 500
        plan = await bot.command(ALICE, bot.environment)
        (run,) = await bot.runs()
        await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
        await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
        done = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
        assert done.status is RunStatus.FAILED

        await ws.wait_for(lambda: "Incident report" in thread_text(ws, plan), timeout=15)
        replies = [shown(m) for m in ws.thread(INCIDENTS.id, plan.ts)]
        failure = next(i for i, r in enumerate(replies) if "Health checks* failed" in r)
        excerpt = next(i for i, r in enumerate(replies) if KNOWN_LINE in r)
        assert failure < excerpt < len(replies) - 1  # then the report
        assert project.container_names["web"] in replies[excerpt]
        assert SECRET not in json.dumps([c.params for c in ws.calls])
        assert "watching until" not in shown(plan)  # a failed rollback is not watched
