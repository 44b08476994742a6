"""`/rollback backups <environment>`: the backups, newest first, with size and age."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, code, escape, join_limited
from services import humanize
from services.backups import Backup


def backups_message(environment: str, backups: Sequence[Backup], *, now: datetime) -> list[Block]:
    if not backups:
        text = f"No backups of *{escape(environment)}* yet."
        return [SectionBlock(text=MarkdownTextObject(text=text[:MAX_SECTION_TEXT]))]
    head = f"*Backups of {escape(environment)}* ({len(backups)}, newest first)\n"
    lines = [
        f"{code(b.name, 200)} · {humanize.size(b.size_bytes)} · "
        + (
            "⚠️ " + "; ".join(b.notes(now))
            if b.future_dated(now)
            else " · ".join([f"{humanize.age(b.age_seconds(now))} old", *b.notes(now)])
        )
        for b in backups
    ]
    body = join_limited(lines, MAX_SECTION_TEXT - len(head))
    return [SectionBlock(text=MarkdownTextObject(text=head + body))]


def backups_text(environment: str, count: int) -> str:
    return f"{count} backup(s) of {environment}"
