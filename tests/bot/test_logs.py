"""The bot's log: bounded lines for refused requests, escaped controls, no secrets (issue 8)."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bot.app import create_app, serve
from bot.logs import configure_logging, escape_controls
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from sandbox.slack import SandboxWorkspace, SlackUser
from sandbox.throwaway_postgres import ThrowawayPostgres
from tests.handlers.conftest import ALICE, BOT_TOKEN, INCIDENTS, SIGNING_SECRET
from tests.services.conftest import Stage


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """What the bot's configured log handler writes, at INFO as `serve` runs."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(logging.INFO, secrets=[BOT_TOKEN, SIGNING_SECRET], stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_500_kb_forged_request_adds_one_bounded_log_line(
    stage: Stage, pg: ThrowawayPostgres, log_stream: io.StringIO
) -> None:
    """issue 8: Bolt logged a refused request's whole body; now it is one short line."""
    port = free_port()
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN, users=[ALICE], channels=[INCIDENTS]
    ) as workspace:
        settings = Settings(
            database_url=SecretStr(pg.superuser_dsn("rollback_bot_store")),
            pg_bin=str(pg.bin_dir),
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
            slack_api_url=workspace.base_url,
            port=port,
        )
        grown: list[str] = []

        async def forge() -> None:
            url = f"http://127.0.0.1:{port}/slack/events"
            async with SlackUser(workspace, url, SIGNING_SECRET) as slack:
                before = log_stream.getvalue()
                forged = await slack.send_command(
                    ALICE.id, INCIDENTS.id, "/rollback", "x" * 500_000, signing_secret="wrong"
                )
                assert forged.status == 401
                grown.append(log_stream.getvalue()[len(before) :])

        await serve(settings, {stage.environment.name: stage.environment}, stop=forge)
    (line,) = grown[0].splitlines()
    assert "refused a request: invalid signature" in line
    assert len(line) < 200


def test_log_lines_escape_control_characters_and_scrub_secrets() -> None:
    """issue 8: a user's newline cannot print a fake log line; no configured secret shows."""
    stream = io.StringIO()
    root = logging.getLogger()
    handler = configure_logging(logging.INFO, secrets=["hunter2-secret"], stream=stream)
    try:
        hostile = "x.dump\nINFO bot: Rollback SUCCEEDED\x1b[2J\x00"
        logging.getLogger("handlers.test").warning("backup %s by hunter2-secret", hostile)
    finally:
        root.removeHandler(handler)
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
