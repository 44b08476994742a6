"""Every action_id and block_id the bot puts in messages, in one place."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "rollback.approve"
    REJECT = "rollback.reject"
    CANCEL = "rollback.cancel"
    CHECKLIST = "rollback.checklist"
    UNDO = "rollback.undo"
    RESUME = "rollback.resume"
    ABORT = "rollback.abort"
    # After a full rollback whose code half failed once its database half was done.
    RETRY_CODE = "rollback.retry_code"
    UNDO_DATABASE = "rollback.undo_database"


class BlockId(StrEnum):
    HEADER = "rollback.header"
    PLAN = "rollback.plan"
    CONTAINERS = "rollback.containers"
    NOTES = "rollback.notes"
    APPROVALS = "rollback.approvals"
    STEPS = "rollback.steps"
    HEALTH = "rollback.health"
    SUMMARY = "rollback.summary"
    CHECKLIST = "rollback.checklist"
    CHECKLIST_TICKS = "rollback.checklist.ticks"
    DECISION = "rollback.decision"
    DATA_LOSS = "rollback.data_loss"
    UNDO = "rollback.undo"
    RECOVERY = "rollback.recovery"
    CODE_PLAN = "rollback.code_plan"
    CODE_COMMITS = "rollback.code_commits"
    HALVES = "rollback.halves"
    FOLLOW_UPS = "rollback.follow_ups"
    MONITORING = "rollback.monitoring"
    FOOTER = "rollback.footer"


def button_value(run_id: str, plan_hash: str) -> str:
    """A decision button carries the run and the plan the message showed."""
    return f"{run_id}:{plan_hash}"


def parse_button_value(value: str) -> tuple[str, str | None]:
    run_id, _, plan_hash = value.partition(":")
    return run_id, plan_hash or None
