"""Socket Mode in the sandbox: a minimal Bolt app connected with AsyncSocketModeHandler
(aiohttp) over a real websocket on localhost, driven by SocketModeUser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import SandboxWorkspace
from sandbox.slack.slack_user import Delivery, SlackUser, SocketModeUser
from tests.sandbox.conftest import ALICE, BOB, BOT_TOKEN, INCIDENTS, OPS

APP_TOKEN = "xapp-1-A0SANDBOX-1-sandbox-app-token"


@dataclass
class Seen:
    commands: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def build_app(workspace: SandboxWorkspace, seen: Seen) -> AsyncApp:
    app = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=workspace.base_url))

    @app.command("/rollback")
    async def on_command(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        if command["text"] == "slow":
            await asyncio.sleep(0.6)  # longer than the ack timeout the test sets
        await ack()
        seen.commands.append(command)
        if command["text"] == "help":
            await respond("usage: /rollback <environment>")
            return
        await client.chat_postMessage(
            channel=command["channel_id"],
            text=f"Rollback of {command['text']} requested",
            blocks=[
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*{command['text']}* requested"},
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
                            "value": command["text"],
                        }
                    ],
                },
            ],
        )

    @app.action("approve")
    async def on_approve(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        seen.actions.append(body)
        await client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[],
        )

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen.events.append(event)

    return app


@pytest.fixture
async def workspace() -> AsyncIterator[SandboxWorkspace]:
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        users=[ALICE, BOB],
        channels=[INCIDENTS, OPS],
    ) as ws:
        yield ws


@pytest.fixture
async def seen() -> Seen:
    return Seen()


@pytest.fixture
async def handler(workspace: SandboxWorkspace, seen: Seen) -> AsyncIterator[AsyncSocketModeHandler]:
    """The toy app, connected in Socket Mode (the handler's client gets no bot token:
    apps.connections.open is called with the app token)."""
    app = build_app(workspace, seen)
    handler = AsyncSocketModeHandler(
        app, APP_TOKEN, web_client=AsyncWebClient(base_url=workspace.base_url)
    )
    await handler.connect_async()
    try:
        yield handler
    finally:
        await handler.close_async()


async def test_apps_connections_open_wants_the_app_level_token(
    workspace: SandboxWorkspace,
) -> None:
    client = AsyncWebClient(base_url=workspace.base_url)
    opened = await client.apps_connections_open(app_token=APP_TOKEN)
    assert opened["ok"] is True
    assert opened["url"].startswith(f"ws://127.0.0.1:{workspace.port}/link/?ticket=")

    for token, error in [
        ("xapp-1-A0SANDBOX-1-wrong", "invalid_auth"),
        (BOT_TOKEN, "not_allowed_token_type"),
    ]:
        with pytest.raises(SlackApiError) as refused:
            await client.apps_connections_open(app_token=token)
        assert refused.value.response["error"] == error
    # ... and the app-level token is no bot token.
    with pytest.raises(SlackApiError) as refused:
        await AsyncWebClient(token=APP_TOKEN, base_url=workspace.base_url).chat_postMessage(
            channel=INCIDENTS.id, text="hi"
        )
    assert refused.value.response["error"] == "not_allowed_token_type"

    # A URL is good for one connection.
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(opened["url"]) as ws:
            hello = await ws.receive_json(timeout=5)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(opened["url"])
    assert hello["type"] == "hello"
    assert hello["connection_info"] == {"app_id": workspace.app_id}
    assert hello["num_connections"] == 1


async def test_slash_command_envelope_is_acked_and_its_listener_posts(
    workspace: SandboxWorkspace, handler: AsyncSocketModeHandler, seen: Seen
) -> None:
    connection = await workspace.socket_mode.wait_for_connection()
    assert connection.sent[0]["type"] == "hello"
    assert await handler.client.is_connected()

    slack = SocketModeUser(workspace)
    delivery = await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "staging")
    assert delivery.acked and delivery.error is None and delivery.elapsed < 3
    assert delivery.ack_payload is None  # Bolt's ack() carries no payload

    (envelope,) = workspace.socket_mode.envelopes
    assert envelope.envelope_id == delivery.envelope_id and envelope.latency is not None
    sent = connection.sent[-1]
    assert set(sent) == {"envelope_id", "type", "payload", "accepts_response_payload"}
    assert sent["type"] == "slash_commands" and sent["accepts_response_payload"] is True
    # The payload is the HTTP form body's fields, as a dict of strings.
    assert sent["payload"]["command"] == "/rollback" and sent["payload"]["text"] == "staging"
    assert sent["payload"]["response_url"] == delivery.response_url
    assert all(isinstance(v, str) for v in sent["payload"].values())
    assert {"envelope_id": envelope.envelope_id} in connection.received  # Bolt's ack

    plan = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))
    assert plan.text == "Rollback of staging requested"
    assert seen.commands[0]["user_id"] == ALICE.id

    # respond() uses the response_url from the envelope: an ephemeral reply.
    help_delivery = await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "help")
    assert help_delivery.acked
    (reply,) = await workspace.wait_for(lambda: workspace.ephemerals(ALICE.id))
    assert reply.text == "usage: /rollback <environment>"


async def test_button_click_envelope_reaches_the_action_listener(
    workspace: SandboxWorkspace, handler: AsyncSocketModeHandler, seen: Seen
) -> None:
    await workspace.socket_mode.wait_for_connection()
    slack = SocketModeUser(workspace)
    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "staging")
    plan = await workspace.wait_for(lambda: workspace.latest_message(INCIDENTS.id))

    delivery = await slack.click(BOB.id, plan, "approve")
    assert delivery.acked and delivery.elapsed < 3

    envelope = workspace.socket_mode.envelopes[-1]
    assert envelope.type == "interactive" and envelope.accepts_response_payload is False
    assert envelope.payload["type"] == "block_actions"
    await workspace.wait_for(lambda: plan.text.startswith("Approved"))
    (body,) = seen.actions
    assert body["user"]["id"] == BOB.id and body["actions"][0]["value"] == "staging"
    assert body["container"]["message_ts"] == plan.ts
    assert body["response_url"] == delivery.response_url


async def test_the_same_payload_goes_over_http_and_over_the_socket(
    workspace: SandboxWorkspace, handler: AsyncSocketModeHandler
) -> None:
    await workspace.socket_mode.wait_for_connection()
    assert (await SocketModeUser(workspace).send_command(ALICE.id, OPS.id, "/rollback", "x")).acked
    over_socket = workspace.socket_mode.envelopes[-1].payload

    bodies: list[str] = []

    async def post_signed(body: str, **_: Any) -> Delivery:
        bodies.append(body)
        return Delivery(status=200, body="", elapsed=0.0)

    http = SlackUser(workspace, "http://127.0.0.1:9/slack/events", "secret")
    http.post_signed = post_signed  # type: ignore[method-assign]
    await http.send_command(ALICE.id, OPS.id, "/rollback", "x")
    over_http = dict(parse_qsl(bodies[0], keep_blank_values=True))

    fresh = {"response_url", "trigger_id"}  # issued anew for each command
    assert set(over_http) == set(over_socket)
    assert {k: v for k, v in over_http.items() if k not in fresh} == {
        k: v for k, v in over_socket.items() if k not in fresh
    }


async def test_no_ack_in_time_is_recorded_as_operation_timeout(
    workspace: SandboxWorkspace, handler: AsyncSocketModeHandler, seen: Seen
) -> None:
    await workspace.socket_mode.wait_for_connection()
    workspace.socket_mode.ack_timeout = 0.3
    delivery = await SocketModeUser(workspace).send_command(
        ALICE.id, INCIDENTS.id, "/rollback", "slow"
    )
    assert not delivery.acked and delivery.error == "operation_timeout"
    assert 0.3 <= delivery.elapsed < 0.6
    envelope = workspace.socket_mode.envelopes[-1]
    assert envelope.timed_out
    # The late ack is still recorded, with its latency.
    await workspace.wait_for(lambda: envelope.acked_at)
    assert envelope.latency is not None and envelope.latency >= 0.6 and not envelope.acked


async def test_events_api_envelope_and_disconnect_then_reconnect(
    workspace: SandboxWorkspace, handler: AsyncSocketModeHandler, seen: Seen
) -> None:
    first = await workspace.socket_mode.wait_for_connection()
    slack = SocketModeUser(workspace)
    delivery = await slack.send_event(
        {"type": "app_mention", "user": ALICE.id, "channel": INCIDENTS.id, "text": "<@U0BOT> hi"}
    )
    assert delivery.acked
    sent = first.sent[-1]
    assert sent["type"] == "events_api" and sent["accepts_response_payload"] is False
    assert (sent["retry_attempt"], sent["retry_reason"]) == (0, "")
    assert sent["payload"]["type"] == "event_callback"
    await workspace.wait_for(lambda: seen.events)
    assert seen.events[0]["text"] == "<@U0BOT> hi"

    # Slack asks for a refresh: the client opens a new connection and drops the old one.
    await workspace.socket_mode.disconnect("refresh_requested", close=False)
    second = await workspace.socket_mode.wait_for_connection(count=2)
    await workspace.wait_for(lambda: not first.is_open)
    assert second is not first
    assert len(workspace.calls_to("apps.connections.open")) == 2
    assert (await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "again")).acked


async def test_wrong_app_token_fails_clearly(workspace: SandboxWorkspace) -> None:
    handler = AsyncSocketModeHandler(
        build_app(workspace, Seen()),
        "xapp-1-A0SANDBOX-1-revoked",
        web_client=AsyncWebClient(base_url=workspace.base_url),
    )
    try:
        with pytest.raises(SlackApiError) as refused:
            await handler.client.issue_new_wss_url()
        assert refused.value.response["error"] == "invalid_auth"
        (call,) = workspace.calls_to("apps.connections.open")
        assert call.error == "invalid_auth"
        assert workspace.socket_mode.connections == []
    finally:
        await handler.close_async()

    # With no app connected, an envelope goes nowhere.
    delivery = await SocketModeUser(workspace).send_command(ALICE.id, INCIDENTS.id, "/rollback")
    assert not delivery.acked and delivery.error == "no_connection"
