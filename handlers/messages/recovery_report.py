"""The thread reply when a run was interrupted and recovered by another bot process."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, escape, join_limited
from services.run_store import RunRecord


def recovery_report(run: RunRecord) -> tuple[list[Block], str]:
    recovery = (run.result or {}).get("recovery") or {}
    seconds = recovery.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    lines = [
        f"🚑 *Recovered{took}*: the bot process running this rollback stopped during "
        f"{escape(str(recovery.get('interrupted_at') or 'its start'))}.",
        f"*Now:* {escape(str(recovery.get('environment_state') or '-'))}",
    ]
    lines += [f"• {escape(str(a))}" for a in recovery.get("actions") or []]
    lines += [f"• ⚠️ {escape(str(p))}" for p in recovery.get("problems") or []]
    lines.append("An approver chooses *Resume* or *Abort and restore* on the message above.")
    text = join_limited(lines, MAX_SECTION_TEXT)
    return [SectionBlock(text=MarkdownTextObject(text=text))], "Rollback interrupted and recovered"
