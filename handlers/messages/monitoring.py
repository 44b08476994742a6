"""The watch after a rollback: its line in the run's message, and its thread replies."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.ids import BlockId
from handlers.messages.log_excerpt import log_excerpt_blocks
from handlers.messages.text import MAX_SECTION_TEXT, escape, truncate
from services import humanize
from services.monitor_events import MonitoringState, MonitorKind, at_text, failed_text
from services.monitoring import MonitorEvent


def monitoring_line(state: MonitoringState) -> str:
    """Where the watch stands: "watching until 12:10 UTC", degraded, or its report line."""
    if state.ended_at is not None:
        return f"👀 *Monitoring:* {escape(state.line or 'ended')}"
    until = at_text(state.until)
    every = f"health every {humanize.duration(state.interval_seconds)}"
    degraded = state.degraded
    if degraded is not None:
        return (
            f"⚠️ *Monitoring:* health DEGRADED since {at_text(degraded.began)} "
            f"({escape(failed_text(degraded.failed))}); watching until {until}"
        )
    checks = f"{state.checks} check{'s' if state.checks != 1 else ''}"
    return f"👀 *Monitoring:* watching until {until} ({every}); healthy so far ({checks})"


def monitoring_section(state: MonitoringState | None) -> SectionBlock | None:
    if state is None:
        return None
    return SectionBlock(
        block_id=BlockId.MONITORING,
        text=MarkdownTextObject(text=truncate(monitoring_line(state), MAX_SECTION_TEXT)),
    )


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=truncate(text, MAX_SECTION_TEXT)))


def monitoring_reply(event: MonitorEvent) -> tuple[list[Block], str] | None:
    """The thread reply for a watch event (None: the message says enough)."""
    watch = event.watch
    env = escape(watch.environment)
    until = at_text(watch.until)
    if event.kind is MonitorKind.DEGRADED:
        failed = [f"• {escape(truncate(f'{f.name}: {f.detail}', 300))}" for f in event.failed]
        head = f"⚠️ *Health DEGRADED* on *{env}* after the rollback (watching until {until}):"
        blocks: list[Block] = [_section("\n".join([head, *failed]))]
        if event.excerpts:
            blocks += log_excerpt_blocks(
                event.excerpts, title="📜 What the failing containers wrote last:"
            )
        return blocks, f"Health DEGRADED on {watch.environment}"
    if event.kind is MonitorKind.RECOVERED:
        seconds = humanize.duration(event.degraded_seconds or 0.0)
        text = f"✅ *{env}* is healthy again after {seconds} (watching until {until})."
        return [_section(text)], f"{watch.environment} healthy again"
    if event.kind is MonitorKind.RESUMED:
        text = (
            f"👀 The bot process watching *{env}* stopped; another one took the watch over "
            f"(until {until})."
        )
        return [_section(text)], text
    if event.kind is MonitorKind.ENDED and event.line:
        line = escape(event.line)  # the fallback text is mrkdwn too: no mention from a probe
        return [_section(f"🏁 {line}")], line
    return None
