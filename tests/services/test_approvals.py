"""The approval gate as a service: policy, compare-and-set, expiry, escalation (issue #3)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from services.approvals import Decision, DecisionOutcome, decide, request_rollback, sweep
from services.environments import ApprovalPolicy, Contacts, CutoverMode
from services.errors import ApprovalError, PermissionDenied, RunConflict
from services.run_store import RunStatus
from tests.services.conftest import Stage


@dataclass
class Groups:
    """A Directory over a fixed membership table (what Slack would answer)."""

    members: dict[str, frozenset[str]] = field(default_factory=dict)
    lookups: int = 0

    async def usergroup_members(self, usergroup: str) -> frozenset[str]:
        self.lookups += 1
        return self.members.get(usergroup, frozenset())


GROUPS = Groups({"S0ONCALL": frozenset({"U0BOB", "U0ERIN", "U0FRED"})})


async def approve(stage: Stage, run_id: str, user: str) -> DecisionOutcome:
    return await decide(stage.services, GROUPS, run_id=run_id, user=user, decision=Decision.APPROVE)


def with_policy(stage: Stage, **policy: object) -> Stage:
    return stage.with_environment(
        approval=ApprovalPolicy(approvers=("S0ONCALL",), **policy),  # type: ignore[arg-type]
        contacts=Contacts(escalation_users=("U0MAX",)),
    )


async def test_concurrent_approvals_grant_exactly_once(stage: Stage) -> None:
    stage = with_policy(stage, required_approvals=2)
    name = stage.environment.name
    outcome = await request_rollback(
        stage.services, GROUPS, environment=name, backup=None, requested_by="U0ALICE"
    )
    assert outcome.run.status is RunStatus.AWAITING_APPROVAL and not outcome.approved
    results = await asyncio.gather(
        *(
            decide(stage.services, GROUPS, run_id=outcome.run.id, user=u, decision=Decision.APPROVE)
            for u in ("U0BOB", "U0ERIN", "U0FRED")
        ),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException) and r.start is not None]
    assert len(started) == 1, results
    assert (await stage.services.store.get(outcome.run.id)).status is RunStatus.APPROVED
    # A second request while this one is active is refused, naming who holds it.
    with pytest.raises(RunConflict) as conflict:
        await request_rollback(
            stage.services, GROUPS, environment=name, backup=None, requested_by="U0BOB"
        )
    assert conflict.value.requested_by == "U0ALICE"
    await stage.services.store.update(outcome.run.id, status=RunStatus.CANCELLED)


async def test_a_cut_over_mode_changed_before_the_approval_voids_it(stage: Stage) -> None:
    """The mode decides what the application sees (stopped, frozen): an approval of the
    plan with `stop` does not start a run that would `pause` (the bot restarted with a new
    environments file between the request and the click)."""
    stage = with_policy(stage)
    outcome = await request_rollback(
        stage.services,
        GROUPS,
        environment=stage.environment.name,
        backup=None,
        requested_by="U0ALICE",
    )
    assert outcome.run.plan["cutover_mode"] == "stop"
    paused = stage.with_environment(cutover_mode=CutoverMode.PAUSE)

    clicked = await decide(
        paused.services, GROUPS, run_id=outcome.run.id, user="U0BOB", decision=Decision.APPROVE
    )

    assert clicked.start is None and not clicked.counted
    assert clicked.note is not None and "cut-over mode stop became pause" in clicked.note
    run = await stage.services.store.get(outcome.run.id)
    assert run.status is RunStatus.AWAITING_APPROVAL and run.plan["cutover_mode"] == "pause"
    again = await decide(
        paused.services, GROUPS, run_id=run.id, user="U0BOB", decision=Decision.APPROVE
    )
    assert again.start is not None  # the new plan, approved as shown
    await stage.services.store.update(run.id, status=RunStatus.CANCELLED)


async def test_policy_requesters_approvers_and_self_approval(stage: Stage) -> None:
    stage = with_policy(stage, requesters=("U0ALICE", "S0ONCALL"), allow_self_approval=False)
    name = stage.environment.name
    with pytest.raises(PermissionDenied):
        await request_rollback(
            stage.services, GROUPS, environment=name, backup=None, requested_by="U0DAVE"
        )
    assert await stage.services.store.recent_runs(name) == []
    # A member of the group may request, but not approve their own request.
    outcome = await request_rollback(
        stage.services, GROUPS, environment=name, backup=None, requested_by="U0BOB"
    )
    run_id = outcome.run.id
    with pytest.raises(PermissionDenied, match="someone else"):
        await decide(stage.services, GROUPS, run_id=run_id, user="U0BOB", decision=Decision.APPROVE)
    with pytest.raises(PermissionDenied, match="not an approver"):
        await decide(
            stage.services, GROUPS, run_id=run_id, user="U0DAVE", decision=Decision.APPROVE
        )
    first = await decide(
        stage.services, GROUPS, run_id=run_id, user="U0ERIN", decision=Decision.APPROVE
    )
    assert first.start is not None
    with pytest.raises(ApprovalError, match="already approved"):
        await decide(
            stage.services, GROUPS, run_id=run_id, user="U0FRED", decision=Decision.APPROVE
        )
    await stage.services.store.update(run_id, status=RunStatus.CANCELLED)


async def test_sweep_escalates_once_then_expires_once(stage: Stage) -> None:
    stage = with_policy(stage, expiry_minutes=10, escalate_after_minutes=2)
    outcome = await request_rollback(
        stage.services,
        GROUPS,
        environment=stage.environment.name,
        backup=None,
        requested_by="U0ALICE",
    )
    run = outcome.run
    early = await sweep(stage.services, now=run.requested_at + timedelta(minutes=1))
    assert early.escalated == () and early.expired == ()
    later = run.requested_at + timedelta(minutes=3)
    rounds = await asyncio.gather(*(sweep(stage.services, now=later) for _ in range(4)))
    escalated = [e for r in rounds for e in r.escalated if e.run.id == run.id]
    assert len(escalated) == 1 and escalated[0].contacts.escalation_users == ("U0MAX",)
    end = run.requested_at + timedelta(minutes=11)
    rounds = await asyncio.gather(*(sweep(stage.services, now=end) for _ in range(4)))
    assert len([x for r in rounds for x in r.expired if x.id == run.id]) == 1
    with pytest.raises(ApprovalError, match="expired"):
        await decide(stage.services, GROUPS, run_id=run.id, user="U0BOB", decision=Decision.APPROVE)
    kinds = [e.kind for e in await stage.services.store.events(run.id)]
    assert kinds.count("escalated") == 1 and kinds.count("expired") == 1
