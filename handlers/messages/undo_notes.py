"""Thread replies of an undo: who started it, and where the environment stands after."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, escape, escape_lines, mention, truncate
from services.workflow import RollbackResult


def undo_started(user: str) -> tuple[list[Block], str]:
    text = f"↩️ {mention(user)} is undoing this rollback: the old database is swapped back in."
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=text))]
    return blocks, "Undoing the rollback"


def undo_asked(user: str, approvals: int, required: int) -> tuple[list[Block], str]:
    text = (
        f"↩️ {mention(user)} approved undoing this rollback ({approvals} of {required} "
        "approvals): another approver confirms with *Undo rollback*."
    )
    return [SectionBlock(text=MarkdownTextObject(text=text))], "Undo asked for"


def undo_finished(result: RollbackResult) -> tuple[list[Block], str]:
    head = "✓ *Undone*" if result.ok else "✗ *Undo FAILED*"
    lines = [f"{head}: {escape(result.environment_state)}"]
    if result.error:
        lines.append(f"Error: {escape_lines(result.error)}")
    if result.downtime_seconds is not None:
        lines.append(f"Downtime {result.downtime_seconds:.1f} s (run `{escape(result.run_id)}`)")
    text = truncate("\n".join(lines), MAX_SECTION_TEXT)
    return [SectionBlock(text=MarkdownTextObject(text=text))], (
        "Undone" if result.ok else "Undo failed"
    )


def undo_not_done(problem: str) -> tuple[list[Block], str]:
    text = f"✗ *Undo not done*: {escape(truncate(problem, 2000))}"
    return [SectionBlock(text=MarkdownTextObject(text=text))], "Undo not done"
