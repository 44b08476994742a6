"""slack_sdk's AsyncWebClient against the sandbox workspace, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import RateLimit, SandboxWorkspace
from tests.sandbox.conftest import ALICE, BOB, BOT_TOKEN, CAROL, INCIDENTS, ONCALL, OPS, PRIVATE


def button(action_id: str, label: str, value: str = "v") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_auth_test_names_the_bot(client: AsyncWebClient, workspace: SandboxWorkspace) -> None:
    response = await client.auth_test()
    assert response["user_id"] == workspace.bot_user_id
    assert response["bot_id"] == workspace.bot_id
    assert response["team_id"] == workspace.team_id
    assert "chat:write" in response.headers["x-oauth-scopes"]


async def test_post_message_is_stored_and_the_call_recorded(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    response = await client.chat_postMessage(
        channel=INCIDENTS.id, text="plan", blocks=[section("*Plan*")]
    )
    assert response["channel"] == INCIDENTS.id
    assert response["message"]["bot_id"] == workspace.bot_id

    (message,) = workspace.messages(INCIDENTS.id)
    assert message.ts == response["ts"]
    assert message.text == "plan"
    assert message.user == workspace.bot_user_id and message.is_from_bot
    assert message.blocks[0]["block_id"]  # Slack fills in missing block ids
    assert workspace.latest_message(INCIDENTS.id) is message

    (call,) = workspace.calls_to("chat.postMessage")
    assert call.ok and call.params["channel"] == INCIDENTS.id
    assert call.http_method == "POST" and call.token == "(redacted)"


async def test_post_by_channel_name(client: AsyncWebClient, workspace: SandboxWorkspace) -> None:
    response = await client.chat_postMessage(channel="#ops", text="hi")
    assert response["channel"] == OPS.id


async def test_update_replaces_content_and_keeps_history(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    posted = await client.chat_postMessage(channel=INCIDENTS.id, text="step 1 ⏳")
    updated = await client.chat_update(
        channel=INCIDENTS.id, ts=posted["ts"], text="step 1 ✓", blocks=[section("step 1 ✓")]
    )
    assert updated["ts"] == posted["ts"]
    message = workspace.latest_message(INCIDENTS.id)
    assert message is not None
    assert message.text == "step 1 ✓" and message.edited
    assert [e.text for e in message.edits] == ["step 1 ⏳"]
    assert len(workspace.messages(INCIDENTS.id)) == 1


async def test_thread_replies_stay_out_of_the_channel(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    parent = await client.chat_postMessage(channel=INCIDENTS.id, text="rollback")
    await client.chat_postMessage(channel=INCIDENTS.id, text="detail 1", thread_ts=parent["ts"])
    await client.chat_postMessage(channel=INCIDENTS.id, text="detail 2", thread_ts=parent["ts"])

    assert [m.text for m in workspace.messages(INCIDENTS.id)] == ["rollback"]
    assert [m.text for m in workspace.thread(INCIDENTS.id, parent["ts"])] == [
        "detail 1",
        "detail 2",
    ]
    replies = await client.conversations_replies(channel=INCIDENTS.id, ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["rollback", "detail 1", "detail 2"]
    assert replies["messages"][0]["reply_count"] == 2

    with pytest.raises(SlackApiError) as error:
        await client.chat_postMessage(channel=INCIDENTS.id, text="x", thread_ts="1.000001")
    assert error.value.response["error"] == "thread_not_found"


async def test_ephemeral_is_seen_by_one_user_and_cannot_be_updated(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    response = await client.chat_postEphemeral(channel=INCIDENTS.id, user=ALICE.id, text="only you")
    assert workspace.messages(INCIDENTS.id) == []
    (message,) = workspace.ephemerals(ALICE.id)
    assert message.ts == response["message_ts"] and message.is_ephemeral
    assert workspace.ephemerals(BOB.id) == []

    with pytest.raises(SlackApiError) as error:
        await client.chat_update(channel=INCIDENTS.id, ts=response["message_ts"], text="edit")
    assert error.value.response["error"] == "cant_update_message"

    with pytest.raises(SlackApiError) as error:
        await client.chat_postEphemeral(channel=PRIVATE.id, user=BOB.id, text="x")
    assert error.value.response["error"] == "user_not_in_channel"


async def test_direct_message_through_conversations_open(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    opened = await client.conversations_open(users=CAROL.id)
    dm_id = opened["channel"]["id"]
    assert dm_id.startswith("D")
    await client.chat_postMessage(channel=dm_id, text="rollback requested")
    again = await client.conversations_open(users=[CAROL.id])
    assert again["channel"]["id"] == dm_id and again["already_open"]

    # Posting to a user ID lands in the same DM, as on Slack.
    await client.chat_postMessage(channel=CAROL.id, text="rollback finished")
    assert [m.text for m in workspace.dms(CAROL.id)] == ["rollback requested", "rollback finished"]
    assert workspace.dms(BOB.id) == []


async def test_users_info_and_usergroup_members(client: AsyncWebClient) -> None:
    info = await client.users_info(user=ALICE.id)
    assert info["user"]["name"] == "alice"
    assert info["user"]["real_name"] == "Alice Responder"
    assert info["user"]["is_bot"] is False

    members = await client.usergroups_users_list(usergroup=ONCALL.id)
    assert members["users"] == [BOB.id, CAROL.id]

    with pytest.raises(SlackApiError) as error:
        await client.users_info(user="U0NOBODY")
    assert error.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as error:
        await client.usergroups_users_list(usergroup="S0NONE")
    assert error.value.response["error"] == "no_such_subteam"


@pytest.mark.parametrize(
    ("token", "expected"), [("xoxb-wrong", "invalid_auth"), (None, "not_authed")]
)
async def test_bad_or_missing_token(
    workspace: SandboxWorkspace, token: str | None, expected: str
) -> None:
    client = AsyncWebClient(token=token, base_url=workspace.base_url)
    with pytest.raises(SlackApiError) as error:
        await client.chat_postMessage(channel=INCIDENTS.id, text="x")
    assert error.value.response.status_code == 200
    assert error.value.response["error"] == expected
    assert workspace.messages(INCIDENTS.id) == []


async def test_lookup_errors(client: AsyncWebClient) -> None:
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: client.chat_postMessage(channel="C0MISSING", text="x"), "channel_not_found"),
        # The bot is not a member (issue 8: the plan of a request there cannot be posted).
        (lambda: client.chat_postMessage(channel=PRIVATE.id, text="x"), "not_in_channel"),
        (
            lambda: client.chat_update(channel=INCIDENTS.id, ts="1.000001", text="x"),
            "message_not_found",
        ),
        (
            lambda: client.chat_getPermalink(channel=INCIDENTS.id, message_ts="1.0"),
            "message_not_found",
        ),
        (lambda: client.api_call("chat.frobnicate"), "unknown_method"),
        # Raw call: chat_postMessage() itself warns (UserWarning) when text is missing.
        (
            lambda: client.api_call("chat.postMessage", json={"channel": INCIDENTS.id}),
            "no_text",
        ),
    ]
    for call, expected in cases:
        with pytest.raises(SlackApiError) as error:
            await call()
        assert error.value.response["error"] == expected


async def test_permalink_and_history(client: AsyncWebClient, workspace: SandboxWorkspace) -> None:
    first = await client.chat_postMessage(channel=OPS.id, text="one")
    await client.chat_postMessage(channel=OPS.id, text="two")
    await client.chat_postMessage(channel=OPS.id, text="three")
    link = await client.chat_getPermalink(channel=OPS.id, message_ts=first["ts"])
    assert link["permalink"].endswith(f"/archives/{OPS.id}/p{first['ts'].replace('.', '')}")

    page = await client.conversations_history(channel=OPS.id, limit=2)
    assert [m["text"] for m in page["messages"]] == ["three", "two"]  # newest first
    assert page["has_more"]
    rest = await client.conversations_history(
        channel=OPS.id, limit=2, cursor=page["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["one"] and not rest["has_more"]


def _long_actions(count: int) -> dict[str, Any]:
    return {"type": "actions", "elements": [button(f"a{i}", "ok") for i in range(count)]}


INVALID_BLOCKS = {
    "too many blocks": [section("x")] * 51,
    "section text over 3000": [section("x" * 3001)],
    "header over 150": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "header in mrkdwn": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
    "button text over 75": [{"type": "actions", "elements": [button("a", "b" * 76)]}],
    "button value over 2000": [{"type": "actions", "elements": [button("a", "ok", "v" * 2001)]}],
    "context over 10 elements": [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}
    ],
    "actions over 25 elements": [_long_actions(26)],
    "unknown block type": [{"type": "sparkle"}],
    "section without text": [{"type": "section"}],
    "duplicate block_id": [dict(section("a"), block_id="b"), dict(section("b"), block_id="b")],
    "duplicate action_id": [
        {"type": "actions", "elements": [button("same", "a"), button("same", "b")]}
    ],
    "eleven checkboxes": [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "checkboxes",
                    "action_id": "c",
                    "options": [
                        {"text": {"type": "plain_text", "text": f"o{i}"}, "value": str(i)}
                        for i in range(11)
                    ],
                }
            ],
        }
    ],
    "not an array": {"type": "section"},
}


@pytest.mark.parametrize("blocks", INVALID_BLOCKS.values(), ids=INVALID_BLOCKS.keys())
async def test_invalid_blocks_are_refused(
    client: AsyncWebClient, workspace: SandboxWorkspace, blocks: Any
) -> None:
    with pytest.raises(SlackApiError) as error:
        await client.chat_postMessage(channel=INCIDENTS.id, text="x", blocks=blocks)
    assert error.value.response["error"] == "invalid_blocks"
    assert error.value.response["errors"]
    assert workspace.messages(INCIDENTS.id) == []


async def test_invalid_blocks_refused_by_update_too(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    posted = await client.chat_postMessage(channel=INCIDENTS.id, text="ok")
    with pytest.raises(SlackApiError) as error:
        await client.chat_update(
            channel=INCIDENTS.id, ts=posted["ts"], text="x", blocks=[section("x" * 3001)]
        )
    assert error.value.response["error"] == "invalid_blocks"
    message = workspace.latest_message(INCIDENTS.id)
    assert message is not None and message.text == "ok" and not message.edited


async def test_post_message_over_the_limit_gets_429_with_retry_after(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    workspace.set_rate_limit("chat.postMessage", RateLimit(per_minute=6, burst=2, per_channel=True))
    await client.chat_postMessage(channel=INCIDENTS.id, text="1")
    await client.chat_postMessage(channel=INCIDENTS.id, text="2")
    with pytest.raises(SlackApiError) as error:
        await client.chat_postMessage(channel=INCIDENTS.id, text="3")
    assert error.value.response.status_code == 429
    assert error.value.response["error"] == "ratelimited"
    assert 1 <= int(error.value.response.headers["Retry-After"]) <= 10
    # The limit is per channel.
    await client.chat_postMessage(channel=OPS.id, text="elsewhere")

    assert workspace.ratelimited_count == 1
    assert workspace.ratelimited_by_method["chat.postMessage"] == 1
    assert [m.text for m in workspace.messages(INCIDENTS.id)] == ["1", "2"]
    assert workspace.calls_to("chat.postMessage")[2].status == 429


async def test_chat_update_is_tier_3_workspace_wide(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    default = workspace.rate_limiter.limits["chat.update"]
    assert default.per_minute == 50 and not default.per_channel
    # Tightened so that the refill during the test cannot matter on a slow machine.
    workspace.set_rate_limit("chat.update", RateLimit(per_minute=1, burst=3))
    first = await client.chat_postMessage(channel=INCIDENTS.id, text="live")
    second = await client.chat_postMessage(channel=OPS.id, text="live")
    for n in range(2):
        await client.chat_update(channel=INCIDENTS.id, ts=first["ts"], text=f"update {n}")
    await client.chat_update(channel=OPS.id, ts=second["ts"], text="update")
    with pytest.raises(SlackApiError) as error:
        await client.chat_update(channel=INCIDENTS.id, ts=first["ts"], text="one too many")
    assert error.value.response.status_code == 429
    assert int(error.value.response.headers["Retry-After"]) >= 55


async def test_rate_limiting_can_be_switched_off(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    workspace.rate_limiter.enabled = False
    for n in range(12):
        await client.chat_postMessage(channel=INCIDENTS.id, text=str(n))
    assert workspace.ratelimited_count == 0


async def test_retry_handler_gets_a_burst_through(workspace: SandboxWorkspace) -> None:
    workspace.set_rate_limit("chat.postMessage", RateLimit.per_second(5, burst=3, per_channel=True))
    client = AsyncWebClient(
        token=BOT_TOKEN,
        base_url=workspace.base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.chat_postMessage(channel=INCIDENTS.id, text=str(n)) for n in range(5))
    )
    assert all(r["ok"] for r in results)
    assert workspace.ratelimited_count == 2  # two over the burst, each retried once
    assert sorted(m.text for m in workspace.messages(INCIDENTS.id)) == ["0", "1", "2", "3", "4"]
    assert time.monotonic() - started < 4  # Retry-After 1 s + up to 1 s jitter


async def test_response_url_posts_replaces_and_runs_out(workspace: SandboxWorkspace) -> None:
    original = workspace.issue_response_url(channel=INCIDENTS.id, user=ALICE.id)
    async with aiohttp.ClientSession() as http:

        async def send(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with http.post(url, json=payload) as response:
                return response.status, await response.json()

        assert await send(original, {"text": "working on it"}) == (200, {"ok": True})
        (ephemeral,) = workspace.ephemerals(ALICE.id)
        assert ephemeral.text == "working on it"

        status, _ = await send(original, {"text": "done", "replace_original": True})
        assert status == 200 and ephemeral.text == "done" and ephemeral.edited

        status, _ = await send(original, {"text": "for all", "response_type": "in_channel"})
        assert status == 200
        assert [m.text for m in workspace.messages(INCIDENTS.id)] == ["for all"]

        status, body = await send(original, {"blocks": [section("y" * 3001)]})
        assert (status, body["error"]) == (400, "invalid_blocks")

        assert (await send(original, {"delete_original": True}))[0] == 200
        assert workspace.ephemerals(ALICE.id) == []

        # Five uses so far (the refused one counts); the sixth is refused.
        status, body = await send(original, {"text": "again"})
        assert (status, body["error"]) == (404, "used_url")

        workspace.response_url_ttl = 0
        stale = workspace.issue_response_url(channel=INCIDENTS.id, user=ALICE.id)
        await asyncio.sleep(0.01)
        status, body = await send(stale, {"text": "late"})
        assert (status, body["error"]) == (404, "expired_url")

        status, body = await send(f"{workspace.origin}/response/nope", {"text": "?"})
        assert (status, body["error"]) == (404, "no_such_url")


async def test_views_open_checks_the_trigger(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Rollback"},
        "blocks": [section("Choose a backup")],
    }
    trigger = workspace.issue_trigger_id(ALICE.id)
    opened = await client.views_open(trigger_id=trigger, view=view)
    assert opened["view"]["id"].startswith("V")
    assert workspace.views[0].user == ALICE.id

    errors = []
    for trigger_id in (trigger, "1.2.unknown"):
        with pytest.raises(SlackApiError) as error:
            await client.views_open(trigger_id=trigger_id, view=view)
        errors.append(error.value.response["error"])
    workspace.trigger_id_ttl = 0
    late = workspace.issue_trigger_id(ALICE.id)
    await asyncio.sleep(0.01)
    with pytest.raises(SlackApiError) as error:
        await client.views_open(trigger_id=late, view=view)
    errors.append(error.value.response["error"])
    assert errors == ["exchanged_trigger_id", "invalid_trigger_id", "expired_trigger_id"]


async def test_wait_for_returns_when_state_changes(
    client: AsyncWebClient, workspace: SandboxWorkspace
) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel=OPS.id, text="late news")

    task = asyncio.create_task(post_later())
    message = await workspace.wait_for(lambda: workspace.latest_message(OPS.id), timeout=2)
    await task
    assert message.text == "late news"

    with pytest.raises(TimeoutError, match=r"chat\.postMessage"):
        await workspace.wait_for(lambda: workspace.dms(ALICE.id), timeout=0.1)
