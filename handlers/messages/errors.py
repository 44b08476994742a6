"""What a person is told when their request or click cannot be done."""

from __future__ import annotations

from handlers.messages.text import (
    code,
    escape,
    escape_lines,
    join_limited,
    mention,
    mentions,
    truncate,
)
from services.errors import (
    CodeWouldConflict,
    DatabaseError,
    NotPosted,
    PermissionDenied,
    RollbackError,
    RunConflict,
)

MAX_ERROR_TEXT = 2900


def error_text(error: RollbackError) -> str:
    """A known error, in words; Slack IDs become mentions, nothing else is interpreted."""
    if isinstance(error, PermissionDenied):
        text = f"🚫 {escape(str(error))}"
        if error.allowed:
            text += f" Allowed: {mentions(error.allowed)}."
        return text
    if isinstance(error, RunConflict):
        return (
            f"⛔ A rollback of *{escape(error.environment)}* is already in progress: run "
            f"`{escape(error.run_id)}`, requested by {mention(error.requested_by)}. "
            "Nothing was started."
        )
    if isinstance(error, NotPosted):
        return not_posted_text(error)
    if isinstance(error, CodeWouldConflict):
        return conflict_text(error)
    # Only PostgreSQL's own text keeps its lines; anything else (which may repeat what a
    # user typed) stays on one line, so it cannot draw a line of its own (issue 8).
    shown = escape_lines if isinstance(error, DatabaseError) else escape
    return "⚠️ " + truncate(shown(str(error)), MAX_ERROR_TEXT)


def not_posted_text(error: NotPosted) -> str:
    me = mention(error.bot) if error.bot else "the bot"
    if error.channel.startswith("D"):
        where, fix = "this direct message", f"use `/rollback` in a channel {me} is in"
    else:
        where = f"<#{escape(error.channel)}>"
        fix = f"invite {me} to {where} (`/invite`) and ask again, or ask in a channel I am in"
    return (
        f"📵 I could not post the rollback plan in {where} (`{escape(error.reason)}`), so "
        f"request `{escape(error.run_id)}` was cancelled and *{escape(error.environment)}* "
        f"is not locked. To go on: {fix}."
    )


def unexpected_error_text(correlation_id: str) -> str:
    return (
        f"💥 Something went wrong on the bot's side (reference `{correlation_id}`). "
        "Nothing more was done; tell the bot's maintainers the reference."
    )


def conflict_text(error: CodeWouldConflict) -> str:
    """A code rollback whose revert conflicts: the files, and the database-only rollback."""
    files = [f"• {code(f, 200)}" for f in error.files]
    return truncate(
        f"⛔ Reverting {code(error.commit, 12)} ({escape(truncate(error.subject, 100))}) "
        f"conflicts with later changes in the code of *{escape(error.environment)}*, so nothing "
        "was started and nothing pushed. Conflicting files:\n"
        + join_limited(files, 1500)
        + "\nRevert it by hand, or roll back the database only: "
        + code(f"/rollback {error.database}", 300),
        MAX_ERROR_TEXT,
    )
