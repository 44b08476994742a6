"""`/rollback help` and the answer to anything the bot does not understand."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import code, escape

USAGE_LINES = (
    "`/rollback <environment> [backup]` — plan a database rollback (newest backup by "
    "default) and ask for approval",
    "`/rollback code <environment> [commit]` — revert the last deployed change (or bring the "
    "code back to a commit) with revert commits, pushed to the deployed branch",
    "`/rollback full <environment> [backup [commit]]` — database first, then code: by default "
    "the code goes back to the commit recorded with the backup",
    "`/rollback backups <environment>` — the environment's backups, newest first",
    "`/rollback status [environment]` — rollbacks in progress or awaiting approval",
    "`/rollback history <environment>` — the last rollbacks",
    "`/rollback cancel <environment>` — cancel its rollback that has not started yet",
    "`/rollback help` — this help",
)


def usage_text(problem: str | None = None) -> str:
    return (f"{escape(problem)} " if problem else "") + (
        "Usage: /rollback <environment> [backup] | code <environment> [commit] | "
        "full <environment> [backup [commit]]"
    )


def usage_message(problem: str | None = None, environments: list[str] | None = None) -> list[Block]:
    text = "*How to use `/rollback`*\n" + "\n".join(f"• {line}" for line in USAGE_LINES)
    if problem:
        text = f"{escape(problem)}\n\n{text}"
    if environments:
        text += "\nEnvironments: " + ", ".join(code(e, 80) for e in environments[:30])
    return [SectionBlock(text=MarkdownTextObject(text=text[:3000]))]
