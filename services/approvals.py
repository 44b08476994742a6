"""The approval gate between a plan and its execution.

Request, approve, reject, cancel, expire and escalate under the environment's policy. An
approval is bound to the plan it approved (environment, backup, the backup's checksum,
strategy): when the plan changes, earlier approvals stop counting. Every state change is a
compare-and-set in the run store, so double clicks and retried requests change nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from services import approved_copy
from services.bundle import Services
from services.environments import ApprovalPolicy, Contacts
from services.errors import ApprovalError, PermissionDenied, RunConflict
from services.run_store import RunRecord, RunStatus
from services.workflow import RollbackPlan, plan_rollback


class Directory(Protocol):
    """Who is in a user group (S…); implemented by the chat side, cached briefly."""

    async def usergroup_members(self, usergroup: str) -> frozenset[str]: ...


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"


def plan_hash(environment: str, backup: str, sha256: str, strategy: str) -> str:
    """What an approval is bound to."""
    material = json.dumps([environment, backup, sha256, strategy]).encode()
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True)
class BoundPlan:
    """A plan with the checksum of its backup: what approvers approve."""

    plan: RollbackPlan
    sha256: str
    requested_backup: str | None  # None: "the newest", so a newer backup changes the plan

    @property
    def hash(self) -> str:
        return plan_hash(
            self.plan.environment.name,
            self.plan.backup.name,
            self.sha256,
            self.plan.strategy.value,
        )

    def summary(self) -> dict[str, Any]:
        return {
            **self.plan.summary(),
            "backup_sha256": self.sha256,
            "backup_identity": self.plan.backup.identity,
            "plan_hash": self.hash,
            "requested_backup": self.requested_backup,
            "backup_age_seconds": round(self.plan.backup_age_seconds),
            "planned_at": self.plan.planned_at.isoformat(),
        }


async def bind_plan(
    services: Services,
    environment: str,
    requested_backup: str | None,
    *,
    own_run_id: str | None = None,
    known: dict[str, Any] | None = None,
) -> BoundPlan:
    """The plan bound to the bytes it restores: the backup is copied into the bot's folder
    and hashed in one pass (services/approved_copy.py); every restore reads that copy.

    `known`: the run's recorded plan, if any. The same unchanged file (inode, size,
    modification and change times: a rewrite changes the last even when the others are put
    back) keeps its recorded checksum and copy, instead of seconds of I/O on every click.
    """
    plan = await plan_rollback(services, environment, requested_backup, own_run_id=own_run_id)
    recorded = known or {}
    folder = plan.environment.backups_dir
    copy = None
    if (
        plan.backup.identity
        and recorded.get("backup") == plan.backup.name
        and recorded.get("backup_identity") == plan.backup.identity
        and recorded.get("backup_sha256")
    ):
        copy = await approved_copy.existing_copy(folder, str(recorded["backup_sha256"]))
    if copy is None:
        copy = await approved_copy.take_copy(plan.backup, folder)
    return BoundPlan(replace(plan, approved=copy), copy.sha256, requested_backup)


def describe_change(before: dict[str, Any], after: BoundPlan) -> str:
    """Why a plan is no longer the one approved, in one sentence."""
    reasons = []
    if before.get("backup") != after.plan.backup.name:
        reasons.append(f"backup {before.get('backup')} was replaced by {after.plan.backup.name}")
    elif before.get("backup_sha256") != after.sha256:
        reasons.append(f"the file {after.plan.backup.name} changed (its checksum differs)")
    if before.get("strategy") != after.plan.strategy.value:
        reasons.append(f"strategy {before.get('strategy')} became {after.plan.strategy.value}")
    return "; ".join(reasons) or "the plan changed"


async def is_one_of(user: str, principals: Sequence[str], directory: Directory) -> bool:
    """Is `user` one of these user IDs, or in one of these user groups (S…)?"""
    if user in principals:
        return True
    for principal in principals:
        if principal.startswith("S") and user in await directory.usergroup_members(principal):
            return True
    return False


async def authorize_requester(
    services: Services, directory: Directory, *, environment: str, user: str
) -> None:
    policy = services.environment(environment).approval
    if policy.requesters and not await is_one_of(user, policy.requesters, directory):
        raise PermissionDenied(
            user,
            f"request a rollback of {environment}",
            "you are not one of its requesters",
            allowed=policy.requesters,
        )


async def authorize_decision(
    services: Services, directory: Directory, *, run: RunRecord, user: str, decision: Decision
) -> None:
    """Approvers approve and reject (not their own request, unless allowed); the requester
    and approvers may cancel."""
    policy = services.environment(run.environment).approval
    approver = not policy.approvers or await is_one_of(user, policy.approvers, directory)
    if decision is Decision.CANCEL:
        if user != run.requested_by and not approver:
            raise PermissionDenied(
                user,
                "cancel this rollback",
                "only the requester or an approver may",
                allowed=policy.approvers,
            )
        return
    if decision is Decision.APPROVE and user == run.requested_by and not policy.allow_self_approval:
        raise PermissionDenied(
            user, "approve this rollback", "you requested it; someone else must approve it"
        )
    if not approver:
        raise PermissionDenied(
            user,
            f"{decision.value} this rollback",
            f"you are not an approver of {run.environment}",
            allowed=policy.approvers,
        )


async def authorize_undo(
    services: Services, directory: Directory, *, run: RunRecord, user: str
) -> None:
    """Approvers of the environment may undo a rollback (whoever requested it)."""
    policy = services.environment(run.environment).approval
    if policy.approvers and not await is_one_of(user, policy.approvers, directory):
        raise PermissionDenied(
            user,
            "undo this rollback",
            f"you are not an approver of {run.environment}",
            allowed=policy.approvers,
        )


def expires_at(run: RunRecord, policy: ApprovalPolicy) -> datetime:
    return run.requested_at + timedelta(minutes=policy.expiry_minutes)


def escalates_at(run: RunRecord, policy: ApprovalPolicy) -> datetime | None:
    if policy.escalate_after_minutes is None:
        return None
    return run.requested_at + timedelta(minutes=policy.escalate_after_minutes)


@dataclass(frozen=True)
class RequestOutcome:
    run: RunRecord
    plan: BoundPlan
    approved: bool  # the policy needs no approval: the caller starts it now


async def request_rollback(
    services: Services,
    directory: Directory,
    *,
    environment: str,
    backup: str | None,
    requested_by: str,
) -> RequestOutcome:
    """Plan (read-only) and record the run awaiting approval; one active run per environment."""
    await authorize_requester(services, directory, environment=environment, user=requested_by)
    active = await services.store.active_run(environment)
    if active is not None:  # cheap, before the pre-flight; the database still decides
        raise RunConflict(environment, active.id, active.requested_by)
    bound = await bind_plan(services, environment, backup)
    needs_approval = bound.plan.environment.approval.required_approvals > 0
    run = await services.store.create_run(
        environment=bound.plan.environment.name,
        kind="database",
        requested_by=requested_by,
        status=RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.APPROVED,
        plan=bound.summary(),
        backup_name=bound.plan.backup.name,
        backup_sha256=bound.sha256,
        strategy=bound.plan.strategy.value,
    )
    return RequestOutcome(run, bound, approved=not needs_approval)


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


@dataclass(frozen=True)
class DecisionOutcome:
    run_id: str
    decision: Decision
    counted: bool  # the click changed the run (an approval recorded, a rejection, ...)
    approvals: int  # approvals of the current plan
    required: int
    note: str | None = None  # for the person who clicked: why their click did not count
    start: BoundPlan | None = field(default=None)  # set for the one caller that executes it


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
    await authorize_decision(services, directory, run=run, user=user, decision=decision)
    _ensure_open(run)
    policy = services.environment(run.environment).approval
    required = policy.required_approvals
    if (now or datetime.now(UTC)) >= expires_at(run, policy):
        await expire(services, run)
        raise ApprovalError(run.id, _CLOSED[RunStatus.EXPIRED])

    if decision is Decision.CANCEL:
        return await _close(services, run, user, RunStatus.CANCELLED, decision, required)
    if decision is Decision.REJECT:
        await services.store.add_approval(
            run.id, user_id=user, decision="reject", plan_hash=run.plan.get("plan_hash", "")
        )
        return await _close(services, run, user, RunStatus.REJECTED, decision, required)

    # Approve: re-check the plan; an approval is for exactly the plan it saw.
    bound = await bind_plan(
        services,
        run.environment,
        run.plan.get("requested_backup"),
        own_run_id=run.id,
        known=run.plan,
    )
    recorded_hash = run.plan.get("plan_hash")
    if bound.hash != recorded_hash:
        why = describe_change(run.plan, bound)
        if await services.store.replace_plan(
            run.id,
            plan=bound.summary(),
            backup_name=bound.plan.backup.name,
            backup_sha256=bound.sha256,
            strategy=bound.plan.strategy.value,
        ):
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
    await approved_copy.discard_copy(
        services, services.environment(run.environment), run.backup_sha256
    )
    return DecisionOutcome(run.id, decision, True, 0, required)


async def expire(services: Services, run: RunRecord) -> bool:
    """Mark a run whose approval time has passed as expired (once)."""
    if await services.store.update(
        run.id, status=RunStatus.EXPIRED, expect=(RunStatus.AWAITING_APPROVAL,)
    ):
        await services.store.append_event(run.id, "expired")
        environment = services.environments.get(run.environment)
        if environment is not None:
            await approved_copy.discard_copy(services, environment, run.backup_sha256)
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
