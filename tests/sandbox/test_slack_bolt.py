"""A minimal Bolt app served over HTTP, driven by SlackUser, talking to the sandbox."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import SandboxWorkspace, SlackUser, render_message
from tests.sandbox.conftest import ALICE, BOB, BOT_TOKEN, INCIDENTS, SIGNING_SECRET


@dataclass
class Seen:
    """What the toy app's listeners received."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    retry_nums: list[str | None] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)


def build_app(workspace: SandboxWorkspace, seen: Seen) -> AsyncApp:
    # The token goes on the client only: Bolt logs a warning when given both.
    app = AsyncApp(
        signing_secret=SIGNING_SECRET,
        client=AsyncWebClient(token=BOT_TOKEN, base_url=workspace.base_url),
    )

    @app.command("/rollback")
    async def handle_rollback_command(
        ack: AsyncAck,
        command: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        request: AsyncBoltRequest,
    ) -> None:
        await ack()
        seen.commands.append(command)
        seen.retry_nums.append(request.headers.get("x-slack-retry-num", [None])[0])
        if command["text"] == "help":
            await respond("usage: /rollback <environment>")
            return
        await client.chat_postMessage(
            channel=command["channel_id"],
            text=f"Rollback of {command['text']} requested",
            blocks=[
                {"type": "header", "text": {"type": "plain_text", "text": "Rollback plan"}},
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*{command['text']}* requested"},
                },
                {
                    "type": "actions",
                    "block_id": "checklist",
                    "elements": [
                        {
                            "type": "checkboxes",
                            "action_id": "checklist",
                            "options": [
                                {"text": {"type": "plain_text", "text": "Team told"}, "value": "a"},
                                {"text": {"type": "plain_text", "text": "Backup ok"}, "value": "b"},
                            ],
                        }
                    ],
                },
                {
                    "type": "actions",
                    "block_id": "decision",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "approve",
                            "style": "primary",
                            "text": {"type": "plain_text", "text": "Approve"},
                            "value": "run-1",
                        },
                        {
                            "type": "button",
                            "action_id": "reject",
                            "style": "danger",
                            "text": {"type": "plain_text", "text": "Reject"},
                            "value": "run-1",
                        },
                    ],
                },
            ],
        )

    @app.action("approve")
    async def handle_approve_button(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        seen.actions.append(body)
        await client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
        )

    @app.action("reject")
    async def handle_reject_button(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        seen.actions.append(body)
        await respond(replace_original=True, text=f"Rejected by <@{body['user']['id']}>")

    @app.action("checklist")
    async def handle_checklist(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        seen.actions.append(body)

    return app


@dataclass
class Bot:
    url: str
    seen: Seen


@pytest.fixture
async def bot(workspace: SandboxWorkspace) -> AsyncIterator[Bot]:
    seen = Seen()
    runner = web.AppRunner(build_app(workspace, seen).web_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Bot(url=f"http://{host}:{port}/slack/events", seen=seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def slack(workspace: SandboxWorkspace, bot: Bot) -> AsyncIterator[SlackUser]:
    async with SlackUser(workspace, bot.url, SIGNING_SECRET) as user:
        yield user


async def test_signed_command_is_acked_and_the_message_appears(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    delivery = await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "production")
    assert delivery.status == 200
    assert delivery.elapsed < 3

    message = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))
    assert message.text == "Rollback of production requested"
    (command,) = bot.seen.commands
    assert command["user_id"] == ALICE.id and command["user_name"] == "alice"
    assert command["channel_name"] == "incidents"
    assert command["response_url"] == delivery.response_url
    assert command["trigger_id"] == delivery.trigger_id
    assert bot.seen.retry_nums == [None]
    # Bolt asks who it is before handling the first request.
    assert workspace.calls[0].method == "auth.test"
    assert render_message(message)[-1] == "[ Approve ] [ Reject ]"


async def test_button_click_reaches_the_action_listener(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "production")
    message = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))

    delivery = await slack.click(BOB.id, message, "approve")
    assert delivery.status == 200
    await workspace.wait_for(lambda: message.edited)
    assert message.text == f"Approved by <@{BOB.id}>"

    (body,) = bot.seen.actions
    assert body["type"] == "block_actions"
    assert body["user"]["id"] == BOB.id
    assert body["container"] == {
        "type": "message",
        "message_ts": message.ts,
        "channel_id": INCIDENTS.id,
        "is_ephemeral": False,
    }
    assert body["actions"][0]["value"] == "run-1"
    assert body["actions"][0]["block_id"] == "decision"
    assert body["message"]["ts"] == message.ts
    assert body["response_url"] == delivery.response_url


async def test_checkbox_change_carries_selected_options(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "staging")
    message = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))

    assert (await slack.select_checkboxes(ALICE.id, message, "checklist", ["b"])).status == 200
    await workspace.wait_for(lambda: bot.seen.actions)
    (body,) = bot.seen.actions
    action = body["actions"][0]
    assert action["type"] == "checkboxes"
    assert [o["value"] for o in action["selected_options"]] == ["b"]
    state = body["state"]["values"]["checklist"]["checklist"]
    assert [o["value"] for o in state["selected_options"]] == ["b"]


async def test_respond_goes_through_the_response_url(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "help")
    (reply,) = await workspace.wait_for(lambda: workspace.ephemerals(ALICE.id))
    assert reply.text.startswith("usage:")
    assert workspace.messages(INCIDENTS.id) == []
    assert workspace.calls_to("response_url")[0].ok


async def test_retry_headers_reach_the_app(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    delivery = await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "help", retry_num=1)
    assert delivery.status == 200
    await workspace.wait_for(lambda: bot.seen.retry_nums)
    assert bot.seen.retry_nums == ["1"]


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param({"signing_secret": "not-the-secret"}, id="wrong secret"),
        pytest.param({"timestamp": time.time() - 6 * 60}, id="six minutes old"),
    ],
)
async def test_unsigned_requests_are_refused(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser, forgery: dict[str, Any]
) -> None:
    delivery = await slack.send_command(
        ALICE.id, INCIDENTS.id, "/rollback", "production", **forgery
    )
    assert delivery.status == 401
    assert workspace.messages(INCIDENTS.id) == [] and bot.seen.commands == []


async def test_forged_click_is_refused(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "production")
    message = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))
    delivery = await slack.click(BOB.id, message, "approve", signing_secret="forged")
    assert delivery.status == 401
    assert bot.seen.actions == [] and not message.edited


async def test_respond_replace_original_edits_the_clicked_message(
    workspace: SandboxWorkspace, bot: Bot, slack: SlackUser
) -> None:
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "production")
    message = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))
    await slack.click(BOB.id, message, "reject")
    await workspace.wait_for(lambda: message.edited)
    assert message.text == f"Rejected by <@{BOB.id}>"
    assert message.edits[-1].via == "response_url"
    assert len(workspace.messages(INCIDENTS.id)) == 1
