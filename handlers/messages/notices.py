"""What the emergency contacts are told (a direct message, or a user-group mention)."""

from __future__ import annotations

from handlers.messages.code_plan import rolled_back_to
from handlers.messages.run_message import STATUS_LABELS
from handlers.messages.text import escape, mention
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
