"""The bot's log: bounded lines for refused requests, escaped controls, no secrets (issue 8)."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from bot.app import create_app
from bot.logs import escape_controls
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from tests.conftest import bot_log
from tests.handlers.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.services.conftest import Stage


def test_log_lines_escape_control_characters_and_scrub_secrets() -> None:
    """issue 8: a user's newline cannot print a fake log line; no configured secret shows."""
    with bot_log(secrets=["hunter2-secret"]) as stream:
        hostile = "x.dump\nINFO bot: Rollback SUCCEEDED\x1b[2J\x00"
        logging.getLogger("handlers.test").warning("backup %s by hunter2-secret", hostile)
    (line,) = stream.getvalue().splitlines()
    assert line == (
        "WARNING handlers.test: backup x.dump\\nINFO bot: Rollback SUCCEEDED\\x1b[2J\\x00 by ***"
    )
    assert escape_controls("tab\there") == "tab\\there"


async def test_bolt_does_not_warn_that_the_token_is_unused(
    stage: Stage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """issue 8: with SLACK_BOT_TOKEN in the process environment Bolt read it itself and
    warned "`token` will be unused" at every start-up, as the client carries the token."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    settings = Settings(
        slack_bot_token=SecretStr(BOT_TOKEN), slack_signing_secret=SecretStr(SIGNING_SECRET)
    )
    caplog.set_level(logging.DEBUG)
    create_app(settings, stage.services, tasks=BackgroundTasks())
    assert not [r for r in caplog.records if "will be unused" in r.getMessage()]
