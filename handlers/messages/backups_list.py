"""`/rollback backups <environment>`: the backups, newest first, with size, age and
provenance (who took it and why, the deployed commit, the schema version, the checksum)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, code, escape, join_limited, mention
from services import humanize
from services.backups import Backup
from services.provenance import Check, Listed, as_listed

_MARKS = {Check.VERIFIED: "✓", Check.UNCHECKED: "·", Check.CHANGED: "⚠️", Check.UNREADABLE: "⚠️"}


def _provenance(item: Listed) -> str:
    if item.problem is not None:
        return f"⚠️ {escape(item.problem)}"
    known = item.provenance
    if known is None:
        return ""
    parts = [
        f"{escape(known.kind.value)} by {mention(known.created_by)}",
        f"commit {code(item.commit, 20)}",
    ]
    if item.schema is not None:
        parts.append(f"schema {code(item.schema, 60)}")
    parts.append(f"{_MARKS[item.check or Check.UNCHECKED]} {item.verdict}")
    return " · ".join(parts)


def _line(item: Listed, now: datetime) -> str:
    b = item.backup
    line = f"{code(b.name, 200)} · {humanize.size(b.size_bytes)} · " + (
        "⚠️ " + "; ".join(b.notes(now))
        if b.future_dated(now)
        else " · ".join([f"{humanize.age(b.age_seconds(now))} old", *b.notes(now)])
    )
    origin = _provenance(item)
    return f"{line}\n      ↳ {origin}" if origin else line


def backups_message(
    environment: str, backups: Sequence[Backup | Listed], *, now: datetime
) -> list[Block]:
    if not backups:
        text = f"No backups of *{escape(environment)}* yet."
        return [SectionBlock(text=MarkdownTextObject(text=text[:MAX_SECTION_TEXT]))]
    head = f"*Backups of {escape(environment)}* ({len(backups)}, newest first)\n"
    lines = [_line(as_listed(b), now) for b in backups]
    body = join_limited(lines, MAX_SECTION_TEXT - len(head))
    return [SectionBlock(text=MarkdownTextObject(text=head + body))]


def backups_text(environment: str, count: int) -> str:
    return f"{count} backup(s) of {environment}"
