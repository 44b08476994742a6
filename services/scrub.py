"""Secrets kept out of text that people read: the bot's own log lines (bot/logs.py) and the
container log excerpts posted when health fails (services/log_excerpts.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# C0 and C1 control characters and DEL: a user's newline must not start a fake log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What an application prints without anyone configuring it as a secret: Slack tokens, and
# passwords inside URLs (postgresql://user:password@host/…).
_SLACK_TOKEN = re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]{6,}")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
SHOWN_INSTEAD = "***"


def escape_controls(text: str) -> str:
    """`text` on one line: control characters as Python escapes (\\n, \\x1b, …)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class Scrubber:
    """Replaces every configured secret with ***; its repr never shows them."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole; shorter
        # ones would blank out ordinary words.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} secret(s))"

    def with_secrets(self, more: Iterable[str]) -> Scrubber:
        return Scrubber((*self._secrets, *more))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, SHOWN_INSTEAD)
        return text

    def scrub_all(self, text: str) -> str:
        """The configured secrets, then tokens and URL passwords nobody configured."""
        text = _SLACK_TOKEN.sub(SHOWN_INSTEAD, self.scrub(text))
        return _URL_PASSWORD.sub(rf"\g<1>{SHOWN_INSTEAD}@", text)
