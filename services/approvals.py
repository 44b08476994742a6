"""The approval gate between a plan and its execution.

Request, approve, reject, cancel, expire and escalate under the environment's policy. An
approval is bound to the plan it approved (environment, backup, the backup's checksum,
strategy): when the plan changes, earlier approvals stop counting. Every state change is a
compare-and-set in the run store, so double clicks and retried requests change nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from services import approved_copy
from services.bound_plan import BoundPlan, bind_plan, describe_change, plan_hash
from services.bundle import Services
from services.code_rollback import (
    CodeRollbackPlan,
    describe_code_change,
    git_target,
    plan_code,
)
from services.environments import ApprovalPolicy, Contacts
from services.errors import ApprovalError, RollbackError, RunConflict
from services.full_rollback import FullRollbackPlan, plan_full
from services.permissions import PERMISSIONS, Action, Actor, Directory, authorize
from services.run_store import RunKind, RunRecord, RunStatus

# Directory: the chat side implements it; it lives with the permission table. The binding
# of a database plan lives in services/bound_plan.py.
__all__ = ["BoundPlan", "Directory", "bind_plan", "describe_change", "plan_hash"]


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"


def expires_at(run: RunRecord, policy: ApprovalPolicy) -> datetime:
    return run.requested_at + timedelta(minutes=policy.expiry_minutes)


def escalates_at(run: RunRecord, policy: ApprovalPolicy) -> datetime | None:
    if policy.escalate_after_minutes is None:
        return None
    return run.requested_at + timedelta(minutes=policy.escalate_after_minutes)


@dataclass(frozen=True)
class RequestOutcome:
    run: RunRecord
    plan: Bound
    approved: bool  # the policy needs no approval: the caller starts it now


async def request_rollback(
    services: Services,
    directory: Directory,
    *,
    environment: str,
    backup: str | None,
    requested_by: str,
    kind: RunKind = RunKind.DATABASE,
    commit: str | None = None,
) -> RequestOutcome:
    """Plan (read-only) and record the run awaiting approval; one active run per environment."""
    await authorize(
        services,
        directory,
        action=Action.REQUEST,
        actor=Actor(requested_by),
        environment=environment,
    )
    active = await services.store.active_run(environment)
    if active is not None:  # cheap, before the pre-flight; the database still decides
        raise RunConflict(environment, active.id, active.requested_by)
    bound = await bind_request(
        services, kind=kind, environment=environment, backup=backup, commit=commit
    )
    target = services.environment(environment)
    needs_approval = target.approval.required_approvals > 0
    run = await services.store.create_run(
        environment=target.name,
        kind=kind.value,
        requested_by=requested_by,
        status=RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.APPROVED,
        plan=bound.summary(),
        **bound.columns(),
    )
    return RequestOutcome(run, bound, approved=not needs_approval)


# What approvers approve, per kind of run: each has a hash, a summary and its run columns.
Bound = BoundPlan | CodeRollbackPlan | FullRollbackPlan


async def bind_request(
    services: Services,
    *,
    kind: RunKind,
    environment: str,
    backup: str | None,
    commit: str | None,
    own_run_id: str | None = None,
    known: dict[str, Any] | None = None,
) -> Bound:
    """The plan of a request of this kind, bound to what it changes (see bound_plan)."""
    if kind is RunKind.CODE:
        return await plan_code(services, environment, commit, own_run_id=own_run_id)
    if kind is not RunKind.FULL:
        return await bind_plan(services, environment, backup, own_run_id=own_run_id, known=known)
    git_target(services.environment(environment))  # refused before the database's pre-flight
    database = await bind_plan(services, environment, backup, own_run_id=own_run_id, known=known)
    try:
        return await plan_full(services, database, commit, own_run_id=own_run_id)
    except BaseException:
        if database.sha256 != (known or {}).get("backup_sha256"):  # a copy of its own
            await approved_copy.discard_copy(services, database.plan.environment, database.sha256)
        raise


def describe_bound_change(before: dict[str, Any], after: Bound) -> str:
    """Why a plan is no longer the one approved, in one sentence."""
    if isinstance(after, BoundPlan):
        return describe_change(before, after)
    if isinstance(after, CodeRollbackPlan):
        return describe_code_change(before.get("code") or {}, after.code)
    reasons = []
    if before.get("database_plan_hash") != after.database.hash:
        reasons.append(describe_change(before, after.database))
    code = before.get("code") or {}
    if after.code is None:
        reasons.append(after.code_note)
    elif code.get("fingerprint") != after.code.code.fingerprint:
        reasons.append(describe_code_change(code, after.code.code))
    return "; ".join(reasons) or "the plan changed"


_CLOSED = {
    RunStatus.APPROVED: "This rollback is already approved and under way.",
    RunStatus.RUNNING: "This rollback is already approved and under way.",
    RunStatus.SUCCEEDED: "This rollback has finished (it succeeded).",
    RunStatus.FAILED: "This rollback has finished (it failed).",
    RunStatus.REJECTED: "This rollback was rejected.",
    RunStatus.CANCELLED: "This rollback was cancelled.",
    RunStatus.EXPIRED: "This request expired without enough approvals; request a new rollback.",
    RunStatus.INTERRUPTED: "This rollback was interrupted and recovered; an approver may "
    "Resume it or Abort and restore.",
    RunStatus.ABORTED: "This rollback was interrupted, then aborted.",
}


def _ensure_open(run: RunRecord) -> None:
    if run.status is not RunStatus.AWAITING_APPROVAL:
        raise ApprovalError(run.id, _CLOSED.get(run.status, f"This rollback is {run.status}."))


class RequestExpired(ApprovalError):
    """A click on a request past its approval time; `expired_now`: this click expired it."""

    def __init__(self, run_id: str, *, expired_now: bool) -> None:
        self.expired_now = expired_now
        super().__init__(run_id, _CLOSED[RunStatus.EXPIRED])


# Not executing yet: a run approved but still waiting for its preparation may be cancelled.
CANCELLABLE = (RunStatus.AWAITING_APPROVAL, RunStatus.APPROVED)


def _required(services: Services, run: RunRecord) -> int:
    return services.environment(run.environment).approval.required_approvals


async def _cancel(services: Services, run: RunRecord, user: str, reason: str = "") -> RunRecord:
    if not await services.store.update(run.id, status=RunStatus.CANCELLED, expect=CANCELLABLE):
        current = await services.store.get(run.id)
        if current.status is RunStatus.RUNNING:
            raise ApprovalError(run.id, "This rollback is executing; it is too late to cancel.")
        _ensure_open(current)
        raise ApprovalError(run.id, "This rollback changed meanwhile; nothing was done.")
    await services.store.append_event(
        run.id, "cancelled", actor=user, detail={"reason": reason} if reason else None
    )
    await _discard_copy(services, run)
    return run


async def _discard_copy(services: Services, run: RunRecord) -> None:
    """A run that will not execute leaves no copy of its approved bytes behind."""
    environment = services.environments.get(run.environment)
    if environment is not None:
        await approved_copy.discard_copy(services, environment, run.backup_sha256)


async def cancellable_run(services: Services, environment: str) -> RunRecord:
    """The environment's active run, which a cancel would be about."""
    name = services.environment(environment).name
    run = await services.store.active_run(name)
    if run is None:
        raise RollbackError(f"No rollback of {name} is waiting: nothing to cancel.")
    return run


async def cancel_run(
    services: Services, directory: Directory, *, environment: str, actor: Actor
) -> RunRecord:
    """Cancel the environment's run that is not executing yet; returns it as it was."""
    run = await cancellable_run(services, environment)
    await authorize(services, directory, action=Action.CANCEL, actor=actor, run=run)
    return await _cancel(services, run, actor.id)


async def withdraw(services: Services, run_id: str, *, reason: str) -> RunRecord:
    """The bot cancels a run it cannot go on with (e.g. its message could not be posted)."""
    return await _cancel(services, await services.store.get(run_id), "bot", reason)


@dataclass(frozen=True)
class DecisionOutcome:
    run_id: str
    decision: Decision
    counted: bool  # the click changed the run (an approval recorded, a rejection, ...)
    approvals: int  # approvals of the current plan
    required: int
    note: str | None = None  # for the person who clicked: why their click did not count
    start: Bound | None = field(default=None)  # set for the one caller that executes it
    previous: RunStatus | None = None  # the run's status before a cancel


async def decide(
    services: Services,
    directory: Directory,
    *,
    run_id: str,
    user: str,
    decision: Decision,
    seen_plan_hash: str | None = None,
    now: datetime | None = None,
) -> DecisionOutcome:
    """Apply one click. `seen_plan_hash`: the plan the clicked message showed."""
    run = await services.store.get(run_id)
    await authorize(services, directory, action=Action(decision.value), actor=Actor(user), run=run)
    if decision is Decision.CANCEL:  # also once approved, until it starts executing
        await _cancel(services, run, user)
        required = _required(services, run)
        return DecisionOutcome(run.id, decision, True, 0, required, previous=run.status)
    _ensure_open(run)
    policy = services.environment(run.environment).approval
    required = policy.required_approvals
    if (now or datetime.now(UTC)) >= expires_at(run, policy):
        raise RequestExpired(run.id, expired_now=await expire(services, run))

    if decision is Decision.REJECT:
        await services.store.add_approval(
            run.id, user_id=user, decision="reject", plan_hash=run.plan.get("plan_hash", "")
        )
        return await _close(services, run, user, RunStatus.REJECTED, decision, required)

    # Approve: re-check the plan; an approval is for exactly the plan it saw.
    bound = await bind_request(
        services,
        kind=RunKind(run.kind),
        environment=run.environment,
        backup=run.plan.get("requested_backup"),
        commit=run.plan.get("requested_commit"),
        own_run_id=run.id,
        known=run.plan,
    )
    recorded_hash = run.plan.get("plan_hash")
    if bound.hash != recorded_hash:
        why = describe_bound_change(run.plan, bound)
        if await services.store.replace_plan(run.id, plan=bound.summary(), **bound.columns()):
            await services.store.append_event(
                run.id,
                "plan_changed",
                actor=user,
                detail={"from": recorded_hash, "to": bound.hash, "why": why},
            )
        return DecisionOutcome(
            run.id,
            decision,
            counted=False,
            approvals=0,
            required=required,
            note=f"The plan changed ({why}); approvals given before no longer count. "
            "Review the updated plan and approve again.",
        )
    if seen_plan_hash is not None and seen_plan_hash != bound.hash:
        return DecisionOutcome(
            run.id,
            decision,
            counted=False,
            approvals=await _count(services, run.id, bound.hash),
            required=required,
            note="You clicked on an earlier version of the plan; "
            "review the updated plan and approve again.",
        )
    if not await services.store.add_approval(
        run.id, user_id=user, decision="approve", plan_hash=bound.hash
    ):
        raise ApprovalError(run.id, "You have already approved this plan.")
    count = await _count(services, run.id, bound.hash)
    start = None
    if await services.store.grant(run.id, plan_hash=bound.hash, required=required):
        await services.store.append_event(
            run.id, "approval_granted", actor=user, detail={"plan_hash": bound.hash}
        )
        start = bound
    return DecisionOutcome(run.id, decision, True, count, required, start=start)


async def _count(services: Services, run_id: str, current_hash: str) -> int:
    return sum(
        1
        for a in await services.store.approvals(run_id)
        if a.decision == "approve" and a.plan_hash == current_hash
    )


async def _close(
    services: Services,
    run: RunRecord,
    user: str,
    status: RunStatus,
    decision: Decision,
    required: int,
) -> DecisionOutcome:
    if not await services.store.update(
        run.id, status=status, expect=(RunStatus.AWAITING_APPROVAL,)
    ):
        _ensure_open(await services.store.get(run.id))
        raise ApprovalError(run.id, "This rollback changed meanwhile; nothing was done.")
    await services.store.append_event(run.id, status.value, actor=user)
    await _discard_copy(services, run)
    return DecisionOutcome(run.id, decision, True, 0, required)


async def expire(services: Services, run: RunRecord) -> bool:
    """Mark a run whose approval time has passed as expired (once)."""
    if await services.store.update(
        run.id, status=RunStatus.EXPIRED, expect=(RunStatus.AWAITING_APPROVAL,)
    ):
        await services.store.append_event(run.id, "expired")
        await _discard_copy(services, run)
        return True
    return False


@dataclass(frozen=True)
class Escalation:
    run: RunRecord
    contacts: Contacts


@dataclass(frozen=True)
class SweepResult:
    expired: tuple[RunRecord, ...]
    escalated: tuple[Escalation, ...]


async def sweep(services: Services, *, now: datetime | None = None) -> SweepResult:
    """Expire and escalate the requests waiting for approval; each happens once, whoever sweeps."""
    now = now or datetime.now(UTC)
    expired: list[RunRecord] = []
    escalated: list[Escalation] = []
    for run in await services.store.active_runs():
        environment = services.environments.get(run.environment)
        if run.status is not RunStatus.AWAITING_APPROVAL or environment is None:
            continue
        policy = environment.approval
        if now >= expires_at(run, policy):
            if await expire(services, run):
                expired.append(await services.store.get(run.id))
            continue
        due = escalates_at(run, policy)
        if (
            due is not None
            and now >= due
            and run.escalated_at is None
            and await services.store.mark_escalated(run.id)
        ):
            await services.store.append_event(run.id, "escalated")
            escalated.append(Escalation(await services.store.get(run.id), environment.contacts))
    # Copies of the approved bytes that no active run refers to (finished, crashed).
    await approved_copy.sweep_copies(services)
    return SweepResult(tuple(expired), tuple(escalated))


# -------------------------------------------------- actions gated like the rollback itself


@dataclass(frozen=True)
class ActionGate:
    """Where a gated action (undo, resume, abort) stands after one person's click."""

    run_id: str
    action: Action
    counted: bool  # this person's approval was recorded now (False: they had approved)
    approvals: int
    required: int
    go: bool  # exactly one caller gets True, and performs the action


def action_subject(action: Action, run_id: str) -> str:
    """What the approvals of a gated action are bound to (the approvals' plan_hash)."""
    return f"{action.value}:{run_id}"


async def approve_action(
    services: Services, directory: Directory, *, run_id: str, action: Action, user: str
) -> ActionGate:
    """Record `user`'s approval of `action` on the run; go once the policy's approvals are in.

    The same approvers and count as the rollback (`required_approvals`, the run's requester
    refused unless self-approval is allowed); zero required: the first allowed click goes."""
    if not PERMISSIONS[action].gated:
        raise ValueError(f"{action} is not a gated action")
    run = await services.store.get(run_id)
    await authorize(services, directory, action=action, actor=Actor(user), run=run)
    required = _required(services, run)
    subject = action_subject(action, run.id)
    counted = await services.store.add_approval(
        run.id, user_id=user, decision="approve", plan_hash=subject
    )
    count = sum(
        1
        for a in await services.store.approvals(run.id)
        if a.decision == "approve" and a.plan_hash == subject
    )
    go = await services.store.grant_action(
        run.id, subject=subject, granted_by=user, required=max(required, 1)
    )
    if go:
        await services.store.append_event(
            run.id, f"{action.value}_granted", actor=user, detail={"approvals": count}
        )
    return ActionGate(run.id, action, counted, count, required, go)


async def release_action(services: Services, *, run_id: str, action: Action) -> None:
    """After a gated action that failed: its approvals are spent, it may be asked again."""
    await services.store.release_action(run_id, subject=action_subject(action, run_id))
    await services.store.append_event(run_id, "approvals_reset", detail={"action": action.value})
