"""The whole rollback driven only by signed Slack requests through the sandbox (issue #3)."""

from __future__ import annotations

import itertools
import time

import aiodocker

from bot.app import BotOptions
from handlers.ids import ActionId
from sandbox.demo_environment import database_snapshot
from sandbox.slack import render_message
from services.run_store import RunStatus
from tests.handlers.conftest import ALERTS, ALICE, BOB, CAROL, INCIDENTS, MakeBot
from tests.services.conftest import change_after_backup, container_states


async def test_command_to_approved_rollback_with_live_updates_and_report(
    make_bot: MakeBot, docker: aiodocker.Docker
) -> None:
    # Updates every 0.25 s (default 1 s) so that this short rollback shows its steps live.
    bot = await make_bot(options=BotOptions(update_interval=0.25, sweep_interval=0.2))
    ws, stage = bot.workspace, bot.stage
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)

    started = time.monotonic()
    delivery = await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", bot.environment)
    assert delivery.status == 200 and delivery.elapsed < 3
    plan = await ws.wait_for(lambda: ws.latest_message(INCIDENTS.id))
    assert time.monotonic() - started < 1.0, "the plan message must appear within a second"
    shown = "\n".join(render_message(plan))
    assert f"Rollback of {bot.environment}: awaiting approval" in shown
    assert stage.backup.name in shown and "Containers that will stop (2)" in shown
    assert "Rollback checklist" in shown and "[ Approve ]" in shown

    (run,) = await bot.runs()
    assert run.status is RunStatus.AWAITING_APPROVAL and run.requested_by == ALICE.id
    run = await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    assert (run.slack_channel, run.slack_ts) == (INCIDENTS.id, plan.ts)

    # Contacts: Carol by direct message, the DBA group mentioned in #alerts, with a link.
    (dm,) = await ws.wait_for(lambda: ws.dms(CAROL.id))
    assert bot.environment in dm.text and "/archives/C0INCIDENTS/p" in dm.text
    (mention,) = await ws.wait_for(lambda: ws.messages(ALERTS.id))
    assert mention.text.startswith("<!subteam^S0DBA>")

    delivery = await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    assert delivery.status == 200
    reply = await bot.ephemeral(BOB)
    assert "starts now" in reply.text

    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert final.status is RunStatus.SUCCEEDED, final.result
    await ws.wait_for(lambda: "done" in plan.text and len(ws.thread(INCIDENTS.id, plan.ts)) >= 1)
    shown = "\n".join(render_message(plan))
    for label in (
        "Stop containers",
        "Safety backup",
        "Restore database",
        "Start containers",
        "Health checks",
    ):
        assert f"✓ {label}" in shown, shown
    assert "⏳" not in shown and "✗" not in shown
    assert "Health checks" in shown and "HTTP 200" in shown
    assert "Approve" not in render_message(plan)[-2]  # the buttons are gone
    # Updated live: steps seen in progress, and never two edits within the interval.
    assert any("⏳" in str(e.blocks) for e in plan.edits), "no update showed a running step"
    times = [c.at for c in ws.calls_to("chat.update") if c.params.get("ts") == plan.ts]
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times)), times

    (report,) = ws.thread(INCIDENTS.id, plan.ts)
    text = "\n".join(render_message(report))
    assert "Incident report" in text and "<@U0BOB>" in report.blocks[1]["fields"][2]["text"]
    assert "Data-loss window" in text and "pre-rollback-" in text
    assert "Stop containers done" in text

    # Told at the end too.
    await ws.wait_for(lambda: len(ws.dms(CAROL.id)) == 2)
    assert "ended" in ws.dms(CAROL.id)[-1].text

    # Every message the bot sent passed the sandbox's Block Kit checks (slack_sdk models and
    # Slack's limits); no call failed or was dropped.
    assert [c.method for c in ws.calls if not c.ok and c.status != 429] == []

    assert await database_snapshot(stage.dsn) == at_backup
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    kinds = [e.kind for e in await stage.services.store.events(run.id)]
    assert kinds[0] == "requested" and "approved" in kinds and "approval_granted" in kinds
    # (journal events record what each step changed, for recovery)
    # (then the bot watches the environment for monitor_minutes: issue 9)
    assert [k for k in kinds if k != "journal"][-3:] == ["finished", "monitor_started", "notified"]
