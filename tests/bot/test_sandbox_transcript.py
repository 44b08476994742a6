"""Plain-text rendering of Block Kit messages for the demo transcript."""

from __future__ import annotations

from typing import Any

from bot.sandbox import Message, SandboxWorkspace, render_entry, render_message
from tests.bot.conftest import ALICE, INCIDENTS, ONCALL

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
