"""Text helpers shared by the messages: escaping, truncating, mentions, times, Block Kit limits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from slack_sdk.models.blocks import Block, ConfirmObject, MarkdownTextObject

from services.names import visible

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_CONTEXT_TEXT = 2000
MAX_OPTION_TEXT = 75
MAX_FALLBACK_TEXT = 4000

_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


def escape(text: str) -> str:
    """Text from outside (file names, error messages) shown literally, never as a mention;
    control characters, newlines included, shown as escapes (`\\n`), so it stays one line."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_lines(text: str) -> str:
    """Like `escape`, keeping the line breaks of a multi-line text (tool output)."""
    return "\n".join(escape(line) for line in text.split("\n"))


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters; a cut is marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def code(text: str, limit: int) -> str:
    """Inline code of escaped text, within `limit` characters in all."""
    inner = truncate(escape(text).replace("`", "'"), max(1, limit - 2))
    return f"`{inner}`"


def mention(principal: str) -> str:
    """A user (U…/W…) or user group (S…) as Slack shows it; anything else escaped."""
    if not _ID.match(principal):
        return escape(principal)
    if principal.startswith("S"):
        return f"<!subteam^{principal}>"
    return f"<@{principal}>"


def mentions(principals: Sequence[str]) -> str:
    return ", ".join(mention(p) for p in principals) if principals else "nobody"


def confirm(title: str, text: str, yes: str) -> ConfirmObject:
    """A button's confirmation dialog; `text` is mrkdwn, escaped by the caller."""
    return ConfirmObject(
        title=title, text=MarkdownTextObject(text=truncate(text, 300)), confirm=yes, deny="Back"
    )


def clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S UTC")


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def join_limited(
    lines: Sequence[str], limit: int, *, more: str = "… and {n} more", sep: str = "\n"
) -> str:
    """As many whole items as fit in `limit` characters, then how many were left out."""
    whole = sep.join(lines)
    if len(whole) <= limit:
        return whole
    reserve = len(more.format(n=len(lines))) + len(sep)  # the tail's longest form
    shown: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        cost = len(line) + (len(sep) if shown else 0)
        if used + cost + (0 if last else reserve) <= limit:
            shown.append(line)
            used += cost
            continue
        left = len(lines) - index
        if shown:
            shown.append(more.format(n=left))
        else:
            tail = "" if last else more.format(n=left - 1)
            shown.append(truncate(line, limit - (len(tail) + len(sep) if tail else 0)))
            if tail:
                shown.append(tail)
        break
    return truncate(sep.join(shown), limit)


def fallback(text: str) -> str:
    """The notification/fallback text sent with blocks."""
    return truncate(text, MAX_FALLBACK_TEXT)


def as_dicts(blocks: Sequence[Block]) -> list[dict[str, object]]:
    """What goes on the wire; slack_sdk validates the limits on the way."""
    return [block.to_dict() for block in blocks]
