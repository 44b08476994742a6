"""What the person who clicked Approve / Reject / Cancel is told (ephemeral)."""

from __future__ import annotations

from handlers.messages.text import escape
from services.approvals import Decision, DecisionOutcome
from services.run_store import RunRecord


def decision_reply(outcome: DecisionOutcome) -> str:
    if outcome.note:
        return f"⚠️ {outcome.note}"
    if outcome.decision is Decision.REJECT:
        return "You rejected the rollback; nothing was changed."
    if outcome.decision is Decision.CANCEL:
        return "You cancelled the request; nothing was changed."
    if outcome.start is not None:
        return "✅ Approved: the rollback starts now. Follow it in the channel message."
    if outcome.approvals >= outcome.required:
        return "Your approval is recorded; the rollback is already under way."
    return (
        f"Your approval is recorded ({outcome.approvals} of {outcome.required}); "
        "waiting for more approvals."
    )


def cancel_reply(run: RunRecord) -> str:
    return (
        f"You cancelled the rollback of *{escape(run.environment)}* (run `{escape(run.id)}`); "
        "nothing was changed."
    )
