"""The swap strategy through Slack: preparation before approval, the data-loss preview,
the cut-over, and the Undo button (issue #4)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiodocker
import asyncpg
import pytest

from handlers.ids import ActionId
from sandbox.demo_environment import database_snapshot
from sandbox.slack import render_message
from services.environments import Strategy
from services.pgtools import with_database
from services.run_store import RunStatus
from services.swap import derived_from
from tests.handlers.conftest import (
    ALICE,
    BOB,
    BOT_TOKEN,
    DAVE,
    ERIN,
    INCIDENTS,
    POLICY,
    SIGNING_SECRET,
    MakeBot,
)
from tests.services.conftest import Stage, change_after_backup, container_states


async def databases(dsn: str) -> set[str]:
    connection = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        return {r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


async def drop_leftovers(dsn: str, name: str) -> None:
    connection = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        for database in await databases(dsn):
            if derived_from(name, database):
                await connection.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        await connection.close()


async def test_swap_prepares_before_approval_and_can_be_undone_from_slack(
    make_bot: MakeBot, docker: aiodocker.Docker
) -> None:
    """The undo needs the rollback's approvals too (issue 8: one approver sufficed)."""
    policy = POLICY.model_copy(update={"required_approvals": 2})
    bot = await make_bot(strategy=Strategy.SWAP, policy=policy)
    ws, stage = bot.workspace, bot.stage
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    try:
        plan = await bot.command(ALICE, bot.environment)
        (run,) = await bot.runs()
        # Before anyone approves: the staging restore ran and the preview is in the message.
        await ws.wait_for(lambda: "Data-loss preview" in "\n".join(render_message(plan)), 30)
        shown = "\n".join(render_message(plan))
        assert "awaiting approval" in shown
        assert "✓ Restore into a staging database" in shown
        assert "public.orders" in shown and "public.feature_flags" in shown
        assert any(n.endswith(run.id.replace("-", "_")) for n in await databases(stage.dsn))
        assert (await bot.stage.services.store.get(run.id)).status is RunStatus.AWAITING_APPROVAL

        await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
        await bot.ephemeral(BOB)
        await bot.slack.click(ERIN.id, plan, ActionId.APPROVE)
        final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
        assert final.status is RunStatus.SUCCEEDED, final.result
        assert await database_snapshot(stage.dsn) == at_backup
        await ws.wait_for(lambda: "[ Undo rollback ]" in "\n".join(render_message(plan)), 10)
        shown = "\n".join(render_message(plan))
        assert "✓ Swap the databases" in shown and "database unusable" in shown
        assert "kept as" in shown and "for an instant undo" in shown

        # Not an approver: refused, nothing changes.
        await bot.slack.click(DAVE.id, plan, ActionId.UNDO)
        refusal = await bot.ephemeral(DAVE)
        assert "not an approver" in refusal.text
        assert await database_snapshot(stage.dsn) == at_backup

        await bot.slack.click(BOB.id, plan, ActionId.UNDO)
        assert "recorded (1 of 2)" in (await bot.ephemeral(BOB, 2)).text
        asked = await ws.wait_for(
            lambda: [
                shown
                for m in ws.thread(INCIDENTS.id, plan.ts)
                if "approved undoing" in (shown := "\n".join(render_message(m)))
            ]
        )
        assert "@U0BOB approved undoing this rollback (1 of 2" in asked[0]
        await asyncio.sleep(0.3)
        assert await database_snapshot(stage.dsn) == at_backup
        await bot.slack.click(ERIN.id, plan, ActionId.UNDO)
        assert "the undo starts now" in (await bot.ephemeral(ERIN, 2)).text
        await ws.wait_for(
            lambda: any("Undone" in m.text for m in ws.thread(INCIDENTS.id, plan.ts)), 60
        )
        assert await database_snapshot(stage.dsn) == before
        assert set((await container_states(docker, stage.project)).values()) == {"running"}
        await ws.wait_for(lambda: "Undone* by run" in "\n".join(render_message(plan)), 10)
        assert "[ Undo rollback ]" not in "\n".join(render_message(plan))
    finally:
        await drop_leftovers(stage.dsn, stage.database.name)


async def test_rejected_swap_request_drops_its_staging_database(make_bot: MakeBot) -> None:
    bot = await make_bot(strategy=Strategy.SWAP)
    ws, stage = bot.workspace, bot.stage
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await ws.wait_for(lambda: "Data-loss preview" in "\n".join(render_message(plan)), 30)
    staging = {n for n in await databases(stage.dsn) if "__rb_staging_" in n}
    assert len(staging) == 1
    await bot.slack.click(BOB.id, plan, ActionId.REJECT)
    await bot.wait_for_run(run.id, lambda r: r.status is RunStatus.REJECTED)
    for _ in range(100):
        if not staging & await databases(stage.dsn):
            break
        await asyncio.sleep(0.1)
    assert not staging & await databases(stage.dsn)


async def test_no_secret_in_any_log_line_or_anything_slack_received(
    make_bot: MakeBot, stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """issue 8: during a whole swap rollback through Slack (request, preparation, approval,
    cut-over, report) no log line at any level and nothing the workspace received carries
    the bot token, the signing secret or the database password."""
    password = "db-pass-Zq81"  # the throwaway cluster trusts; libpq still sends it
    url = stage.dsn.replace("postgres@", f"postgres:{password}@", 1)
    assert password in url
    caplog.set_level(logging.DEBUG)
    bot = await make_bot(strategy=Strategy.SWAP, database_url=url)
    ws = bot.workspace
    await change_after_backup(stage.dsn)
    try:
        plan = await bot.command(ALICE, bot.environment)
        (run,) = await bot.runs()
        await ws.wait_for(lambda: "Data-loss preview" in "\n".join(render_message(plan)), 30)
        await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
        final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
        assert final.status is RunStatus.SUCCEEDED, final.result
        await ws.wait_for(lambda: len(ws.thread(INCIDENTS.id, plan.ts)) >= 1, 10)
    finally:
        await drop_leftovers(stage.dsn, stage.database.name)
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    received = [json.dumps(c.params) for c in ws.calls]
    assert len(logged) > 50 and len(received) > 10  # the scan saw the whole run
    for secret in (BOT_TOKEN, SIGNING_SECRET, password):
        assert not [line for line in logged if secret in line], secret
        assert not [body for body in received if secret in body], secret
