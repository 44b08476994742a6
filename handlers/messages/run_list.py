"""`/rollback status` and `/rollback history <environment>`: runs, one line each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, code, escape, join_limited, mention, stamp
from services import humanize
from services.run_store import RunRecord


def run_line(run: RunRecord, now: datetime) -> str:
    age = humanize.age((now - run.requested_at).total_seconds())
    step = f" · step {escape(run.current_step)}" if run.current_step else ""
    kind = f" · {escape(run.kind)}" if run.kind != "database" else ""
    return (
        f"{code(run.id, 20)} *{escape(run.environment)}*{kind} · {run.status.value}{step} · "
        f"{code(run.backup_name or '-', 120)} · by {mention(run.requested_by)} · "
        f"{stamp(run.requested_at)} ({age} ago)"
    )


def runs_message(
    title: str, runs: Sequence[RunRecord], *, now: datetime, empty: str
) -> list[Block]:
    head = f"*{escape(title)}*\n"
    body = join_limited([run_line(r, now) for r in runs], MAX_SECTION_TEXT - len(head)) or empty
    return [SectionBlock(text=MarkdownTextObject(text=head + body))]


def status_message(
    runs: Sequence[RunRecord], *, environment: str | None, now: datetime
) -> list[Block]:
    where = f" of {environment}" if environment else ""
    return runs_message(
        f"Rollbacks in progress{where}", runs, now=now, empty="None: nothing is being rolled back."
    )


def history_message(environment: str, runs: Sequence[RunRecord], *, now: datetime) -> list[Block]:
    return runs_message(
        f"Last rollbacks of {environment}", runs, now=now, empty="No rollbacks yet."
    )
