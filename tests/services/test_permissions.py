"""The permission table and the actions gated like the rollback (issue 8)."""

from __future__ import annotations

import asyncio

import aiodocker
import pytest

from services.approvals import (
    Decision,
    approve_action,
    cancel_run,
    decide,
    release_action,
    request_rollback,
)
from services.checklist import ChecklistItem, checklist_state, tick_checklist
from services.errors import ApprovalError, PermissionDenied, RollbackError
from services.permissions import PERMISSIONS, Action, Actor, NoGroups, authorize
from services.run_store import RunRecord, RunStatus
from services.undo import undo_rollback, undoable_run
from services.workflow import execute_rollback
from tests.services.conftest import Stage, container_states
from tests.services.test_approvals import GROUPS, with_policy


async def waiting_run(stage: Stage) -> RunRecord:
    outcome = await request_rollback(
        stage.services,
        GROUPS,
        environment=stage.environment.name,
        backup=None,
        requested_by="U0ALICE",
    )
    return outcome.run


def test_every_action_has_a_rule() -> None:
    assert set(PERMISSIONS) == set(Action)


async def test_an_action_missing_from_the_table_is_denied(stage: Stage) -> None:
    run = await waiting_run(stage)
    for action in ("drop_database", "", "approve", "rollback.approve"):
        with pytest.raises(PermissionDenied, match="not an action this bot knows"):
            await authorize(stage.services, GROUPS, action=action, actor=Actor("U0BOB"), run=run)
    await stage.services.store.update(run.id, status=RunStatus.CANCELLED)


async def test_operators_hold_only_the_operator_role(stage: Stage) -> None:
    """An empty approvers list means "anyone in Slack"; never an operator on the CLI."""
    stage = stage.with_environment()  # default policy: requesters and approvers empty
    run = await waiting_run(stage)
    operator = Actor.command_line("ops@host (command line)")
    for action in (Action.CANCEL, Action.UNDO, Action.STATUS, Action.REQUEST):
        await authorize(stage.services, NoGroups(), action=action, actor=operator, run=run)
    for action in (Action.APPROVE, Action.REJECT, Action.TICK):
        with pytest.raises(PermissionDenied):
            await authorize(stage.services, NoGroups(), action=action, actor=operator, run=run)
    await stage.services.store.update(run.id, status=RunStatus.CANCELLED)


async def test_gated_action_needs_the_policy_approvals_and_goes_once(stage: Stage) -> None:
    stage = with_policy(stage, required_approvals=2)
    run = await waiting_run(stage)
    services = stage.services
    with pytest.raises(PermissionDenied, match="someone else"):
        await approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user="U0ALICE")
    with pytest.raises(PermissionDenied, match="not an approver"):
        await approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user="U0DAVE")
    first = await approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user="U0BOB")
    assert (first.counted, first.approvals, first.required, first.go) == (True, 1, 2, False)
    again = await approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user="U0BOB")
    assert not again.counted and not again.go
    gates = await asyncio.gather(
        *(
            approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user=u)
            for u in ("U0ERIN", "U0FRED")
        )
    )
    assert [g.go for g in gates].count(True) == 1
    # Approvals of one action never count for another, nor for the rollback's plan.
    abort = await approve_action(
        services, GROUPS, run_id=run.id, action=Action.ABORT, user="U0ERIN"
    )
    assert (abort.approvals, abort.go) == (1, False)
    assert (await services.store.get(run.id)).status is RunStatus.AWAITING_APPROVAL
    # A failed undo spends its approvals: it may be asked again, from zero.
    await release_action(services, run_id=run.id, action=Action.UNDO)
    fresh = await approve_action(services, GROUPS, run_id=run.id, action=Action.UNDO, user="U0BOB")
    assert (fresh.approvals, fresh.go) == (1, False)
    await services.store.update(run.id, status=RunStatus.CANCELLED)


async def test_an_approved_run_cancelled_before_it_starts_never_executes(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    stage = with_policy(stage, required_approvals=1)
    run = await waiting_run(stage)
    services = stage.services
    outcome = await decide(services, GROUPS, run_id=run.id, user="U0BOB", decision=Decision.APPROVE)
    assert outcome.start is not None
    with pytest.raises(PermissionDenied):
        await cancel_run(
            services, GROUPS, environment=stage.environment.name, actor=Actor("U0DAVE")
        )
    cancelled = await cancel_run(
        services, GROUPS, environment=stage.environment.name, actor=Actor("U0ALICE")
    )
    assert cancelled.status is RunStatus.APPROVED  # as it was
    assert (await services.store.get(run.id)).status is RunStatus.CANCELLED

    async def ignore(event: object) -> None:
        return None

    with pytest.raises(RollbackError, match="it is cancelled"):
        await execute_rollback(services, outcome.start.plan, run_id=run.id, listener=ignore)
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert (await services.store.get(run.id)).status is RunStatus.CANCELLED
    with pytest.raises(ApprovalError, match="was cancelled"):
        await decide(services, GROUPS, run_id=run.id, user="U0ERIN", decision=Decision.CANCEL)


async def test_ticks_from_a_stale_view_change_only_what_that_person_changed(
    stage: Stage,
) -> None:
    run = await waiting_run(stage)
    store = stage.services.store

    async def ticked() -> set[str]:
        state = checklist_state(await store.events(run.id))
        return {i.value for i, t in state.items() if t is not None and t.by != "bot"}

    # Erin ticks two items; Bob, whose view still shows none, ticks a third.
    await tick_checklist(
        store, run_id=run.id, user="U0ERIN", ticked=["assessed", "monitoring"], shown=[]
    )
    await tick_checklist(store, run_id=run.id, user="U0BOB", ticked=["root_cause"], shown=[])
    assert await ticked() == {"assessed", "monitoring", "root_cause"}
    # Bob unticks root_cause in a view that showed only it: Erin's two stay.
    await tick_checklist(store, run_id=run.id, user="U0BOB", ticked=[], shown=["root_cause"])
    assert await ticked() == {"assessed", "monitoring"}
    # No view in the payload (an ephemeral copy): ticks only, never unticks.
    changed = await tick_checklist(
        store, run_id=run.id, user="U0BOB", ticked=["documentation"], shown=None
    )
    assert changed == [ChecklistItem.DOCUMENTATION]
    assert await ticked() == {"assessed", "monitoring", "documentation"}
    await store.update(run.id, status=RunStatus.CANCELLED)


async def test_undo_names_exactly_the_run_it_undoes(stage: Stage) -> None:
    """issue 8: the Undo of an older run's message never undoes a later rollback."""
    store = stage.services.store
    name = stage.environment.name
    finished = []
    for old in ("old_one", "old_two"):
        run = await store.create_run(
            environment=name,
            kind="database",
            requested_by="U0ALICE",
            status=RunStatus.RUNNING,
            plan={},
        )
        await store.update(run.id, status=RunStatus.SUCCEEDED, result={"old_database": old})
        finished.append(await store.get(run.id))
    first, second = finished
    with pytest.raises(RollbackError, match=r"changed .* after it"):
        await undoable_run(stage.services, name, run_id=first.id)
    assert (await undoable_run(stage.services, name, run_id=second.id)).id == second.id

    async def ignore(event: object) -> None:
        return None

    with pytest.raises(RollbackError, match=r"changed .* after it"):
        await undo_rollback(
            stage.services, name, requested_by="U0BOB", listener=ignore, run_id=first.id
        )
    assert [r.kind for r in await store.recent_runs(name)] == ["database", "database"]


async def test_a_backup_is_for_operators_and_the_environments_requesters(stage: Stage) -> None:
    stage = with_policy(stage, requesters=("U0ALICE",))
    name = stage.environment.name
    for actor in (Actor.command_line("ops@host (command line)"), Actor("U0ALICE")):
        await authorize(stage.services, GROUPS, action=Action.BACKUP, actor=actor, environment=name)
    with pytest.raises(PermissionDenied, match="may not take a backup"):
        await authorize(
            stage.services, GROUPS, action=Action.BACKUP, actor=Actor("U0DAVE"), environment=name
        )
