"""The code part of a rollback's message: what will be reverted and pushed (a code rollback,
or a full rollback's code half), each half's state after a full rollback, and what is
offered when its code half failed (Retry code rollback, Undo database rollback)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    MarkdownTextObject,
    SectionBlock,
)

from handlers.ids import ActionId, BlockId
from handlers.messages.text import (
    MAX_FIELD_TEXT,
    MAX_SECTION_TEXT,
    code,
    confirm,
    escape,
    join_limited,
    mention,
    truncate,
)
from services import humanize
from services.permissions import Action
from services.run_store import RunKind, RunStatus
from services.run_view import RunView

SUBJECT_LIMIT = 100
KIND_TITLES = {RunKind.CODE.value: "Code rollback", RunKind.FULL.value: "Full rollback"}


def kind_title(kind: str) -> str:
    return KIND_TITLES.get(kind, "Rollback")


def rolled_back_to(view: RunView) -> str:
    """What the run brings the environment back to, for one sentence (notices)."""
    backup = code(str(view.plan.get("backup")), 200)
    target = code(str((view.plan.get("code") or {}).get("target", ""))[:7], 12)
    if view.run.kind == RunKind.CODE.value:
        return f"the code of {target}"
    if view.run.kind == RunKind.FULL.value:
        return f"{backup} and the code of {target}"
    return backup


def code_outcome(view: RunView) -> str:
    """What happened to the code, for the incident report."""
    plan = view.plan.get("code")
    pushed = (view.run.result or {}).get("code") or {}
    if not isinstance(plan, dict):
        return "nothing to revert"
    reverted = ", ".join(str(c.get("short_sha")) for c in (plan.get("reverts") or [])[:10])
    branch = code(str(plan.get("branch")), 60)
    if pushed.get("pushed"):
        tip = code(str(pushed.get("new_tip", ""))[:7], 12)
        return f"reverted {escape(reverted)} on {branch}, now at {tip}"
    return f"{escape(reverted)} NOT reverted: nothing was pushed to {branch}"


def _age(authored_at: object, now: datetime) -> str:
    try:
        when = datetime.fromisoformat(str(authored_at))
    except ValueError:
        return "?"
    return humanize.age((now - when).total_seconds()) + " ago"


def commit_line(commit: dict[str, Any], now: datetime) -> str:
    """`abc1234` Subject — Author · 2 h ago (text from the repository: escaped)."""
    subject = escape(truncate(str(commit.get("subject", "")), SUBJECT_LIMIT))
    author = escape(truncate(str(commit.get("author_name", "?")), 60))
    return (
        f"{code(str(commit.get('short_sha', '?')), 12)} {subject} — {author} · "
        f"{_age(commit.get('authored_at'), now)}"
    )


def _after_push(plan: dict[str, Any]) -> str:
    if plan.get("waits_for_version"):
        seconds = plan.get("version_wait_seconds")
        wait = f"{seconds:g} s" if isinstance(seconds, int | float) else "a while"
        return (
            f"waits up to {wait} for {code(str(plan.get('version_url')), 200)} to report the "
            "revert, then checks health"
        )
    return "checks health (no version endpoint configured)"


def _intro(view: RunView, plan: dict[str, Any]) -> str:
    reverts = len(plan.get("reverts") or [])
    commits = f"{reverts} commit" + ("" if reverts == 1 else "s")
    if view.run.kind == RunKind.CODE.value:
        head = (
            f"{mention(view.run.requested_by)} asked to roll back the code of "
            f"*{escape(view.run.environment)}*"
        )
    else:
        head = f"*Code half*, after the database: {escape(str(view.plan.get('code_note', '')))}"
    return (
        f"{head}: revert {commits} by as many revert commits, pushed on top of "
        f"{code(str(plan.get('branch')), 100)} (at {code(str(plan.get('tip', ''))[:7], 12)}) "
        f"of {code(str(plan.get('remote')), 300)}. The push deploys them; never a force push, "
        "never a rewritten history."
    )


def _plan_fields(plan: dict[str, Any]) -> list[str]:
    target = str(plan.get("target", ""))[:7]
    return [
        f"*Branch*\n{code(str(plan.get('branch')), 200)} at {code(str(plan.get('tip'))[:7], 12)}",
        f"*Code goes back to*\n{code(target, 12)} (its tree)",
        f"*After the push*\n{_after_push(plan)}",
    ]


def _commits_text(plan: dict[str, Any], now: datetime) -> str:
    reverts = plan.get("reverts") or []
    lines = [f"*Commits to revert ({len(reverts)}), newest first:*"]
    lines += [f"• {commit_line(c, now)}" for c in reverts]
    messages = [str(m).split("\n", 1)[0] for m in plan.get("messages") or []]
    lines.append("*Revert commits it will push* (each names the run and the requester):")
    lines += [f"• {escape(truncate(m, SUBJECT_LIMIT + 10))}" for m in messages]
    pending = plan.get("pending") or []
    if pending:
        lines.append(f"*Pushed after the deployed commit ({len(pending)}), kept, deploy too:*")
        lines += [f"• {commit_line(c, now)}" for c in pending]
    return join_limited(lines, MAX_SECTION_TEXT)


def code_plan_blocks(view: RunView, now: datetime) -> list[Block]:
    """What the code rollback (or the full rollback's code half) will do."""
    plan = view.plan.get("code")
    if not isinstance(plan, dict):  # a full rollback whose code is where it goes already
        note = escape(str(view.plan.get("code_note") or "nothing to revert"))
        text = f"*Code half*: nothing to revert — {note}."
        return [SectionBlock(block_id=BlockId.CODE_PLAN, text=MarkdownTextObject(text=text))]
    blocks: list[Block] = [
        SectionBlock(
            block_id=BlockId.CODE_PLAN,
            text=MarkdownTextObject(text=truncate(_intro(view, plan), MAX_SECTION_TEXT)),
            fields=[
                MarkdownTextObject(text=truncate(f, MAX_FIELD_TEXT)) for f in _plan_fields(plan)
            ],
        ),
        SectionBlock(
            block_id=BlockId.CODE_COMMITS, text=MarkdownTextObject(text=_commits_text(plan, now))
        ),
    ]
    return blocks


def full_notes(view: RunView) -> list[str]:
    """A full rollback's warnings and its health rule, for the notes block."""
    notes = []
    note = str(view.plan.get("code_note") or "")
    if "⚠️" in note:
        notes.append(escape(note))
    if view.plan.get("health_note"):
        notes.append(f"🩺 {escape(str(view.plan['health_note']))}")
    return notes


def halves_section(view: RunView) -> SectionBlock | None:
    """After a full rollback: where each half stands, one line each."""
    halves = (view.run.result or {}).get("halves")
    if not isinstance(halves, dict):
        return None
    lines = [
        f"*Database half:* {escape(str(halves.get('database', '?')))}",
        f"*Code half:* {escape(str(halves.get('code', '?')))}",
    ]
    retry = (view.run.result or {}).get("code_retry")
    if isinstance(retry, dict):
        outcome = "succeeded" if retry.get("ok") else "FAILED (see the thread)"
        lines.append(f"🔁 Code half retried by run `{escape(str(retry.get('run')))}`: {outcome}")
    return SectionBlock(
        block_id=BlockId.HALVES, text=MarkdownTextObject(text=join_limited(lines, 3000))
    )


def follow_up_block(view: RunView) -> ActionsBlock | None:
    """Retry code rollback / Undo database rollback, while they are still to be done."""
    result = view.run.result or {}
    offered = result.get("follow_ups") or []
    retried = (result.get("code_retry") or {}).get("ok")
    if view.run.status is not RunStatus.FAILED or not offered or retried or result.get("undone_by"):
        return None
    env = escape(truncate(view.run.environment, 60))
    branch = code(str((view.plan.get("code") or {}).get("branch")), 60)
    buttons = []
    if Action.RETRY_CODE.value in offered:
        buttons.append(
            ButtonElement(
                action_id=ActionId.RETRY_CODE,
                text="Retry code rollback",
                value=view.run.id,
                style="primary",
                confirm=confirm(
                    "Retry the code rollback?",
                    f"This pushes the approved revert to {branch} again (refused, nothing "
                    f"pushed, if the branch moved since); the database of {env} stays as it is.",
                    "Retry",
                ),
            )
        )
    if Action.UNDO_DATABASE.value in offered:
        buttons.append(
            ButtonElement(
                action_id=ActionId.UNDO_DATABASE,
                text="Undo database rollback",
                value=view.run.id,
                style="danger",
                confirm=confirm(
                    "Undo the database rollback?",
                    f"This puts the pre-rollback data of {env} back (the old database swapped "
                    "back, or the safety backup restored); the code stays as it is.",
                    "Undo",
                ),
            )
        )
    return ActionsBlock(block_id=BlockId.FOLLOW_UPS, elements=buttons)
