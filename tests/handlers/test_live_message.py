"""Rate limits, expiry, escalation and a changed plan, as the channel sees them (issue #3)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from bot.app import BotOptions
from handlers.ids import ActionId
from sandbox.slack import Message, RateLimit, render_message
from services.database import dump_database
from services.environments import ApprovalPolicy
from services.run_store import RunStatus
from tests.handlers.conftest import ALICE, BOB, ERIN, INCIDENTS, MAX, POLICY, MakeBot
from tests.services.conftest import change_after_backup


def shown_text(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


async def test_a_429_is_honoured_and_the_final_message_is_right(make_bot: MakeBot) -> None:
    bot = await make_bot(options=BotOptions(update_interval=0.05, sweep_interval=0.2))
    ws = bot.workspace
    # Far tighter than Slack: two updates, then one every 1.5 s.
    ws.set_rate_limit("chat.update", RateLimit(per_minute=40, burst=2))
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert final.status is RunStatus.SUCCEEDED
    await ws.wait_for(lambda: ws.thread(INCIDENTS.id, plan.ts), timeout=30)
    assert ws.ratelimited_by_method["chat.update"] >= 1, "the test did not hit the limit"
    shown = "\n".join(render_message(plan))
    assert "Rollback of" in shown and ": done" in shown
    for label in ("Stop containers", "Restore database", "Health checks"):
        assert f"✓ {label}" in shown
    # Every 429 was followed by a retry that got through, not dropped.
    updates = ws.calls_to("chat.update")
    assert updates[-1].ok


async def test_unapproved_request_is_escalated_then_expires(make_bot: MakeBot) -> None:
    policy = POLICY.model_copy(update={"expiry_minutes": 0.05, "escalate_after_minutes": 0.01})
    bot = await make_bot(policy=policy)
    ws = bot.workspace
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    # Escalated after ~0.6 s: Max gets a direct message, the message says so.
    (dm,) = await ws.wait_for(lambda: ws.dms(MAX.id), timeout=10)
    assert "Escalation" in dm.text and "/archives/" in dm.text
    await ws.wait_for(lambda: "escalated to <@U0MAX>" in json.dumps(plan.blocks), timeout=10)
    # Expired after 3 s: the buttons go, a click is explained, nothing runs.
    expired = await bot.wait_for_run(run.id, lambda r: r.status is RunStatus.EXPIRED, timeout=10)
    assert expired.started_at is None
    await ws.wait_for(lambda: ": expired" in plan.text, timeout=10)
    assert all(b.get("block_id") != "rollback.decision" for b in plan.blocks)
    kinds = [e.kind for e in await bot.stage.services.store.events(run.id)]
    assert kinds.count("escalated") == 1 and kinds.count("expired") == 1


async def test_a_newer_backup_invalidates_earlier_approvals(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=POLICY.model_copy(update={"required_approvals": 2}))
    ws, stage = bot.workspace, bot.stage
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    assert "1 of 2" in (await bot.ephemeral(BOB)).text

    # A newer backup appears: the run asked for "the newest", so its plan changes.
    # Taken now: a future-dated one is never the default (issue 8).
    newer = stage.environment.backups_dir / f"pre-deployment-{datetime.now(UTC):%Y%m%d-%H%M%S}.dump"
    await dump_database(stage.target(), newer)
    before = [c.params.get("blocks") for c in ws.calls_to("chat.update")]
    await bot.slack.click(ERIN.id, plan, ActionId.APPROVE)
    note = (await bot.ephemeral(ERIN)).text
    assert "plan changed" in note and newer.name in note
    await ws.wait_for(lambda: newer.name in json.dumps(plan.blocks))
    shown = json.dumps(plan.blocks)
    assert "approvals given before no longer count" in shown and "0 of 2" in shown
    assert before != [c.params.get("blocks") for c in ws.calls_to("chat.update")]
    changed = await bot.stage.services.store.get(run.id)
    assert changed.status is RunStatus.AWAITING_APPROVAL and changed.backup_name == newer.name

    # Approving the new plan takes two fresh approvals; Bob's old one no longer counts.
    await bot.slack.click(ERIN.id, plan, ActionId.APPROVE)
    assert "1 of 2" in (await bot.ephemeral(ERIN, 2)).text
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    assert "starts now" in (await bot.ephemeral(BOB, 2)).text
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert final.status is RunStatus.SUCCEEDED and final.backup_name == newer.name


async def test_a_changed_backup_file_invalidates_the_approval(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=POLICY.model_copy(update={"required_approvals": 1}))
    stage = bot.stage
    plan = await bot.command(ALICE, f"{bot.environment} {stage.backup.name}")
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    # The same file name, other contents (someone re-ran the backup script after changes).
    await change_after_backup(stage.dsn)
    os.remove(stage.backup.path)
    await dump_database(stage.target(), stage.backup.path)
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    note = (await bot.ephemeral(BOB)).text
    assert "checksum differs" in note
    changed = await stage.services.store.get(run.id)
    assert changed.status is RunStatus.AWAITING_APPROVAL
    assert changed.backup_sha256 != run.backup_sha256


async def test_checklist_ticks_are_recorded_and_shown(make_bot: MakeBot) -> None:
    bot = await make_bot()
    ws = bot.workspace
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    await bot.slack.select_checkboxes(ERIN.id, plan, ActionId.CHECKLIST, ["assessed", "monitoring"])
    await ws.wait_for(
        lambda: (
            "☑ Monitoring active — <@U0ERIN>" in shown_text(plan)
            and "☑ Team notified — the bot" in shown_text(plan)
        )
    )
    shown = shown_text(plan)
    assert "☑ Issue identified and assessed — <@U0ERIN>" in shown
    assert "☑ Rollback procedure selected — the bot" in shown
    assert "☑ Team notified — the bot" in shown
    events = [e for e in await bot.stage.services.store.events(run.id) if e.kind == "checklist"]
    assert {(e.actor, e.detail["item"], e.detail["ticked"]) for e in events} == {
        (ERIN.id, "assessed", True),
        (ERIN.id, "monitoring", True),
    }
    await bot.slack.select_checkboxes(ERIN.id, plan, ActionId.CHECKLIST, ["assessed"])
    await ws.wait_for(lambda: "☐ Monitoring active" in shown_text(plan))


async def test_no_approval_needed_starts_at_once(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=ApprovalPolicy(required_approvals=0))
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert final.status is RunStatus.SUCCEEDED
    await bot.workspace.wait_for(lambda: ": done" in plan.text)
