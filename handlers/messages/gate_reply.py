"""What the person who clicked Undo (or Resume, Abort) is told (ephemeral)."""

from __future__ import annotations

from services.approvals import ActionGate
from services.permissions import Action

WORDS = {Action.RETRY_CODE: "code rollback retry", Action.UNDO_DATABASE: "database undo"}


def gate_reply(gate: ActionGate) -> str:
    verb = WORDS.get(gate.action, gate.action.value)
    if gate.go:
        return f"✅ Approved: the {verb} starts now. Follow it in the thread."
    if not gate.counted:
        return f"You have already approved the {verb} ({gate.approvals} of {gate.required})."
    if gate.approvals >= max(gate.required, 1):
        return f"Your approval is recorded; the {verb} is already under way."
    return (
        f"Your approval of the {verb} is recorded ({gate.approvals} of {gate.required}); "
        "it starts when another approver clicks too."
    )
