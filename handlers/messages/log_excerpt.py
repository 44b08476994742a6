"""The failing containers' last log lines, as a thread reply: one code block per container.

The lines arrive scrubbed and with control characters escaped (services/log_excerpts.py);
here they are made safe for mrkdwn: `&`, `<`, `>` escaped (no mention, no link), every
backtick replaced (a ``` in a log line must not close the block and let the rest render as
markup), and cut to Block Kit's limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, escape, escape_lines, truncate
from services.log_excerpts import LogExcerpt

FENCE = "```"
SECTIONS_PER_CONTAINER = 3
_ROOM = MAX_SECTION_TEXT - 2 * len(FENCE)


def code_block_text(text: str) -> str:
    """Log text for the inside of a code block: escaped, no backtick left."""
    return escape_lines(text).replace("`", "'")


def _chunks(text: str) -> list[str]:
    """Whole lines per chunk where they fit, at most SECTIONS_PER_CONTAINER chunks; the
    oldest lines go first when there is no room (the newest explain the failure)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in reversed(text.split("\n")):
        line = truncate(line, _ROOM)
        if current and size + len(line) + 1 > _ROOM:
            chunks.append("\n".join(reversed(current)))
            current, size = [], 0
            if len(chunks) == SECTIONS_PER_CONTAINER:
                break
        current.append(line)
        size += len(line) + 1
    else:
        if current:
            chunks.append("\n".join(reversed(current)))
    return list(reversed(chunks))


def excerpt_text(excerpts: Sequence[LogExcerpt]) -> str:
    names = ", ".join(e.container for e in excerpts)
    return truncate(f"Last log lines of {names}", 300)


def log_excerpt_blocks(excerpts: Sequence[LogExcerpt], *, title: str) -> list[Block]:
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=truncate(title, 300)))]
    for excerpt in excerpts:
        name = f"*{escape(truncate(excerpt.container, 200))}*"
        if excerpt.error:
            note = f"{name}: its logs could not be read ({escape(truncate(excerpt.error, 500))})"
            blocks.append(SectionBlock(text=MarkdownTextObject(text=note)))
            continue
        if not excerpt.text:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=f"{name}: wrote nothing")))
            continue
        chunks = _chunks(code_block_text(excerpt.text))
        shown = sum(c.count("\n") + 1 for c in chunks)
        total = excerpt.text.count("\n") + 1 + excerpt.lines_left_out
        left_out = total - shown
        head = f"{name} — its last {shown} line{'s' if shown != 1 else ''}" + (
            f" ({left_out} older left out to stay short)" if left_out > 0 else ""
        )
        blocks.append(SectionBlock(text=MarkdownTextObject(text=head)))
        blocks.extend(
            SectionBlock(text=MarkdownTextObject(text=f"{FENCE}{chunk}{FENCE}")) for chunk in chunks
        )
    return blocks
