"""The permission table through Slack: every action × role, answered ephemerally, and a
refusal changes nothing (issue 8)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handlers.ids import ActionId, button_value
from sandbox.slack import Message, User
from services.environments import ApprovalPolicy, Contacts
from services.permissions import Action, Actor, authorize
from services.run_store import RunRecord, RunStatus
from tests.handlers.conftest import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    INCIDENTS,
    MAX,
    ONCALL,
    Bot,
    MakeBot,
)

# Alice asks; Bob (on call) approves; Carol may request too but is neither this run's
# requester nor an approver (a bystander); Dave is in no list (an outsider); Max is a contact.
POLICY = ApprovalPolicy(
    requesters=(ALICE.id, CAROL.id),
    approvers=(ONCALL.id,),
    required_approvals=2,  # an allowed approval is recorded without starting anything
)
CONTACTS = Contacts(users=(MAX.id,))
ROLES = {"requester": ALICE, "approver": BOB, "bystander": CAROL, "outsider": DAVE}
REFUSED = "🚫 You may not"


class Answers:
    """Each person's ephemeral answers, one at a time."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.seen: dict[str, int] = {}

    async def next(self, user: User) -> str:
        count = self.seen.get(user.id, 0) + 1
        self.seen[user.id] = count
        message = await self.bot.ephemeral(user, count)
        return message.text + json.dumps(message.blocks)


async def state(bot: Bot) -> Any:
    """Everything a refused request must leave as it was."""
    store = bot.stage.services.store
    runs = await bot.runs()
    return (
        [(r.id, r.status, r.plan, r.result, r.escalated_at) for r in runs],
        [await store.approvals(r.id) for r in runs],
        [[(e.kind, e.actor, e.detail) for e in await store.events(r.id)] for r in runs],
        [(m.ts, m.text) for m in bot.workspace.messages(INCIDENTS.id)],
    )


async def requested(bot: Bot) -> tuple[Message, RunRecord]:
    """Alice's request, posted, with its background work (contacts told) done."""
    plan = await bot.command(ALICE, bot.environment)
    (run,) = await bot.runs()
    await bot.wait_for_run(run.id, lambda r: r.slack_ts is not None)
    store = bot.stage.services.store
    for _ in range(200):
        if any(e.kind == "notified" for e in await store.events(run.id)):
            break
        await asyncio.sleep(0.05)
    await bot.workspace.wait_for(lambda: "Team notified" in json.dumps(plan.blocks))
    await asyncio.sleep(0.3)  # the live message's update after the notice
    return plan, run


async def click(bot: Bot, user: User, plan: Message, action_id: str, value: str) -> None:
    """A signed click on `action_id` carrying `value`, as a crafted payload would: the
    plan message has no Undo, Resume or Abort button while it waits for approval."""
    payload, _, _ = bot.slack._click(user.id, plan, ActionId.CANCEL, None, None)
    payload["actions"][0].update(action_id=action_id, value=value)
    assert (await bot.slack.send_interaction(payload)).status == 200


Send = Callable[[User], Awaitable[None]]


def frozen(bot: Bot, message: Message) -> Message:
    """The message as a client shows it now, unchanged by later updates (a stale view)."""
    copy = message.to_api(bot.workspace.team_id)
    return Message(
        ts=message.ts,
        channel=message.channel,
        text=message.text,
        blocks=copy["blocks"],
        user=message.user,
        bot_id=message.bot_id,
    )


async def check_roles(
    bot: Bot,
    send: Send,
    *,
    refused: dict[str, str],
    allowed: dict[str, str],
) -> None:
    """Refused roles first (each answer names why, nothing changes), then allowed ones
    (answered, not refused). Values: what the answer must contain."""
    answers = Answers(bot)
    for role, reason in refused.items():
        before = await state(bot)
        await send(ROLES.get(role, MAX))
        answer = await answers.next(ROLES.get(role, MAX))
        assert REFUSED in answer and reason in answer, (role, answer)
        await asyncio.sleep(0.2)  # anything the request might have started
        assert await state(bot) == before, f"{role}: a refused request changed something"
    for role, expected in allowed.items():
        await send(ROLES.get(role, MAX))
        answer = await answers.next(ROLES.get(role, MAX))
        assert REFUSED not in answer and expected in answer, (role, answer)


async def test_request(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)

    async def send(user: User) -> None:
        await bot.slack.send_command(user.id, INCIDENTS.id, "/rollback", bot.environment)

    await check_roles(
        bot,
        send,
        refused={
            "approver": "not one of its requesters",
            "outsider": "not one of its requesters",
        },
        allowed={},
    )
    plan = await bot.command(CAROL, bot.environment)  # the bystander may request
    assert bot.environment in plan.text
    (run,) = await bot.runs()
    assert run.requested_by == CAROL.id
    await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", bot.environment)
    assert "already in progress" in (await bot.ephemeral(ALICE)).text


@pytest.mark.parametrize(
    ("action_id", "refused", "allowed"),
    [
        pytest.param(
            ActionId.APPROVE,
            {
                "requester": "someone else must approve",
                "bystander": "not an approver",
                "outsider": "not an approver",
            },
            {"approver": "recorded (1 of 2)"},
            id="approve",
        ),
        pytest.param(
            ActionId.REJECT,
            {
                "requester": "not an approver",
                "bystander": "not an approver",
                "outsider": "not an approver",
            },
            {"approver": "You rejected"},
            id="reject",
        ),
        pytest.param(
            ActionId.CANCEL,
            {"bystander": "only the requester or an approver", "outsider": "only the requester"},
            {"approver": "You cancelled", "requester": "was cancelled"},
            id="cancel",
        ),
    ],
)
async def test_decision_buttons(
    make_bot: MakeBot, action_id: ActionId, refused: dict[str, str], allowed: dict[str, str]
) -> None:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, _ = await requested(bot)

    async def send(user: User) -> None:
        assert (await bot.slack.click(user.id, plan, action_id)).status == 200

    await check_roles(bot, send, refused=refused, allowed=allowed)


async def test_cancel_command(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, run = await requested(bot)

    async def send(user: User) -> None:
        text = f"cancel {bot.environment}"
        delivery = await bot.slack.send_command(user.id, INCIDENTS.id, "/rollback", text)
        assert delivery.status == 200

    await check_roles(
        bot,
        send,
        refused={"bystander": "only the requester", "outsider": "only the requester"},
        allowed={"requester": "You cancelled the rollback", "approver": "nothing to cancel"},
    )
    assert (await bot.stage.services.store.get(run.id)).status is RunStatus.CANCELLED
    await bot.workspace.wait_for(lambda: "cancelled" in plan.text, 10)


async def test_checklist_tick(make_bot: MakeBot) -> None:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, run = await requested(bot)
    store = bot.stage.services.store
    ticks = iter(["assessed", "assessed", "monitoring", "root_cause", "documentation"])
    # Everyone clicks in the view as it was before any tick: each adds one item.
    stale = frozen(bot, plan)

    async def send(user: User) -> None:
        await bot.slack.select_checkboxes(user.id, stale, ActionId.CHECKLIST, [next(ticks)])

    answers = Answers(bot)
    for role in ("bystander", "outsider"):
        before = await state(bot)
        await send(ROLES[role])
        answer = await answers.next(ROLES[role])
        assert REFUSED in answer and "contacts of" in answer, (role, answer)
        assert await state(bot) == before
    # Allowed: the run's requester, approvers, the contacts; each tick is recorded.
    for user in (ALICE, BOB, MAX):
        await send(user)
    for _ in range(100):
        done = [e for e in await store.events(run.id) if e.kind == "checklist"]
        if len(done) == 3:
            break
        await asyncio.sleep(0.05)
    assert {(e.actor, e.detail["item"]) for e in done} == {
        (ALICE.id, "monitoring"),
        (BOB.id, "root_cause"),
        (MAX.id, "documentation"),
    }
    assert all(not bot.workspace.ephemerals(u.id) for u in (ALICE, BOB, MAX))


@pytest.mark.parametrize("action_id", [ActionId.UNDO, ActionId.RESUME, ActionId.ABORT])
async def test_gated_actions(make_bot: MakeBot, action_id: ActionId) -> None:
    """Undo, resume and abort: the environment's approvers, never the run's requester."""
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, run = await requested(bot)
    what = action_id.value.rsplit(".", 1)[-1]

    async def send(user: User) -> None:
        await click(bot, user, plan, action_id, run.id)

    await check_roles(
        bot,
        send,
        refused={
            "requester": "someone else must approve",
            "bystander": "not an approver",
            "outsider": "not an approver",
        },
        allowed={"approver": "no old database"} if action_id is ActionId.UNDO else {},
    )
    # The table lets the approver (resume and abort get their buttons with crash recovery).
    rule = await authorize(
        bot.stage.services,
        _Directory(),
        action=Action(what),
        actor=Actor(BOB.id),
        run=await bot.stage.services.store.get(run.id),
    )
    assert rule.gated


class _Directory:
    async def usergroup_members(self, usergroup: str) -> frozenset[str]:
        return frozenset(ONCALL.users) if usergroup == ONCALL.id else frozenset()


@pytest.mark.parametrize("text", ["status", "history {env}", "backups {env}", "help"])
async def test_read_only_commands_answer_everyone(make_bot: MakeBot, text: str) -> None:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    await requested(bot)
    before = await state(bot)
    answers = Answers(bot)
    for role, user in ROLES.items():
        sent = text.format(env=bot.environment)
        await bot.slack.send_command(user.id, INCIDENTS.id, "/rollback", sent)
        answer = await answers.next(user)
        assert REFUSED not in answer and ("/rollback" in answer or bot.environment in answer), (
            role,
            answer,
        )
    assert await state(bot) == before


async def test_what_the_table_does_not_name_is_denied(make_bot: MakeBot) -> None:
    """A forged action_id, another slash command: refused, nothing touched."""
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, run = await requested(bot)
    before = await state(bot)
    await click(bot, BOB, plan, "rollback.drop_database", button_value(run.id, "x"))
    assert "not an action this bot knows" in (await bot.ephemeral(BOB)).text
    await bot.slack.send_command(BOB.id, INCIDENTS.id, "/deploy", bot.environment)
    assert "not an action this bot knows" in (await bot.ephemeral(BOB, 2)).text
    assert await state(bot) == before


def hostile_clicks() -> st.SearchStrategy[dict[str, Any]]:
    """Changes to a click payload an attacker controls; the clicker is never allowed."""
    text = st.text(max_size=300)
    return st.fixed_dictionaries(
        {
            "user": st.sampled_from([DAVE.id, CAROL.id, "", "U0NOBODY", ONCALL.id]) | text,
            "action_id": st.sampled_from([a.value for a in ActionId]) | text,
            "value": st.sampled_from(["", ":", "rb-00000000", "RUN", "RUN:x", "RUN:"]) | text,
            "drop": st.sets(st.sampled_from(["message", "container", "channel", "value"])),
        }
    )


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(change=hostile_clicks())
# A user ID equal to the approvers' group ID once passed as an approver.
@example(change={"user": ONCALL.id, "action_id": ActionId.APPROVE, "value": "RUN", "drop": set()})
@example(change={"user": DAVE.id, "action_id": "help", "value": "RUN", "drop": {"message"}})
# A NUL in the run ID once reached PostgreSQL and came back as "💥".
@example(change={"user": DAVE.id, "action_id": ActionId.APPROVE, "value": "\x00", "drop": set()})
async def test_hostile_clicks_are_answered_and_touch_nothing(
    hostile_stage: tuple[Bot, Message, RunRecord], change: dict[str, Any]
) -> None:
    """Forged values, foreign run ids, missing fields, action ids the bot never sent: a
    clear answer (never 💥), and nothing changes (issue 8)."""
    bot, plan, run = hostile_stage
    before = await state(bot)
    payload, _, _ = bot.slack._click(DAVE.id, plan, ActionId.CANCEL, None, None)
    clicked = payload["actions"][0]
    clicked.update(action_id=change["action_id"], value=change["value"].replace("RUN", run.id))
    payload["user"]["id"] = change["user"]
    for key in change["drop"]:
        (clicked if key == "value" else payload).pop(key, None)
    shown = len(bot.workspace.calls_to("response_url"))
    delivery = await bot.slack.send_interaction(payload)
    assert delivery.status == 200, delivery
    replies = await bot.workspace.wait_for(
        lambda: bot.workspace.calls_to("response_url")[shown:], timeout=5
    )
    (reply,) = replies
    answer = str(reply.params["text"])
    assert answer.startswith(("🚫", "⚠️")), answer  # a known refusal, never "💥"
    assert await state(bot) == before


@pytest.fixture
async def hostile_stage(make_bot: MakeBot) -> tuple[Bot, Message, RunRecord]:
    bot = await make_bot(policy=POLICY, contacts=CONTACTS)
    plan, run = await requested(bot)
    return bot, plan, run
