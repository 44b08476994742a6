"""Who may do what, bad input, forged requests, retries, double clicks, races (issue #3)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from handlers.ids import ActionId
from sandbox.slack import Message, render_message
from services.run_store import RunStatus
from tests.handlers.conftest import ALICE, BOB, DAVE, ERIN, INCIDENTS, Bot


async def assert_nothing_recorded(bot: Bot) -> None:
    assert await bot.runs() == []
    assert bot.workspace.messages(INCIDENTS.id) == []


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param({"signing_secret": "not-the-secret"}, id="forged signature"),
        pytest.param({"timestamp": time.time() - 6 * 60}, id="six minutes old"),
    ],
)
async def test_unsigned_command_is_refused_and_nothing_is_recorded(
    bot: Bot, forgery: dict[str, Any]
) -> None:
    delivery = await bot.slack.send_command(
        ALICE.id, INCIDENTS.id, "/rollback", bot.environment, **forgery
    )
    assert delivery.status == 401
    await asyncio.sleep(0.3)
    await assert_nothing_recorded(bot)
    assert bot.workspace.ephemerals(ALICE.id) == []


async def test_forged_click_changes_nothing(bot: Bot) -> None:
    plan = await bot.command(ALICE, bot.environment)
    delivery = await bot.slack.click(BOB.id, plan, ActionId.APPROVE, signing_secret="forged")
    assert delivery.status == 401
    await asyncio.sleep(0.3)
    (run,) = await bot.runs()
    assert run.status is RunStatus.AWAITING_APPROVAL
    assert await bot.stage.services.store.approvals(run.id) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("production", "Unknown environment 'production'", id="unknown env"),
        pytest.param("{env} ../../etc/passwd", "outside the backups folder", id="../ backup"),
        pytest.param("{env} missing.dump", "not found", id="missing backup"),
        pytest.param("frobnicate the thing now", "Usage", id="gibberish"),
        pytest.param("", "Name the environment", id="empty"),
        pytest.param("code {env}", "has no code rollback", id="code rollback without git"),
    ],
)
async def test_bad_input_is_answered_ephemerally_with_nothing_touched(
    bot: Bot, text: str, expected: str
) -> None:
    delivery = await bot.slack.send_command(
        ALICE.id, INCIDENTS.id, "/rollback", text.format(env=bot.environment)
    )
    assert delivery.status == 200
    reply = await bot.ephemeral(ALICE)
    assert expected in reply.text + json.dumps(reply.blocks)
    await assert_nothing_recorded(bot)
    assert bot.workspace.calls_to("chat.postMessage") == []


async def test_only_requesters_may_request(bot: Bot) -> None:
    delivery = await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", bot.environment)
    assert delivery.status == 200
    reply = await bot.ephemeral(DAVE)
    assert "may not request a rollback" in reply.text and "<@U0ALICE>" in reply.text
    await assert_nothing_recorded(bot)


async def test_self_approval_and_non_approvers_are_refused(bot: Bot) -> None:
    plan = await bot.command(ALICE, bot.environment)
    # Alice asked: she may not approve. Dave is not in the approvers' group.
    assert (await bot.slack.click(ALICE.id, plan, ActionId.APPROVE)).status == 200
    assert "someone else must approve" in (await bot.ephemeral(ALICE)).text
    assert (await bot.slack.click(DAVE.id, plan, ActionId.APPROVE)).status == 200
    refused = await bot.ephemeral(DAVE)
    assert "not an approver" in refused.text and "<!subteam^S0ONCALL>" in refused.text
    assert (await bot.slack.click(DAVE.id, plan, ActionId.REJECT)).status == 200
    assert "not an approver" in (await bot.ephemeral(DAVE, 2)).text
    (run,) = await bot.runs()
    assert run.status is RunStatus.AWAITING_APPROVAL
    assert await bot.stage.services.store.approvals(run.id) == []


async def test_double_click_and_retried_click_start_one_run(bot: Bot) -> None:
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    first, second, retried = await asyncio.gather(
        bot.slack.click(BOB.id, plan, ActionId.APPROVE),
        bot.slack.click(ERIN.id, plan, ActionId.APPROVE),
        bot.slack.click(BOB.id, plan, ActionId.APPROVE, retry_num=1, retry_reason="timeout"),
    )
    assert {first.status, second.status, retried.status} == {200}
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    assert final.status is RunStatus.SUCCEEDED
    events = await bot.stage.services.store.events(run.id)
    assert [e.kind for e in events].count("approval_granted") == 1
    assert [e.kind for e in events].count("step_started") == len(
        [e for e in events if e.kind == "step_finished"]
    )
    assert len([e for e in events if e.kind == "step_started" and e.step == "stop"]) == 1
    # The others are told why their click changed nothing.
    replies = [m.text for u in (BOB, ERIN) for m in bot.workspace.ephemerals(u.id)]
    assert sum("starts now" in r for r in replies) == 1
    assert len(await bot.runs()) == 1


async def test_redelivered_command_is_dropped(bot: Bot) -> None:
    """Slack's redelivery repeats the same request (same trigger_id): handled once."""
    ws = bot.workspace
    fields = {
        "token": "t",
        "team_id": ws.team_id,
        "team_domain": ws.team_domain,
        "channel_id": INCIDENTS.id,
        "channel_name": "incidents",
        "user_id": ALICE.id,
        "user_name": "alice",
        "command": "/rollback",
        "text": bot.environment,
        "api_app_id": ws.app_id,
        "response_url": ws.issue_response_url(channel=INCIDENTS.id, user=ALICE.id),
        "trigger_id": ws.issue_trigger_id(ALICE.id),
    }
    body = urlencode(fields)
    assert (await bot.slack.post_signed(body)).status == 200
    retried = await bot.slack.post_signed(body, retry_num=1, retry_reason="http_timeout")
    assert retried.status == 200
    await ws.wait_for(lambda: ws.messages(INCIDENTS.id))
    await asyncio.sleep(0.5)
    assert len(ws.messages(INCIDENTS.id)) == 1 and len(await bot.runs()) == 1
    assert ws.ephemerals(ALICE.id) == []  # not even a "already in progress"


async def test_two_commands_at_once_start_one_run(bot: Bot) -> None:
    ws = bot.workspace
    results = await asyncio.gather(
        bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", bot.environment),
        bot.slack.send_command(BOB.id, INCIDENTS.id, "/rollback", bot.environment),
    )
    assert [r.status for r in results] == [200, 200]
    await ws.wait_for(lambda: ws.messages(INCIDENTS.id))
    (run,) = await bot.runs()
    loser = BOB if run.requested_by == ALICE.id else ALICE
    told = await bot.ephemeral(loser)
    assert "already in progress" in told.text and f"<@{run.requested_by}>" in told.text
    await ws.wait_for(lambda: ws.messages(INCIDENTS.id))
    await asyncio.sleep(0.3)
    assert len(ws.messages(INCIDENTS.id)) == 1


async def test_reject_and_cancel_close_the_request(bot: Bot) -> None:
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    assert (await bot.slack.click(BOB.id, plan, ActionId.REJECT)).status == 200
    assert "rejected" in (await bot.ephemeral(BOB)).text
    await bot.wait_for_run(run.id, lambda r: r.status is RunStatus.REJECTED)
    await bot.workspace.wait_for(lambda: "rejected" in plan.text)
    assert "Rejected by <@U0BOB>" in json.dumps(plan.blocks)
    assert all(b.get("block_id") != "rollback.decision" for b in plan.blocks)
    # Alice may ask again; then cancel her own request.
    plan2 = await bot.command(ALICE, bot.environment)
    assert (await bot.slack.click(ALICE.id, plan2, ActionId.CANCEL)).status == 200
    assert "cancelled" in (await bot.ephemeral(ALICE)).text
    statuses = sorted(r.status.value for r in await bot.runs())
    assert statuses == ["cancelled", "rejected"]


async def test_click_on_a_finished_request_is_explained(bot: Bot) -> None:
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    stale_copy = plan.to_api(bot.workspace.team_id)  # the buttons as Erin still sees them
    await bot.slack.click(BOB.id, plan, ActionId.REJECT)
    await bot.wait_for_run(run.id, lambda r: r.status is RunStatus.REJECTED)

    old = Message(
        ts=plan.ts,
        channel=plan.channel,
        text="",
        blocks=stale_copy["blocks"],
        user=plan.user,
        bot_id=plan.bot_id,
    )
    assert (await bot.slack.click(ERIN.id, old, ActionId.APPROVE)).status == 200
    assert "was rejected" in (await bot.ephemeral(ERIN)).text
    assert (await bot.stage.services.store.get(run.id)).status is RunStatus.REJECTED


async def test_help_backups_status_and_history(bot: Bot) -> None:
    ws = bot.workspace
    await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", "help")
    assert "/rollback backups" in "\n".join(render_message(await bot.ephemeral(DAVE)))
    await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", f"backups {bot.environment}")
    listing = "\n".join(render_message(await bot.ephemeral(DAVE, 2)))
    assert bot.stage.backup.name in listing and "old" in listing
    await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", "status")
    assert "nothing is being rolled back" in "\n".join(render_message(await bot.ephemeral(DAVE, 3)))
    await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", f"status {bot.environment}")
    status = "\n".join(render_message(await bot.ephemeral(DAVE, 4)))
    assert run.id in status and "awaiting_approval" in status
    await bot.slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", f"history {bot.environment}")
    assert run.id in "\n".join(render_message(await bot.ephemeral(DAVE, 5)))
    assert len(ws.messages(INCIDENTS.id)) == 1
