"""Plain-text rendering of Block Kit messages for the demo transcript."""

from __future__ import annotations

import io
import re
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import LiveTranscript, Message, SandboxWorkspace, render_entry, render_message
from sandbox.slack.transcript import fold_unchanged
from tests.sandbox.conftest import ALICE, INCIDENTS, ONCALL

PLAN: dict[str, Any] = {
    "text": "fallback",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Rollback production"}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"Requested by <@{ALICE.id}> &amp; <!subteam^{ONCALL.id}> told",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Backup*"},
                {"type": "mrkdwn", "text": "pre-deploy.dump"},
            ],
        },
        {"type": "divider"},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": "run 42"},
                {"type": "mrkdwn", "text": "<https://ci.example/42|logs>"},
            ],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "checkboxes",
                    "action_id": "checklist",
                    "options": [
                        {"text": {"type": "plain_text", "text": "Team told"}, "value": "a"},
                        {"text": {"type": "plain_text", "text": "Backup ok"}, "value": "b"},
                    ],
                    "initial_options": [
                        {"text": {"type": "plain_text", "text": "Backup ok"}, "value": "b"}
                    ],
                }
            ],
        },
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "text": {"type": "plain_text", "text": "Reject"}},
            ],
        },
    ],
}


def test_render_message_without_workspace() -> None:
    assert render_message(PLAN) == [
        "Rollback production",
        "===================",
        f"Requested by @{ALICE.id} & @{ONCALL.id} told",
        "*Backup*".ljust(38) + " pre-deploy.dump",
        "─" * 40,
        "  run 42  ·  logs (https://ci.example/42)",
        "[ ] Team told",
        "[x] Backup ok",
        "[ Approve ] [ Reject ]",
    ]


def test_render_resolves_names_with_a_workspace(workspace: SandboxWorkspace) -> None:
    lines = render_message(PLAN, workspace=workspace)
    assert lines[2] == "Requested by @alice & @oncall told"


def test_text_only_message_and_entry_header(workspace: SandboxWorkspace) -> None:
    message = Message(
        ts="1.000001",
        channel=INCIDENTS.id,
        text="line one\nline two",
        blocks=[],
        user=workspace.bot_user_id,
        ephemeral_to=ALICE.id,
        posted_at=0.0,
    )
    entry = render_entry(message, workspace=workspace)
    assert entry[0].endswith("rollback-bot (only visible to alice):")
    assert entry[1:] == ["    line one", "    line two"]


def test_fold_unchanged_keeps_the_title_and_what_changed() -> None:
    before = ["Title", "a", "b", "c", "⏳ step", "x", "[ Approve ]", "footer"]
    after = ["Title", "a", "b", "c", "✓ step", "x", "footer"]
    assert fold_unchanged(before, after) == [
        "Title",
        "┆ 3 lines as before",
        "✓ step",
        "x",
        "┆ removed: [ Approve ]",
        "footer",
    ]


async def test_live_transcript_prints_new_and_edited_messages(
    workspace: SandboxWorkspace, client: AsyncWebClient
) -> None:
    out = io.StringIO()
    transcript = LiveTranscript(workspace, out)
    plan = await client.chat_postMessage(
        channel=INCIDENTS.id, blocks=PLAN["blocks"], text=PLAN["text"]
    )
    fields = [{"type": "mrkdwn", "text": "*Backup*\npre-deploy.dump"}]
    await client.chat_postMessage(
        channel=ALICE.id, text="*You* asked", blocks=[{"type": "section", "fields": fields}]
    )
    assert transcript.flush() == 2
    first = out.getvalue()
    assert re.search(
        r"^\[\d\d:\d\d:\d\d\] #incidents · rollback-bot\n    Rollback production", first
    )
    assert re.search(r"\n    Backup +pre-deploy\.dump\n", first)  # no markup
    # A field written as label and value on two lines is shown as one.
    assert "] direct message to alice · rollback-bot\n    Backup: pre-deploy.dump\n" in first

    await client.chat_update(
        channel=INCIDENTS.id, ts=plan["ts"], blocks=PLAN["blocks"][:-1], text="approved"
    )
    await client.chat_postMessage(channel=INCIDENTS.id, thread_ts=plan["ts"], text="report")
    assert transcript.flush() == 2
    edited, reply = out.getvalue()[len(first) :].split("\n\n")[:2]
    assert edited.splitlines()[0].endswith("] #incidents · rollback-bot (edited)")
    assert edited.splitlines()[1:] == [
        "    Rollback production",
        "    ┆ 7 lines as before",
        "    ┆ removed: [ Approve ] [ Reject ]",
    ]
    assert reply.endswith("] #incidents · rollback-bot (in thread)\n    report")

    # An edit nobody could see (same text and blocks) prints nothing.
    await client.chat_update(
        channel=INCIDENTS.id, ts=plan["ts"], blocks=PLAN["blocks"][:-1], text="approved"
    )
    assert transcript.flush() == 0
