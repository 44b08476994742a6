"""The one channel message of a rollback: plan, approvals, live steps, health, checklist.

Rebuilt whole from a `RunView` each time, so the latest state always wins; every part is
bounded, so it stays within Block Kit's limits whatever the containers or errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    Option,
    PlainTextObject,
    SectionBlock,
)

from handlers.ids import ActionId, BlockId, button_value
from handlers.messages.code_plan import (
    code_plan_blocks,
    follow_up_block,
    full_notes,
    halves_section,
    kind_title,
)
from handlers.messages.monitoring import monitoring_section
from handlers.messages.text import (
    MAX_FIELD_TEXT,
    MAX_HEADER_TEXT,
    MAX_OPTION_TEXT,
    MAX_SECTION_TEXT,
    code,
    confirm,
    escape,
    join_limited,
    mention,
    mentions,
    stamp,
    truncate,
)
from services import humanize
from services.checklist import BOT, CHECKLIST_LABELS, PEOPLE_ITEMS
from services.events import Step
from services.run_store import RunKind, RunStatus
from services.run_view import RunView, StepState, StepStatus

STATUS_LABELS = {
    RunStatus.PENDING: "pending",
    RunStatus.AWAITING_APPROVAL: "awaiting approval",
    RunStatus.APPROVED: "approved, starting",
    RunStatus.RUNNING: "in progress",
    RunStatus.SUCCEEDED: "done",
    RunStatus.FAILED: "FAILED",
    RunStatus.REJECTED: "rejected",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.EXPIRED: "expired",
    RunStatus.INTERRUPTED: "interrupted",
    RunStatus.ABORTED: "aborted",
}
STEP_ICONS = {
    StepStatus.PENDING: "○",
    StepStatus.RUNNING: "⏳",
    StepStatus.DONE: "✓",
    StepStatus.FAILED: "✗",
}
_STARTED = (RunStatus.APPROVED, RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED)
_ENDED_BY_CRASH = (RunStatus.INTERRUPTED, RunStatus.ABORTED)
STEP_MESSAGE_LIMIT = 200


def run_message_text(view: RunView) -> str:
    """The fallback text (notifications, screen readers)."""
    title = kind_title(view.run.kind)
    return f"{title} of {view.run.environment}: {STATUS_LABELS[view.run.status]}"


FUTURE = "dated in the future"


def _backup_notes(plan: dict[str, Any]) -> list[str]:
    notes = plan.get("backup_notes")
    return [str(n) for n in notes][:3] if isinstance(notes, list) else []


def _age_of(plan: dict[str, Any], now: datetime) -> str:
    if any(n.startswith(FUTURE) for n in _backup_notes(plan)):
        return f"⚠️ {FUTURE}"  # not "0 s" (issue 8)
    try:
        created = datetime.fromisoformat(str(plan.get("backup_created_at")))
    except ValueError:
        return "unknown"
    return humanize.age((now - created).total_seconds())


def _plan_section(view: RunView, now: datetime) -> SectionBlock:
    plan = view.plan
    age = _age_of(plan, now)
    created = str(plan.get("backup_created_at", "?"))[:19].replace("T", " ")
    text = (
        f"{mention(view.run.requested_by)} asked to roll back *{escape(view.run.environment)}* "
        f"to backup {code(str(plan.get('backup')), 300)}.\n"
        f"Everything written to {code(str(plan.get('database')), 300)} after {created} UTC "
        + (f"(*{age}* of data) " if not age.startswith("⚠️") else f"(*{age}*: check it) ")
        + "will be rolled back from the live database; "
        + (
            "the current database is set aside, kept for an instant undo and dumped to "
            if plan.get("strategy") == "swap"
            else "the current data is kept first in the safety backup "
        )
        + f"{code(str(plan.get('safety_backup')), 300)}."
    )
    size = plan.get("backup_size_bytes")
    fields = [
        f"*Environment*\n{escape(view.run.environment)}",
        f"*Backup*\n{code(str(plan.get('backup')), 300)}"
        + (f" ({humanize.size(size)})" if isinstance(size, int) else ""),
        f"*Backup age*\n{age}",
        *(f"*Note*\n⚠️ {escape(n)}" for n in _backup_notes(plan)),
        f"*Strategy*\n{escape(str(plan.get('strategy_note') or plan.get('strategy')))}",
        f"*Tables in backup*\n{plan.get('tables_in_backup', '?')}",
        f"*Containers to {_MODE_VERBS[_mode(plan)][0]}*\n{len(plan.get('containers') or [])}",
    ]
    return SectionBlock(
        block_id=BlockId.PLAN,
        text=MarkdownTextObject(text=truncate(text, MAX_SECTION_TEXT)),
        fields=[MarkdownTextObject(text=truncate(f, MAX_FIELD_TEXT)) for f in fields],
    )


# cut-over mode → (the field's verb, the containers section's words)
_MODE_VERBS = {
    "stop": ("stop", "Containers that will stop"),
    "pause": ("pause", "Containers that will be paused"),
    "keep": ("keep running", "Containers kept running"),
}


# What Approve does to the application, per cut-over mode (the confirmation dialog).
_CONFIRM = {
    "stop": "This stops {env}, replaces its database with {backup} and starts it again.",
    "pause": "This pauses {env}, replaces its database with {backup} and thaws it.",
    "keep": "This replaces the database of {env} with {backup} while it keeps running "
    "(its database sessions are ended).",
}
_UNDO_HOLD = {"stop": "stops", "pause": "pauses", "keep": "ends the database sessions of"}


def _mode(plan: dict[str, Any]) -> str:
    mode = str(plan.get("cutover_mode") or "stop")
    return mode if mode in _MODE_VERBS else "stop"


def _containers_section(view: RunView) -> SectionBlock:
    names = [escape(str(n)) for n in view.plan.get("containers") or []]
    head = f"*{_MODE_VERBS[_mode(view.plan)][1]} ({len(names)}):* "
    sees = view.plan.get("application_sees")
    tail = f"\n*What the application sees:* {escape(str(sees))}" if sees else ""
    room = MAX_SECTION_TEXT - len(head) - len(tail)
    listed = join_limited(names, room, sep=", ") or "none"
    return SectionBlock(
        block_id=BlockId.CONTAINERS, text=MarkdownTextObject(text=head + listed + tail)
    )


def _notes(view: RunView) -> list[str]:
    notes = full_notes(view) if view.run.kind == RunKind.FULL.value else []
    notes += [
        f"⚠️ The plan changed ({escape(why)}); approvals given before no longer count."
        for why in view.plan_changes[-3:]
    ]
    if view.run.escalated_at is not None:
        contacts = view.environment.contacts
        told = [*contacts.escalation_users, *contacts.escalation_usergroups]
        waited = (view.run.escalated_at - view.run.requested_at).total_seconds()
        notes.append(
            f"📣 No approval after {humanize.duration(waited)}: "
            f"escalated to {mentions(told)} at {stamp(view.run.escalated_at)}."
        )
    if view.run.status is RunStatus.EXPIRED:
        notes.append(f"⌛ Expired at {stamp(view.expires_at)} without enough approvals.")
    return notes


def _approvals_section(view: RunView) -> SectionBlock:
    run = view.run
    approvers = view.environment.approval.approvers
    given = ", ".join(f"{mention(a.user_id)} ({stamp(a.at)})" for a in view.approvals)
    lines = [
        f"*Approvals:* {len(view.approvals)} of {view.required_approvals}"
        + (f" — {given}" if given else "")
    ]
    if view.stale_approvals:
        stale = ", ".join(mention(a.user_id) for a in view.stale_approvals)
        lines.append(f"Given to an earlier plan, no longer counting: {stale}")
    if run.status is RunStatus.AWAITING_APPROVAL:
        who = mentions(approvers) if approvers else "anyone but the requester"
        lines.append(f"Approvers: {who} · expires {stamp(view.expires_at)}")
    elif run.status in (RunStatus.REJECTED, RunStatus.CANCELLED) and view.closed_by:
        lines.append(f"{STATUS_LABELS[run.status].capitalize()} by {mention(view.closed_by)}.")
    return SectionBlock(
        block_id=BlockId.APPROVALS,
        text=MarkdownTextObject(text=join_limited(lines, MAX_SECTION_TEXT)),
    )


def step_line(state: StepState) -> str:
    line = f"{STEP_ICONS[state.status]} {state.label}"
    if state.seconds is not None:
        line += f" — {humanize.duration(state.seconds)}"
    if state.message:
        line += f" · {escape(truncate(state.message, STEP_MESSAGE_LIMIT))}"
    return line


def _steps_section(view: RunView) -> SectionBlock:
    lines = ["*Steps*", *(step_line(s) for s in view.steps)]
    return SectionBlock(
        block_id=BlockId.STEPS, text=MarkdownTextObject(text=join_limited(lines, MAX_SECTION_TEXT))
    )


def health_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for check in result.get("health") or []:
        latency = check.get("latency")
        timing = f"{latency * 1000:.0f} ms" if isinstance(latency, int | float) else "-"
        mark = "✓" if check.get("ok") else "✗"
        name = truncate(str(check.get("name", "?")), 24)
        detail = truncate(str(check.get("detail", "")), 60)
        rows.append(f"{mark} {name:<24} {timing:>8}  {detail}")
    return rows


def _health_section(rows: list[str]) -> SectionBlock:
    head, fence = "*Health checks*\n```", "```"
    body = join_limited(
        [r.replace("`", "'") for r in rows], MAX_SECTION_TEXT - len(head) - len(fence)
    )
    return SectionBlock(block_id=BlockId.HEALTH, text=MarkdownTextObject(text=head + body + fence))


def _summary_section(view: RunView) -> SectionBlock | None:
    result = view.run.result
    if result is None:
        return None
    lines = [f"*Result:* {escape(str(result.get('environment_state') or '-'))}"]
    if result.get("error"):
        lines.append(f"*Error:* {code(str(result['error']), 500)} (details in the thread)")
    if result.get("safety_backup"):
        lines.append(f"*Safety backup:* {code(str(result['safety_backup']), 500)}")
    timing = []
    if isinstance(result.get("downtime_seconds"), int | float):
        timing.append(f"downtime {humanize.duration(result['downtime_seconds'])}")
    if view.run.started_at and view.run.finished_at:
        total = (view.run.finished_at - view.run.started_at).total_seconds()
        timing.append(f"total {humanize.duration(total)}")
    if isinstance(result.get("database_unavailable_seconds"), int | float):
        timing.append(
            f"database unusable {result['database_unavailable_seconds']:.2f} s "
            f"({escape(str(result.get('strategy') or '-'))})"
        )
    if timing:
        lines.append("*Time:* " + ", ".join(timing))
    if result.get("old_database") and not result.get("old_database_dropped"):
        until = str(result.get("keep_old_until") or "")[:16].replace("T", " ")
        lines.append(
            f"*Pre-rollback database:* kept as {code(str(result['old_database']), 200)}"
            f" until {until} UTC, for an instant undo"
        )
    if result.get("undone_by"):
        lines.append(f"↩️ *Undone* by run `{escape(str(result['undone_by']))}`.")
    return SectionBlock(
        block_id=BlockId.SUMMARY,
        text=MarkdownTextObject(text=join_limited(lines, MAX_SECTION_TEXT)),
    )


def _checklist_blocks(view: RunView) -> list[Block]:
    lines = ["*Rollback checklist*"]
    for item, label in CHECKLIST_LABELS.items():
        tick = view.checklist.get(item)
        if tick is None:
            lines.append(f"☐ {label}")
        else:
            by = "the bot" if tick.by == BOT else mention(tick.by)
            lines.append(f"☑ {label} — {by}")
    options = {
        item: Option(value=item.value, text=PlainTextObject(text=truncate(label, MAX_OPTION_TEXT)))
        for item, label in CHECKLIST_LABELS.items()
        if item in PEOPLE_ITEMS
    }
    ticked = [options[i] for i in PEOPLE_ITEMS if view.checklist.get(i) is not None]
    return [
        SectionBlock(
            block_id=BlockId.CHECKLIST,
            text=MarkdownTextObject(text=join_limited(lines, MAX_SECTION_TEXT)),
        ),
        ActionsBlock(
            block_id=BlockId.CHECKLIST_TICKS,
            elements=[
                CheckboxesElement(
                    action_id=ActionId.CHECKLIST,
                    options=list(options.values()),
                    initial_options=ticked or None,
                )
            ],
        ),
    ]


def _approve_text(view: RunView) -> str:
    # The confirm text is mrkdwn too: a name there must not become a mention (issue 8).
    env = escape(truncate(view.run.environment, 60))
    backup = code(str(view.plan.get("backup")), 120)
    branch = code(str((view.plan.get("code") or {}).get("branch")), 60)
    database = (
        _CONFIRM[_mode(view.plan)].format(env=env, backup=backup)
        + " Data written since the backup leaves the live database."
    )
    if view.run.kind == RunKind.CODE.value:
        return f"This pushes the revert commits to {branch}, which deploys them to {env}."
    if view.run.kind == RunKind.FULL.value:
        return f"{database} Then it pushes the revert commits to {branch}."
    return database


def _decision_block(view: RunView) -> ActionsBlock:
    value = button_value(view.run.id, str(view.plan.get("plan_hash", "")))
    env = escape(truncate(view.run.environment, 60))
    return ActionsBlock(
        block_id=BlockId.DECISION,
        elements=[
            ButtonElement(
                action_id=ActionId.APPROVE,
                text="Approve",
                value=value,
                style="primary",
                confirm=confirm("Approve the rollback?", _approve_text(view), "Approve"),
            ),
            ButtonElement(
                action_id=ActionId.REJECT,
                text="Reject",
                value=value,
                style="danger",
                confirm=confirm("Reject the rollback?", f"Nothing happens to {env}.", "Reject"),
            ),
            ButtonElement(
                action_id=ActionId.CANCEL,
                text="Cancel",
                value=value,
                confirm=confirm("Cancel the request?", f"Nothing happens to {env}.", "Cancel it"),
            ),
        ],
    )


DATA_LOSS_ROWS = 12


def _data_loss_section(view: RunView) -> SectionBlock | None:
    """Per table, what the rollback takes out of the live database (swap preparation)."""
    if not view.data_loss or view.run.status not in (
        RunStatus.AWAITING_APPROVAL,
        RunStatus.APPROVED,
        RunStatus.RUNNING,
    ):
        return None
    changed = sorted(view.data_loss, key=lambda t: -abs(t.leaving))
    rows = [
        f"{truncate(t.table, 40):<40} {t.live:>12,} {t.backup:>12,} {-t.leaving:>+12,}"
        + (" ≈" if t.estimated else "")
        for t in changed[:DATA_LOSS_ROWS]
        if t.leaving
    ]
    if not rows:
        text = "*Data-loss preview:* every table has as many rows live as in the backup."
        return SectionBlock(block_id=BlockId.DATA_LOSS, text=MarkdownTextObject(text=text))
    more = len([t for t in changed if t.leaving]) - len(rows)
    head = f"{'table':<40} {'live rows':>12} {'in backup':>12} {'change':>12}"
    body = "\n".join([head, *rows]).replace("`", "'")
    estimates = any(t.estimated for t in changed[:DATA_LOSS_ROWS] if t.leaving)
    text = (
        "*Data-loss preview* (the backup is restored and compared while the application "
        f"runs):\n```{body}```"
        + (f"\n…and {more} more table(s)" if more > 0 else "")
        + (
            "\n≈ an estimate from the planner's statistics (a large table is not counted "
            "row by row before approval)"
            if estimates
            else ""
        )
    )
    return SectionBlock(
        block_id=BlockId.DATA_LOSS, text=MarkdownTextObject(text=truncate(text, MAX_SECTION_TEXT))
    )


def _undo_block(view: RunView) -> ActionsBlock | None:
    result = view.run.result or {}
    if (
        view.run.status is not RunStatus.SUCCEEDED
        or view.run.kind == RunKind.FULL.value  # its code stays: not an undo of the whole
        or not result.get("old_database")
        or result.get("old_database_dropped")
        or result.get("undone_by")
    ):
        return None
    env = escape(truncate(view.run.environment, 60))
    return ActionsBlock(
        block_id=BlockId.UNDO,
        elements=[
            ButtonElement(
                action_id=ActionId.UNDO,
                text="Undo rollback",
                value=view.run.id,
                style="danger",
                confirm=confirm(
                    "Undo the rollback?",
                    f"This {_UNDO_HOLD[view.environment.cutover_mode.value]} {env} for a moment "
                    "and swaps the pre-rollback database back in. Data written since the "
                    "rollback stays in the database set aside.",
                    "Undo",
                ),
            )
        ],
    )


def _recovery_blocks(view: RunView) -> list[Block]:
    """An interrupted run: what recovery found and did, and the approvers' two choices."""
    recovery = (view.run.result or {}).get("recovery")
    if not isinstance(recovery, dict):
        return []
    lines = [
        f"🚑 *Interrupted during {escape(str(recovery.get('interrupted_at') or 'its start'))}"
        "* (the bot process running it stopped); another bot process took it over:"
    ]
    lines += [f"• {escape(str(a))}" for a in recovery.get("actions") or []]
    lines += [f"• ⚠️ {escape(str(p))}" for p in recovery.get("problems") or []]
    blocks: list[Block] = [
        SectionBlock(
            block_id=BlockId.RECOVERY,
            text=MarkdownTextObject(text=join_limited(lines, MAX_SECTION_TEXT)),
        )
    ]
    if view.run.status is not RunStatus.INTERRUPTED:
        return blocks
    env = escape(truncate(view.run.environment, 60))
    data = recovery.get("data")
    resume_text = {
        "changed": "checks health and finishes the rollback",
        "unchanged": "runs the rollback again from the start, with the same backup",
    }.get(str(data), "looks at the database again, then finishes or reruns the rollback")
    abort_text = {
        "changed": "puts the pre-rollback data back (data written since is kept aside)",
        "unchanged": "ends the run; the data is already the pre-rollback data",
    }.get(str(data), "looks at the database again, then puts the pre-rollback data back")
    if view.run.kind == RunKind.CODE.value:
        resume_text = (
            "pushes the approved revert (found, not pushed twice, if it landed) and checks health"
        )
        abort_text = "ends the run if nothing was pushed (a pushed revert stays)"
    elif view.run.kind == RunKind.FULL.value and data == "changed":
        resume_text = "runs the code half (a push that landed is found), then checks health"
    blocks.append(
        ActionsBlock(
            block_id=BlockId.DECISION,
            elements=[
                ButtonElement(
                    action_id=ActionId.RESUME,
                    text="Resume",
                    value=view.run.id,
                    style="primary",
                    confirm=confirm("Resume the rollback?", f"Resume {resume_text}.", "Resume"),
                ),
                ButtonElement(
                    action_id=ActionId.ABORT,
                    text="Abort and restore",
                    value=view.run.id,
                    style="danger",
                    confirm=confirm(
                        f"Abort the rollback of {env}?", f"Abort {abort_text}.", "Abort"
                    ),
                ),
            ],
        )
    )
    return blocks


def run_message(view: RunView, *, now: datetime) -> list[Block]:
    run = view.run
    blocks: list[Block] = [
        HeaderBlock(block_id=BlockId.HEADER, text=truncate(run_message_text(view), MAX_HEADER_TEXT))
    ]
    if run.kind != RunKind.CODE.value:
        blocks += [_plan_section(view, now), _containers_section(view)]
    if run.kind in (RunKind.CODE.value, RunKind.FULL.value):
        blocks += code_plan_blocks(view, now)
    notes = _notes(view)
    if notes:
        blocks.append(
            SectionBlock(
                block_id=BlockId.NOTES,
                text=MarkdownTextObject(text=join_limited(notes, MAX_SECTION_TEXT)),
            )
        )
    blocks.append(_approvals_section(view))
    data_loss = _data_loss_section(view)
    if data_loss is not None:
        blocks.append(data_loss)
    preparing = any(
        s.step is Step.PREPARE and s.status is not StepStatus.PENDING for s in view.steps
    )
    if run.status in _STARTED or run.status in _ENDED_BY_CRASH or preparing:
        blocks.append(_steps_section(view))
    rows = health_rows(run.result or {})
    if rows:
        blocks.append(_health_section(rows))
    summary = _summary_section(view)
    if summary is not None:
        blocks.append(summary)
    halves = halves_section(view)
    if halves is not None:
        blocks.append(halves)
    watching = monitoring_section(view.monitoring)
    if watching is not None:
        blocks.append(watching)
    blocks.extend(_recovery_blocks(view))
    blocks.extend(_checklist_blocks(view))
    if run.status is RunStatus.AWAITING_APPROVAL:
        blocks.append(_decision_block(view))
    undo = _undo_block(view)
    if undo is not None:
        blocks.append(undo)
    follow_ups = follow_up_block(view)
    if follow_ups is not None:
        blocks.append(follow_ups)
    footer = (
        f"Run `{escape(run.id)}` · plan `{escape(str(view.plan.get('plan_hash', '-')))}` · "
        f"requested {stamp(run.requested_at)}"
    )
    blocks.append(ContextBlock(block_id=BlockId.FOOTER, elements=[MarkdownTextObject(text=footer)]))
    return blocks
