"""A thread reply with the details of a step that failed (the main message stays short)."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.messages.text import MAX_SECTION_TEXT, escape, escape_lines, truncate
from services.events import StepEvent

MAX_DETAIL_SECTIONS = 5  # 15 000 characters of error at most


def step_failure_text(event: StepEvent) -> str:
    return truncate(f"✗ {event.label} failed: {event.message}", 300)


def step_failure(event: StepEvent) -> list[Block]:
    timing = f" after {event.seconds:.1f} s" if event.seconds is not None else ""
    head = f"✗ *{escape(event.label)}* failed{timing}:"
    detail = escape_lines(event.message or "no detail").replace("```", "'''")
    room = MAX_SECTION_TEXT - 6
    chunks = [detail[i : i + room] for i in range(0, len(detail), room)] or [""]
    if len(chunks) > MAX_DETAIL_SECTIONS:
        chunks = chunks[:MAX_DETAIL_SECTIONS]
        chunks[-1] = truncate(chunks[-1] + "…", room)
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=head))]
    blocks.extend(SectionBlock(text=MarkdownTextObject(text=f"```{c}```")) for c in chunks)
    return blocks
