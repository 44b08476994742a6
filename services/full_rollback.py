"""Full rollback: the runbook's order, database first, then code, in one run with one
checklist and one approval.

Decided:
- Which commit: the one named; else the commit recorded with the backup (its provenance
  sidecar), so one name brings data and code back to the same moment; else, as the
  runbook's full rollback (`git revert HEAD`), the last deployed change only, and the plan
  says so in a warning before anyone approves.
- Health: checked once, after the code half. Between the halves the new code runs on the
  old data and may fail, so the database half's own check would only delay the revert (a
  swap would even put the old data back by itself); the plan says so.
- The database half runs as a database rollback does (swap or in place, with its
  compensations when a step of its own fails). When the code half fails after it, the
  database half stays; the result says where each half stands and offers the approvers
  Retry code rollback (the same approved plan, refused if the branch moved) and Undo
  database rollback (the old database swapped back, or the safety backup restored).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from services import swap
from services.backups import Backup
from services.bound_plan import BoundPlan
from services.bundle import Services
from services.code_rollback import (
    CodeRollbackPlan,
    code_plan_of,
    execute_code,
    git_target,
    not_rolled_back,
    plan_code,
    push_code,
    pushed_sentence,
)
from services.environments import Environment, Strategy
from services.errors import BranchMoved, NothingToRevert, RevertConflict, RollbackError
from services.events import Listener
from services.git import same_commit
from services.permissions import Action
from services.provenance import read_provenance, schema_mismatch
from services.run_store import RunKind, RunRecord, RunStatus
from services.undo import undo_rollback
from services.workflow import (
    Execution,
    RollbackPlan,
    RollbackResult,
    StepRecorder,
    Verify,
    archive_old,
    collect_result,
    describe_error,
    describe_state,
    execute_rollback,
    finish_reported,
    owned_run,
    plan_rollback,
    rollback_database,
    verify_health,
)

HEALTH_NOTE = (
    "Health is checked once, after the code half: between the halves the new code runs on "
    "the old data and may fail, which does not stop the rollback."
)


class CodeSource(StrEnum):
    NAMED = "named"  # the request named the commit
    BACKUP = "backup"  # recorded with the backup (provenance)
    LAST_CHANGE = "last change"  # no recorded commit: the deployed change is reverted


@dataclass(frozen=True)
class FullRollbackPlan:
    database: BoundPlan
    code: CodeRollbackPlan | None  # None: the code is at that commit already
    code_source: CodeSource
    code_note: str  # which commit and why, for the plan
    requested_commit: str | None = None  # as the request named it

    @property
    def hash(self) -> str:
        code = self.code.hash if self.code is not None else None
        material = json.dumps([self.database.hash, "full", code]).encode()
        return hashlib.sha256(material).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            **self.database.summary(),
            "kind": RunKind.FULL.value,
            "database_plan_hash": self.database.hash,
            "code": self.code.code_summary() if self.code is not None else None,
            "requested_commit": self.requested_commit,
            "code_source": self.code_source.value,
            "code_note": self.code_note,
            "health_note": HEALTH_NOTE,
            "plan_hash": self.hash,
        }

    def columns(self) -> dict[str, str | None]:
        plan = self.database.plan
        return {
            "backup_name": plan.backup.name,
            "backup_sha256": self.database.sha256,
            "strategy": plan.strategy.value,
        }


async def recorded_commit(path: Path) -> str | None:
    """The commit deployed when the backup was taken, from its provenance sidecar."""
    provenance = await asyncio.to_thread(read_provenance, path)
    return provenance.deployed_commit if provenance is not None else None


def _schema_warning(environment: Environment, backup: Path, target: str) -> str | None:
    """When the backup's schema version and that of the code it is paired with are both
    known (another backup recorded with the target commit) and differ. Blocking: sidecars."""
    mine = read_provenance(backup)
    if mine is None or mine.schema_version is None:
        return None
    for path in sorted(environment.backups_dir.glob("*.dump")):
        other = read_provenance(path)
        if (
            other is not None
            and other.deployed_commit
            and same_commit(other.deployed_commit, target)
        ):
            label = f"the code of {target[:7]} ({path.name} was taken with it)"
            warning = schema_mismatch(mine, other, other_label=label)
            if warning is not None:
                return warning
    return None


async def plan_full(
    services: Services,
    database: BoundPlan,
    commit: str | None,
    *,
    own_run_id: str | None = None,
) -> FullRollbackPlan:
    """The code half for a bound database plan: the commit named, the backup's, or the last
    deployed change (see the module's docstring)."""
    environment = database.plan.environment
    backup = database.plan.backup.name
    target = git_target(environment)
    source, requested = CodeSource.NAMED, commit
    if commit is not None:
        note = f"the code goes back to {commit}, as asked"
    else:
        commit = await recorded_commit(database.plan.backup.path)
        if commit is not None:
            source = CodeSource.BACKUP
            note = f"the code goes back to {commit[:7]}, deployed when {backup} was taken"
        else:
            source = CodeSource.LAST_CHANGE
            note = (
                f"⚠️ {backup} has no recorded commit, so the code half reverts only the last "
                f"deployed change; to bring the code back further, name the commit: "
                f"/rollback full {environment.name} {backup} <commit>"
            )
    try:
        code = await plan_code(
            services,
            environment.name,
            commit,
            own_run_id=own_run_id,
            database_offer=f"{environment.name} {backup}",
        )
    except NothingToRevert:
        if source is CodeSource.LAST_CHANGE:
            raise
        note = f"{note}; {target.branch} is there already: nothing to revert"
        return FullRollbackPlan(database, None, source, note, requested)
    if source is not CodeSource.BACKUP:  # the backup's own commit is its schema's code
        mismatch = await asyncio.to_thread(
            _schema_warning, environment, database.plan.backup.path, code.code.target
        )
        note += f"; ⚠️ {mismatch}" if mismatch else ""
    return FullRollbackPlan(database, code, source, note, requested)


def _database_sentence(run: Execution, names: swap.SwapNames | None) -> str:
    plan = run.plan
    kept = (
        f"the pre-rollback database is kept as {names.old}"
        if names is not None
        else f"the pre-rollback data is in {run.safety.name if run.safety else plan.safety_backup}"
    )
    return f"done: {plan.environment.name} runs on {plan.backup.name}; {kept}"


def _full_verify(plan: FullRollbackPlan, requested_by: str) -> Verify:
    """After the database half's start: the code half, then the one health check."""

    async def verify(run: Execution, names: swap.SwapNames | None, result: RollbackResult) -> bool:
        if plan.code is None:  # nothing to revert: a database rollback after all
            return await verify_health(run, names, result)
        environment, code = run.env, plan.code.code
        database = _database_sentence(run, names)
        try:
            pushed = await push_code(
                run.services, environment, code, run.recorder, requested_by=requested_by
            )
        except Exception as error:
            await _code_half_failed(run, result, database, error)
            return True  # the database half stands (its old database is archived)
        result.code = {"pushed": True, **pushed.summary()}
        done = pushed_sentence(environment, code, pushed)
        result.halves = {"database": database, "code": f"done: {done}"}
        try:
            await run.check_health()
        except Exception as failure:
            result.error = describe_error(failure)
            state = await describe_state(run)
            result.environment_state = (
                f"database rolled back to {run.plan.backup.name} and code to "
                f"{code.short_target}, but {result.error}; {state}"
            )
            return True
        if run.down_since is not None:
            result.downtime_seconds = time.monotonic() - run.down_since
        result.ok = True
        result.environment_state = (
            f"{environment.name} runs on {run.plan.backup.name} with the code of "
            f"{code.short_target} ({code.branch} at {pushed.new_tip[:7]}); health checks pass"
        )
        return True

    return verify


async def _code_half_failed(
    run: Execution, result: RollbackResult, database: str, error: BaseException
) -> None:
    """The database half is done, the code half is not: say where each stands, and offer
    what is left (a retry cannot help a moved branch or a conflict: those need a new plan)."""
    result.error = describe_error(error)
    state = await describe_state(run)
    code_state = not_rolled_back(error)
    result.code = {"pushed": False, "error": result.error}
    result.halves = {"database": database, "code": code_state}
    result.environment_state = (
        f"database rolled back to {run.plan.backup.name}, code {code_state}; {state}; health not "
        "checked (the new code runs on the old data)"
    )
    retry = () if isinstance(error, BranchMoved | RevertConflict) else (Action.RETRY_CODE.value,)
    result.follow_ups = (*retry, Action.UNDO_DATABASE.value)


async def execute_full(
    services: Services,
    plan: FullRollbackPlan,
    *,
    run_id: str,
    requested_by: str,
    listener: Listener,
    expect: tuple[RunStatus, ...] = (RunStatus.APPROVED, RunStatus.RUNNING),
    report: Callable[[], Awaitable[None]] | None = None,
) -> RollbackResult:
    """The database half as a database rollback executes it (waiting for its preparation,
    with its compensations), the code half in place of its health check, then health."""
    return await execute_rollback(
        services,
        plan.database.plan,
        run_id=run_id,
        listener=listener,
        expect=expect,
        report=report,
        verify=_full_verify(plan, requested_by),
    )


async def rollback_full(
    services: Services, plan: FullRollbackPlan, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """The command line's full rollback: record the run (confirmed: approved), execute it."""
    run = await services.store.create_run(
        environment=plan.database.plan.environment.name,
        kind=RunKind.FULL.value,
        requested_by=requested_by,
        status=RunStatus.APPROVED,
        plan=plan.summary(),
        **plan.columns(),
    )
    return await execute_full(
        services, plan, run_id=run.id, requested_by=requested_by, listener=listener
    )


# ---------------------------------------------------------------- after a failed code half


async def failed_half(services: Services, run_id: str, action: Action) -> RunRecord:
    """The full rollback whose code half failed, if `action` is still offered on it."""
    run = await services.store.get(run_id)
    result = run.result or {}
    offered = action.value in (result.get("follow_ups") or [])
    done = result.get("undone_by") or (result.get("code_retry") or {}).get("ok")
    if run.kind != RunKind.FULL.value or run.status is not RunStatus.FAILED or not offered:
        raise RollbackError(f"Run {run.id} offers no {action.value.replace('_', ' ')}.")
    if done:
        raise RollbackError(f"Run {run.id}'s code half was retried or its database undone.")
    return run


async def retry_code_half(
    services: Services, run_id: str, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """Push the full rollback's approved code plan again, as a code run of its own (refused,
    nothing pushed, if the branch moved since): then the version wait and health."""
    run = await failed_half(services, run_id, Action.RETRY_CODE)
    environment = services.environment(run.environment)
    plan = code_plan_of(run, environment)
    if plan is None:
        raise RollbackError(f"Run {run.id} recorded no code plan.")
    retry = await services.store.create_run(
        environment=environment.name,
        kind=RunKind.CODE.value,
        requested_by=requested_by,
        status=RunStatus.APPROVED,
        plan={**plan.summary(), "retry_of": run.id},
    )
    result = await execute_code(
        services, plan, run_id=retry.id, requested_by=requested_by, listener=listener
    )
    await _note(services, run, code_retry={"run": retry.id, "ok": result.ok})
    return result


async def undo_database_half(
    services: Services, run_id: str, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """Put the full rollback's database half back: the old database swapped back (swap), or
    the safety backup restored in place (a database rollback of its own)."""
    run = await failed_half(services, run_id, Action.UNDO_DATABASE)
    if (run.result or {}).get("old_database"):
        # Marks the run undone itself (undone_by).
        return await undo_rollback(
            services, run.environment, requested_by=requested_by, listener=listener, run_id=run.id
        )
    safety = (run.result or {}).get("safety_backup")
    if not isinstance(safety, str):
        raise RollbackError(f"Run {run.id} kept no pre-rollback data to put back.")
    plan = await plan_rollback(services, run.environment, Path(safety).name)
    plan = replace(plan, strategy=Strategy.IN_PLACE, strategy_note="undo: in-place restore")
    result = await rollback_database(services, plan, requested_by=requested_by, listener=listener)
    if result.ok:
        await _note(services, run, undone_by=result.run_id)
    return result


async def _note(services: Services, run: RunRecord, **facts: object) -> None:
    current = await services.store.get(run.id)
    await services.store.update(run.id, result={**(current.result or {}), **facts})


# ---------------------------------------------------------------- Resume after recovery


def full_plan_of(run: RunRecord, database: RollbackPlan) -> FullRollbackPlan:
    """The approved full plan as the run recorded it, on a database plan made again."""
    bound = BoundPlan(database, run.backup_sha256 or "", run.plan.get("requested_backup"))
    return FullRollbackPlan(
        bound,
        code_plan_of(run, database.environment),
        CodeSource(str(run.plan.get("code_source") or CodeSource.NAMED.value)),
        str(run.plan.get("code_note") or ""),
        run.plan.get("requested_commit"),
    )


async def _journalled_safety(run: RunRecord) -> Backup | None:
    path = run.journal.get("safety_backup")
    if not isinstance(path, str) or not run.journal.get("safety_backup_done"):
        return None
    try:
        stat = await asyncio.to_thread(Path(path).stat)
    except OSError:
        return None
    created = datetime.fromtimestamp(stat.st_mtime, UTC)
    return Backup(Path(path).name, Path(path), stat.st_size, created)


async def finish_code_half(
    services: Services, run: RunRecord, database: RollbackPlan, *, listener: Listener
) -> RollbackResult:
    """Resume of a full rollback whose database half had taken effect (recovery found the
    backup live): the code half (a push that landed is found, not made twice), health."""
    plan = full_plan_of(run, database)
    recorder = StepRecorder(services, run.id, listener)
    execution = Execution(services, database, recorder)
    execution.safety = await _journalled_safety(run)
    result = RollbackResult(run_id=run.id, ok=False, strategy=run.strategy or "")
    names = swap.SwapNames.from_facts(run.journal)
    async with owned_run(services, run.id, run.environment, expect=(RunStatus.INTERRUPTED,)):
        kept = await _full_verify(plan, run.requested_by)(execution, names, result)
        recorder.best_effort = True
        if names is not None and kept:
            await archive_old(execution, names, result)
        collect_result(result, recorder, execution)
        await finish_reported(services, run.id, result)
    return result
