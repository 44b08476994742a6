"""What the person who clicked Approve / Reject / Cancel is told (ephemeral)."""

from __future__ import annotations

from services.approvals import Decision, DecisionOutcome


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
