"""The bot's log: one line per record, control characters escaped, secrets scrubbed, and
Bolt's own lines bounded (it logs a refused request's whole body)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TextIO

from bot.settings import Settings
from services.environments import Environment
from services.pgtools import libpq_environment

# C0 and C1 control characters and DEL: a user's newline must not start a fake log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
BOLT_LINE_LIMIT = 300
_REFUSED = "Invalid request signature detected"


def escape_controls(text: str) -> str:
    """`text` on one line: control characters as Python escapes (\\n, \\x1b, …)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class OneLineFormatter(logging.Formatter):
    """Each record is one line, and no configured secret appears in it (tracebacks follow
    on their own lines, scrubbed too)."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self.scrub(line)


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
) -> logging.Handler:
    """The root logger writes one line per record to stderr (or `stream`)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, OneLineFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def configured_secrets(settings: Settings, environments: Mapping[str, Environment]) -> list[str]:
    """Every secret the bot is configured with: Slack's tokens and signing secret, and the
    passwords of its store and of each environment's database."""
    found = [
        s.get_secret_value()
        for s in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token)
        if s is not None
    ]
    urls = [e.database_url.get_secret_value() for e in environments.values()]
    if settings.database_url is not None:
        urls.append(settings.database_url.get_secret_value())
    found += [libpq_environment(url).get("PGPASSWORD", "") for url in urls]
    return [s for s in found if s]
