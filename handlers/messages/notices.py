"""What the emergency contacts are told (a direct message, or a user-group mention)."""

from __future__ import annotations

from handlers.messages.code_plan import rolled_back_to
from handlers.messages.run_message import STATUS_LABELS
from handlers.messages.text import escape, mention
from services import humanize
from services.monitor_events import at_text, failed_text
from services.notifications import Notice
from services.run_view import RunView


def notice_text(view: RunView, notice: Notice, *, link: str | None) -> str:
    run = view.run
    env = f"*{escape(run.environment)}*"
    backup = rolled_back_to(view)
    if notice is Notice.REQUESTED:
        text = f"🔁 {mention(run.requested_by)} asked to roll back {env} to {backup}."
    elif notice is Notice.ESCALATED:
        text = (
            f"📣 Escalation: the rollback of {env} to {backup}, requested by "
            f"{mention(run.requested_by)}, still needs approval."
        )
    elif notice is Notice.RECOVERED:
        state = str((run.result or {}).get("environment_state") or "")[:500]
        text = (
            f"🚑 The rollback of {env} to {backup} was interrupted (the bot process running it "
            f"stopped) and has been recovered: {escape(state)}. An approver chooses *Resume* "
            "or *Abort and restore*."
        )
    elif notice in (Notice.DEGRADED, Notice.HEALTHY_AGAIN):
        text = health_notice(view, notice)
    elif notice is Notice.EXPIRED:
        text = (
            f"⌛ The rollback of {env} to {backup}, requested by {mention(run.requested_by)}, "
            "expired without enough approvals; nothing was changed. Request it again if it "
            "is still needed."
        )
    else:
        state = (run.result or {}).get("environment_state") or ""
        text = f"🏁 The rollback of {env} ended: *{STATUS_LABELS[run.status]}*."
        if state:
            sentence = str(state)[:500]
            text += f" {escape(sentence)}" + ("" if sentence.endswith((".", "!", "?")) else ".")
    if link:
        text += f" <{link}|Open the rollback thread>"
    return text


def health_notice(view: RunView, notice: Notice) -> str:
    """Health degraded (or recovered) while the environment is watched after its rollback."""
    env = f"*{escape(view.run.environment)}*"
    state = view.monitoring
    episode = state.episodes[-1] if state is not None and state.episodes else None
    until = f"watching until {at_text(state.until)}" if state is not None else "watching"
    if notice is Notice.HEALTHY_AGAIN:
        lasted = episode.seconds(episode.ended) if episode and episode.ended else None
        after = f" after {humanize.duration(lasted)}" if lasted is not None else ""
        return f"✅ {env} is healthy again{after} ({until})."
    failed = escape(failed_text(episode.failed)) if episode else "health checks fail"
    return (
        f"⚠️ {env} is DEGRADED after its rollback: {failed}. The bot is {until}; the "
        "failing containers' last log lines are in the thread."
    )
