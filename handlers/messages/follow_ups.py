"""Thread replies of what a full rollback offers after its code half failed: Retry code
rollback, Undo database rollback (who asked, who started it, how it ended)."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, escape, escape_lines, mention, truncate
from services.permissions import Action
from services.workflow import RollbackResult

WHAT = {
    Action.RETRY_CODE: "retrying the code rollback: the approved revert is pushed again",
    Action.UNDO_DATABASE: "undoing the database rollback: the pre-rollback data is put back",
}
LABEL = {Action.RETRY_CODE: "Code rollback retried", Action.UNDO_DATABASE: "Database undone"}


def _section(text: str) -> list[Block]:
    return [SectionBlock(text=MarkdownTextObject(text=truncate(text, MAX_SECTION_TEXT)))]


def follow_up_asked(
    action: Action, user: str, approvals: int, required: int
) -> tuple[list[Block], str]:
    button = "Retry code rollback" if action is Action.RETRY_CODE else "Undo database rollback"
    text = (
        f"{mention(user)} approved {WHAT[action].split(':')[0]} ({approvals} of {required} "
        f"approvals): another approver confirms with *{button}*."
    )
    return _section(text), "Approval recorded"


def follow_up_started(action: Action, user: str) -> tuple[list[Block], str]:
    return _section(f"🔁 {mention(user)} is {WHAT[action]}."), LABEL[action]


def follow_up_finished(action: Action, result: RollbackResult) -> tuple[list[Block], str]:
    head = f"✓ *{LABEL[action]}*" if result.ok else f"✗ *{LABEL[action]}: FAILED*"
    lines = [f"{head}: {escape(result.environment_state)}"]
    if result.error:
        lines.append(f"Error: {escape_lines(result.error)}")
    lines.append(f"Run `{escape(result.run_id)}`")
    return _section("\n".join(lines)), LABEL[action] + ("" if result.ok else " (failed)")


def follow_up_not_done(action: Action, problem: str) -> tuple[list[Block], str]:
    return _section(f"✗ *Not done*: {escape(truncate(problem, 2000))}"), "Not done"
