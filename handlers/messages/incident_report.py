"""The incident report posted in the thread when a run ends, from the audit log."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import (
    Block,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from handlers.messages.code_plan import code_outcome
from handlers.messages.monitoring import monitoring_line
from handlers.messages.run_message import STATUS_LABELS, health_rows
from handlers.messages.text import (
    MAX_FIELD_TEXT,
    MAX_SECTION_TEXT,
    clock,
    code,
    escape,
    join_limited,
    mention,
    mentions,
    stamp,
)
from services import humanize
from services.run_store import RunKind
from services.run_view import RunView


def _data_loss_window(view: RunView) -> str:
    try:
        created = datetime.fromisoformat(str(view.plan.get("backup_created_at")))
    except ValueError:
        return "unknown"
    until = view.run.started_at or view.run.requested_at
    seconds = (until - created).total_seconds()
    return humanize.age(seconds) if seconds >= 0 else "unknown (backup dated in the future)"


def incident_report_text(view: RunView) -> str:
    return f"Incident report: rollback of {view.run.environment} {STATUS_LABELS[view.run.status]}"


def incident_report(view: RunView) -> list[Block]:
    run = view.run
    result = run.result or {}
    approvers = mentions([a.user_id for a in view.approvals]) if view.approvals else "none"
    facts = [
        f"*Outcome*\n{STATUS_LABELS[run.status]}",
        f"*Requested by*\n{mention(run.requested_by)} at {stamp(run.requested_at)}",
        f"*Approved by*\n{approvers}",
    ]
    if run.kind != RunKind.CODE.value:
        facts += [
            f"*Backup used*\n{code(str(view.plan.get('backup')), 300)}",
            f"*Data-loss window*\n{_data_loss_window(view)} (backup taken "
            f"{str(view.plan.get('backup_created_at', '?'))[:16].replace('T', ' ')} UTC)",
            f"*Safety backup*\n{code(str(result.get('safety_backup') or 'not taken'), 500)}",
        ]
    if run.kind in (RunKind.CODE.value, RunKind.FULL.value):
        facts.append(f"*Code*\n{code_outcome(view)}")
    if isinstance(result.get("downtime_seconds"), int | float):
        facts.append(f"*Downtime*\n{humanize.duration(result['downtime_seconds'])}")
    timeline = [
        f"{clock(e.at)} {escape(e.what)}"
        + (f": {mentions(e.people)}" if e.people else "")
        + (f" — {mention(e.actor)}" if e.actor else "")
        for e in view.timeline
    ]
    blocks: list[Block] = [
        HeaderBlock(text=f"Incident report: {run.environment}"[:150]),
        SectionBlock(
            text=MarkdownTextObject(
                text=escape(str(result.get("environment_state") or "No result recorded."))[
                    :MAX_SECTION_TEXT
                ]
            ),
            fields=[MarkdownTextObject(text=f[:MAX_FIELD_TEXT]) for f in facts],
        ),
        SectionBlock(
            text=MarkdownTextObject(
                text="*Timeline*\n" + join_limited(timeline, MAX_SECTION_TEXT - 20)
            )
        ),
    ]
    rows = health_rows(result)
    if rows:
        body = join_limited([r.replace("`", "'") for r in rows], MAX_SECTION_TEXT - 30)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Health checks*\n```{body}```")))
    if view.monitoring is not None:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=monitoring_line(view.monitoring))))
    if result.get("error"):
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text="*Error*\n" + code(str(result["error"]), MAX_SECTION_TEXT - 20)
                )
            )
        )
    return blocks
