"""The bot's log: bounded lines for refused requests, escaped controls, no secrets (issue 8)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import time
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.app import create_app
from bot.logs import configure_logging, configured_secrets
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from services import log_context
from services.environments import Environment, GitTarget
from services.scrub import escape_controls
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


def test_json_lines_off_a_terminal_carry_the_run_and_no_secret() -> None:
    """issue 11: not on a terminal (auto), each line is one JSON object with the time, level,
    logger, message and, inside a run, its run id, environment and step; secrets scrubbed,
    also in a traceback and where JSON would escape them."""
    stream = io.StringIO()
    handler = configure_logging(
        logging.INFO, secrets=["hunter2-secret", 'quo"te-secret'], stream=stream, log_format="auto"
    )
    log = logging.getLogger("services.test")
    try:
        log.info("before the run")
        with log_context.run_scope("rb-1234", "production"):
            with log_context.step_scope("restore"):
                try:
                    raise RuntimeError("password hunter2-secret refused\nINFO fake line")
                except RuntimeError:
                    log.exception('restore failed for quo"te-secret \x1b[2J')
            log.warning("between steps")
        log.info("after the run")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4 and text.isascii() and "\x1b" not in text
    before, failed, between, after = lines
    assert set(before) == {"time", "level", "logger", "message"}
    assert before["logger"] == "services.test" and before["level"] == "INFO"
    assert datetime.fromisoformat(before["time"]).tzinfo is not None
    assert failed["run_id"] == "rb-1234" and failed["environment"] == "production"
    assert failed["step"] == "restore" and failed["level"] == "ERROR"
    assert failed["message"] == "restore failed for *** \x1b[2J"
    assert "RuntimeError: password *** refused\nINFO fake line" in failed["exception"]
    assert "hunter2" not in text and "te-secret" not in text
    assert between["run_id"] == "rb-1234" and "step" not in between
    assert "run_id" not in after


def read_lines(fd: int, count: int, timeout: float = 5.0) -> str:
    """What a pty shows once `count` lines arrived (one read may return only part)."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            data += os.read(fd, 4096)
    return data.decode()


def test_human_lines_on_a_terminal_and_log_format_overrides() -> None:
    """issue 11: on a terminal (a real pty) the lines stay for people, naming the run at
    the end; LOG_FORMAT=json wins over the terminal, text over a pipe."""
    controller, terminal = pty.openpty()
    try:
        with open(terminal, "w", closefd=False) as tty:
            for log_format, stream in (("auto", tty), ("json", tty), ("text", io.StringIO())):
                handler = configure_logging(logging.INFO, stream=stream, log_format=log_format)
                try:
                    with log_context.run_scope("rb-9", "staging"):
                        logging.getLogger("bot.test").warning("hello %s", log_format)
                finally:
                    logging.getLogger().removeHandler(handler)
                    tty.flush()
            assert isinstance(stream, io.StringIO)
            text = stream.getvalue()
        screen = read_lines(controller, 2).replace("\r\n", "\n")
    finally:
        os.close(controller)
        os.close(terminal)
    human, machine = screen.splitlines()
    assert human == "WARNING bot.test: hello auto [run_id=rb-9 environment=staging]"
    assert json.loads(machine)["message"] == "hello json"
    assert text == "WARNING bot.test: hello text [run_id=rb-9 environment=staging]\n"


def test_the_git_token_is_among_the_secrets_the_log_scrubs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: a token named by token_env is masked like the database passwords."""
    monkeypatch.setenv("APP_GIT_TOKEN", "ghp-log-never-sees-this")
    environment = Environment(
        name="production",
        compose_project="production",
        database_url=SecretStr("postgresql://app@db/app"),
        database_display="postgresql://app@db/app",
        backups_dir=tmp_path,
        git=GitTarget(
            url="https://git.example.com/app.git", workdir=tmp_path, token_env="APP_GIT_TOKEN"
        ),
    )
    secrets = configured_secrets(Settings(), {environment.name: environment})
    assert "ghp-log-never-sees-this" in secrets
    with bot_log(secrets=secrets) as stream:
        logging.getLogger("services.git").warning("push said ghp-log-never-sees-this")
    assert stream.getvalue() == "WARNING services.git: push said ***\n"
