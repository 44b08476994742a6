"""Cancel from Slack, requests from where the bot cannot post, expiry told, stale checklist
views (issue 8)."""

from __future__ import annotations

import asyncio

import pytest

from handlers.ids import ActionId
from sandbox.slack import Channel, Message, render_message
from services.checklist import checklist_state
from services.run_store import RunStatus
from tests.handlers.conftest import ALICE, BOB, CAROL, ERIN, INCIDENTS, POLICY, MakeBot


@pytest.mark.parametrize(
    ("channel", "reason", "hint"),
    [
        pytest.param(
            Channel(id="C0SECRET", name="secret", members=frozenset({ALICE.id}), private=True),
            "channel_not_found",
            "invite <@",
            id="private channel",
        ),
        pytest.param(
            Channel(id="C0QUIET", name="quiet", members=frozenset({ALICE.id, BOB.id})),
            "not_in_channel",
            "invite <@",
            id="public channel the bot has not joined",
        ),
        pytest.param(
            # A DM between two people: the bot is not in it and cannot see it.
            Channel(
                id="D0ALICEBOB",
                name="alice-bob",
                members=frozenset({ALICE.id, BOB.id}),
                private=True,
            ),
            "channel_not_found",
            "in a channel <@",
            id="direct message between people",
        ),
    ],
)
async def test_a_request_whose_plan_cannot_be_posted_is_cancelled_at_once(
    make_bot: MakeBot, channel: Channel, reason: str, hint: str
) -> None:
    bot = await make_bot()
    ws = bot.workspace
    ws.add_channel(channel)
    delivery = await bot.slack.send_command(ALICE.id, channel.id, "/rollback", bot.environment)
    assert delivery.status == 200
    told = await bot.ephemeral(ALICE)
    assert reason in told.text and hint in told.text
    where = "this direct message" if channel.id.startswith("D") else f"<#{channel.id}>"
    assert where in told.text
    assert "was cancelled" in told.text and "not locked" in told.text
    (run,) = await bot.runs()
    assert run.status is RunStatus.CANCELLED
    (event,) = [e for e in await bot.stage.services.store.events(run.id) if e.kind == "cancelled"]
    assert event.actor == "bot" and reason in event.detail["reason"]
    # The environment is free: asking again where the bot is works at once.
    plan = await bot.command(ALICE, bot.environment)
    assert "awaiting approval" in plan.text


async def test_cancel_command_and_button(make_bot: MakeBot) -> None:
    bot = await make_bot()
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", f"cancel {bot.environment}")
    assert f"You cancelled the rollback of *{bot.environment}*" in (await bot.ephemeral(ALICE)).text
    await bot.workspace.wait_for(lambda: "cancelled" in plan.text, 10)
    assert (await bot.stage.services.store.get(run.id)).status is RunStatus.CANCELLED
    # Asked again: nothing is waiting any more.
    await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", f"cancel {bot.environment}")
    assert "nothing to cancel" in (await bot.ephemeral(ALICE, 2)).text


async def test_expiry_tells_the_requester_and_the_contacts(make_bot: MakeBot) -> None:
    policy = POLICY.model_copy(update={"expiry_minutes": 0.02})
    bot = await make_bot(policy=policy)
    ws = bot.workspace
    await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.status is RunStatus.EXPIRED, timeout=20)

    def told(user: str) -> list[str]:
        return [m.text for m in ws.messages(ws.open_dm(user).id) if "expired" in m.text]

    await ws.wait_for(lambda: told(ALICE.id) and told(CAROL.id), 10)
    assert f"requested by <@{ALICE.id}>" in told(CAROL.id)[0]
    for _ in range(100):
        events = await bot.stage.services.store.events(run.id)
        notices = [e for e in events if e.kind == "notified" and e.detail["notice"] == "expired"]
        if notices:
            break
        await asyncio.sleep(0.05)
    (notice,) = notices
    assert set(notice.detail["users"]) == {ALICE.id, CAROL.id}


async def test_a_tick_from_a_stale_view_never_unticks_others(make_bot: MakeBot) -> None:
    bot = await make_bot()
    ws = bot.workspace
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    stale_copy = plan.to_api(ws.team_id)  # Bob's client has not refreshed since
    await bot.slack.select_checkboxes(ERIN.id, plan, ActionId.CHECKLIST, ["assessed", "monitoring"])
    await ws.wait_for(lambda: "Monitoring active — @U0ERIN" in "\n".join(render_message(plan)))
    stale = Message(
        ts=plan.ts,
        channel=plan.channel,
        text="",
        blocks=stale_copy["blocks"],
        user=plan.user,
        bot_id=plan.bot_id,
    )
    await bot.slack.select_checkboxes(BOB.id, stale, ActionId.CHECKLIST, ["root_cause"])
    store = bot.stage.services.store
    for _ in range(100):
        state = checklist_state(await store.events(run.id))
        people = {i.value: t.by for i, t in state.items() if t is not None and t.by != "bot"}
        if "root_cause" in people:
            break
        await asyncio.sleep(0.05)
    assert people == {"assessed": ERIN.id, "monitoring": ERIN.id, "root_cause": BOB.id}
