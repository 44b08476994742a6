"""The bot's log: one line per record, control characters escaped, secrets scrubbed, and
Bolt's own lines bounded (it logs a refused request's whole body).

On a terminal the lines are for people; elsewhere (a container's log, journald) each line
is one JSON object with the time, level, logger, message and, inside a run, its run id,
environment and step (LOG_FORMAT=json|text|auto chooses)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

from bot.settings import Settings
from services import log_context
from services.environments import Environment
from services.pgtools import libpq_environment
from services.scrub import Scrubber, escape_controls

LogFormat = Literal["auto", "json", "text"]

BOLT_LINE_LIMIT = 300
_REFUSED = "Invalid request signature detected"


class RunContextFilter(logging.Filter):
    """Stamps each record with the run the writing task works on (services/log_context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run = log_context.current()
        return True


def _run_fields(record: logging.LogRecord) -> dict[str, str]:
    found = getattr(record, "run", None)
    return found if isinstance(found, dict) else {}


class OneLineFormatter(logging.Formatter):
    """Each record is one line, and no configured secret appears in it (tracebacks follow
    on their own lines, scrubbed too). Inside a run the line ends with its run id,
    environment and step."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.scrub = Scrubber(secrets).scrub

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        line = self.formatMessage(record)
        run = _run_fields(record)
        if run:
            line += " [" + " ".join(f"{k}={escape_controls(v)}" for k, v in run.items()) + "]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self.scrub(line)


class JsonFormatter(OneLineFormatter):
    """One JSON object per line (ASCII only: no control character reaches the log raw)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(message)s", secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_run_fields(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Scrubbed before encoding (JSON escapes would hide a secret) and after.
        return self.scrub(json.dumps({k: self.scrub(v) for k, v in entry.items()}))


class BoltLogFilter(logging.Filter):
    """On Bolt's loggers: a refused request is one short line, any other line is bounded,
    and the warning that a client carrying its own token makes `token` unused is dropped
    (Bolt reads SLACK_BOT_TOKEN from the environment itself when it is set there)."""

    def __init__(self) -> None:
        super().__init__()
        # Imported here: the command line logs without loading Bolt.
        from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

        self.token_unused = warning_client_prioritized_and_token_skipped()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == self.token_unused:
            return False
        if message.startswith(_REFUSED):
            record.msg, record.args = (
                "refused a request: invalid signature (%d characters)",
                (len(message),),
            )
        elif len(message) > BOLT_LINE_LIMIT:
            record.msg = "%s… (%d characters)"
            record.args = (message[:BOLT_LINE_LIMIT], len(message))
        return True


def bolt_logger() -> logging.Logger:
    """The base logger for the Bolt app: Bolt copies its filters to every logger it makes."""
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, BoltLogFilter) for f in logger.filters):
        logger.addFilter(BoltLogFilter())
    return logger


def configure_logging(
    level: str | int = logging.WARNING,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    log_format: LogFormat = "text",
) -> logging.Handler:
    """The root logger writes one line per record to stderr (or `stream`): for people, or
    (json, or auto when the stream is not a terminal) one JSON object."""
    handler = logging.StreamHandler(stream)
    if log_format == "auto":
        log_format = "text" if handler.stream.isatty() else "json"
    handler.addFilter(RunContextFilter())
    handler.setFormatter(
        JsonFormatter(secrets)
        if log_format == "json"
        else OneLineFormatter("%(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, OneLineFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def configured_secrets(settings: Settings, environments: Mapping[str, Environment]) -> list[str]:
    """Every secret the bot is configured with: Slack's tokens and signing secret, the
    passwords of its store and of each environment's database, each environment's
    `secrets_env` values, and its git credentials."""
    found = [
        s.get_secret_value()
        for s in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token)
        if s is not None
    ]
    urls = [e.database_url.get_secret_value() for e in environments.values()]
    if settings.database_url is not None:
        urls.append(settings.database_url.get_secret_value())
    found += [libpq_environment(url).get("PGPASSWORD", "") for url in urls]
    found += [
        os.environ.get(variable, "")
        for e in environments.values()
        if e.git is not None
        for variable in (e.git.token_env, e.git.ssh_passphrase_env)
        if variable
    ]
    found += [s.get_secret_value() for e in environments.values() for s in e.secrets]
    return [s for s in found if s]
