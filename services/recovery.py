"""Recovery: a run whose process died or hung is taken over, and its environment brought
back to a consistent, running state from what the run journalled; then Resume or Abort.

The journal (see `StepRecorder.journal`) says what a run was about to change and what it
changed; the server says the rest (which databases exist, whether a transaction committed).
Recovery reads both and never guesses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg

from services import approved_copy, cutover_modes, database, log_context, swap
from services.backups import Backup
from services.bundle import Services
from services.code_rollback import PUSH_DONE, recover_push, resume_code
from services.containers import Container, ContainerOutcome
from services.database import DatabaseTarget
from services.environments import Environment, Strategy
from services.errors import DatabaseError, RollbackError, RunOwned
from services.events import Listener, Step
from services.full_rollback import execute_full, finish_code_half, full_plan_of
from services.health import run_health_checks
from services.provenance import BackupKind
from services.run_store import RunKind, RunRecord, RunStatus
from services.undo import undo_rollback
from services.workflow import (
    Execution,
    RollbackPlan,
    RollbackResult,
    StepRecorder,
    collect_result,
    describe_error,
    execute_rollback,
    plan_rollback,
    rollback_database,
    target_for,
)

log = logging.getLogger(__name__)

# Runs that never touched their environment: they do not stand between a run and its Resume.
_NEVER_EXECUTED = (RunStatus.REJECTED, RunStatus.CANCELLED, RunStatus.EXPIRED)

# Execution facts a resumed run starts without (the preparation's are kept).
_EXECUTION_FACTS = [
    "stopping",
    "pausing",
    "safety_backup",
    "safety_backup_done",
    "restore",
    "wipe_first",
    "wipe_xid",
    "restore_xid",
    "undo_restore",
    "undo_restore_xid",
    "cutover",
    "swap_back",
    "archive_old",
    "archive_old_done",
    "approved_sha256",
    "recovered",
    "announced",
    "reported",
    "code_push",
    "code_tip",
    "code_new_tip",
    "code_pushed",
]


class DataState(StrEnum):
    UNCHANGED = "unchanged"  # the live database holds the data from before the run
    CHANGED = "changed"  # it holds what the run meant to put there (the backup)
    UNKNOWN = "unknown"  # the server could not be asked


@dataclass
class Recovery:
    """What recovery found and did for one run, for the channel, the CLI and the audit log."""

    run_id: str
    environment: str
    interrupted_at: str | None
    data: DataState = DataState.UNKNOWN
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    environment_state: str = ""
    seconds: float = 0.0
    old_database: str | None = None  # swap: the pre-rollback database, kept for Abort/undo

    @property
    def data_sentence(self) -> str:
        return {
            DataState.UNCHANGED: "the live database holds its pre-rollback data",
            DataState.CHANGED: "the live database holds the backup (the rollback's data)",
            DataState.UNKNOWN: "the live database's state is UNKNOWN (its server did not answer)",
        }[self.data]

    def summary(self) -> dict[str, Any]:
        return {
            "interrupted_at": self.interrupted_at,
            "data": self.data.value,
            "actions": self.actions,
            "problems": self.problems,
            "environment_state": self.environment_state,
            "seconds": round(self.seconds, 3),
        }


async def recover_orphans(services: Services) -> list[Recovery]:
    """Take over every run whose owner is gone (exactly one process wins each) and bring
    its environment back to a consistent, running state. Safe to call from any process,
    any time: at start-up, from the sweeper, from `rollback-bot recover`."""
    recovered = []
    for orphan in await services.store.orphaned_runs():
        try:
            async with (
                log_context.run_scope(orphan.id, orphan.environment),
                services.store.lease(orphan.id, owner=services.owner),
            ):
                run = await services.store.get(orphan.id)
                if run.status not in (RunStatus.APPROVED, RunStatus.RUNNING):
                    continue  # someone finished it meanwhile
                recovery = await recover_run(services, run)
                await _record(services, run, recovery)
                recovered.append(recovery)
        except RunOwned:
            continue  # another process is on it
    return recovered


async def _record(services: Services, run: RunRecord, recovery: Recovery) -> None:
    result = dict(run.result or {})
    result.update(
        ok=False,
        error=f"interrupted during {run.current_step or 'its start'}",
        environment_state=recovery.environment_state,
        recovery=recovery.summary(),
        strategy=run.strategy,
    )
    environment = services.environments.get(run.environment)
    if recovery.old_database and environment is not None:
        result["old_database"] = recovery.old_database
        keep = environment.keep_old_database_hours
        result["keep_old_until"] = (datetime.now(UTC) + timedelta(hours=keep)).isoformat()
    await services.store.update(
        run.id,
        status=RunStatus.INTERRUPTED,
        result=result,
        expect=(RunStatus.APPROVED, RunStatus.RUNNING, RunStatus.INTERRUPTED),
    )
    await services.store.append_event(
        run.id, "recovered", step=run.current_step, detail=recovery.summary()
    )


async def recover_run(services: Services, run: RunRecord) -> Recovery:
    """Bring the run's environment to a consistent, running state from its journal."""
    began = time.monotonic()
    recovery = Recovery(run.id, run.environment, run.current_step)
    environment = services.environments.get(run.environment)
    if environment is None:
        recovery.problems.append(f"environment {run.environment} is no longer configured")
        recovery.environment_state = "not recovered: the environment is unknown"
        return recovery
    journal = run.journal
    target = target_for(services, environment)
    try:
        if run.kind == RunKind.CODE.value:
            recovery.data = DataState.UNCHANGED  # a code rollback never touches the database
        elif run.kind == "undo":
            await _recover_undo(services, run, target, recovery)
        elif swap.SwapNames.from_facts(journal) is not None:
            await _recover_swap(services, run, target, recovery)
        else:
            await _recover_in_place(services, run, target, recovery)
    except (RollbackError, OSError, asyncpg.PostgresError) as error:
        recovery.data = DataState.UNKNOWN
        recovery.problems.append(f"database not checked: {error}")
    if run.kind in (RunKind.CODE.value, RunKind.FULL.value):
        try:  # the push landed or not: the remote branch says, when the journal cannot
            recovery.actions.append(await recover_push(services, run))
        except RollbackError as error:
            recovery.problems.append(f"whether the revert was pushed is UNKNOWN: {error}")
    for key in ("safety_backup", "archive_old"):
        path = journal.get(key)
        if isinstance(path, str) and not journal.get(f"{key}_done"):
            await _remove_partial(Path(path), recovery)
    await _start_stopped(services, environment, journal, recovery)
    # The run's copy of its approved bytes: a Resume plans (and copies) again.
    for sha256 in {
        run.backup_sha256,
        journal.get("approved_sha256"),
        journal.get("prepared_sha256"),
    }:
        if isinstance(sha256, str):
            await approved_copy.discard_copy(services, environment, sha256)
    recovery.environment_state = await _state_sentence(services, environment, recovery)
    recovery.seconds = time.monotonic() - began
    return recovery


# Recovery reports what it finds and moves on: a server still down after this is UNKNOWN,
# looked at again when an approver chooses Resume or Abort.
READY_SECONDS = 10.0


async def _maintenance_ready(target: DatabaseTarget) -> None:
    await database.wait_until_ready(target.on("postgres"), READY_SECONDS)


async def _allow_connections(target: DatabaseTarget, name: str, recovery: Recovery) -> None:
    if await swap.allow_connections(target, name):
        recovery.actions.append(f"connections to {name} allowed again")


async def _recover_swap(
    services: Services, run: RunRecord, target: DatabaseTarget, recovery: Recovery
) -> None:
    journal = run.journal
    names = swap.SwapNames.from_facts(journal)
    assert names is not None
    await _maintenance_ready(target)
    exists = {n: await swap.database_exists(target, n) for n in (names.staging, names.old)}
    for name in (names.live, names.old):
        await _allow_connections(target, name, recovery)
    if exists[names.old]:
        # Both renames are one transaction: the old name exists only if they committed.
        recovery.data = DataState.CHANGED
        recovery.old_database = names.old
        await services.store.record(run.id, Step.CUTOVER.value, cutover="done")
        recovery.actions.append(
            f"the cut-over had happened: {names.live} holds the backup and the pre-rollback "
            f"database is kept as {names.old}"
        )
        return
    recovery.data = DataState.UNCHANGED
    if journal.get("swap_back"):
        recovery.actions.append(f"the swap back had happened: {names.live} is the pre-rollback one")
    if not exists[names.staging]:
        return
    keep = (
        journal.get("prepare") == "done"
        and journal.get("cutover") is None
        and not journal.get("swap_back")
    )
    if keep:
        recovery.actions.append(f"staging database {names.staging} kept for Resume")
    else:
        # A restore still running into it (its process died) ends with its connections.
        await swap.drop_database(target, names.staging)
        recovery.actions.append(f"unfinished staging database {names.staging} dropped")


async def _recover_undo(
    services: Services, run: RunRecord, target: DatabaseTarget, recovery: Recovery
) -> None:
    journal = run.journal
    live, incoming, aside = (journal.get(k) for k in ("live_database", "incoming", "aside"))
    if not (isinstance(live, str) and isinstance(incoming, str) and isinstance(aside, str)):
        recovery.data = DataState.UNCHANGED
        recovery.actions.append("the undo had not begun its swap: nothing was renamed")
        return
    await _maintenance_ready(target)
    for name in (live, incoming):
        await _allow_connections(target, name, recovery)
    if await swap.database_exists(target, aside):
        recovery.data = DataState.CHANGED
        recovery.old_database = aside
        await services.store.record(run.id, Step.SWAP_BACK.value, swap_back="done")
        original = journal.get("undo_of")
        if isinstance(original, str):
            before = await services.store.get(original)
            await services.store.update(
                original, result={**(before.result or {}), "undone_by": run.id}
            )
        recovery.actions.append(
            f"the undo's swap had happened: {live} holds the pre-rollback data again and the "
            f"rolled-back database is kept as {aside}"
        )
    else:
        recovery.data = DataState.UNCHANGED
        recovery.actions.append("the undo's swap had not happened: nothing was renamed")


async def _settled_status(target: DatabaseTarget, xid: int) -> str | None:
    """How the transaction ended; one still in progress belonged to the dead process's
    psql, whose session is ended first so that it cannot commit later."""
    for _ in range(100):
        status = await database.transaction_status(target, xid)
        if status != "in progress":
            return status
        await asyncio.sleep(0.1)
    raise DatabaseError(f"transaction {xid} of the interrupted restore is still in progress")


async def _recover_in_place(
    services: Services, run: RunRecord, target: DatabaseTarget, recovery: Recovery
) -> None:
    journal = run.journal
    if "restore" not in journal:
        recovery.data = DataState.UNCHANGED
        recovery.actions.append("the database had not been touched")
        return
    await database.wait_until_ready(target, READY_SECONDS)
    await database.terminate_sessions(target)  # the dead process's psql, if still there
    statuses = {}
    for key in ("wipe_xid", "restore_xid", "undo_restore_xid"):
        xid = journal.get(key)
        statuses[key] = await _settled_status(target, int(xid)) if isinstance(xid, int) else None
    if statuses["undo_restore_xid"] == "committed":
        recovery.data = DataState.UNCHANGED
        recovery.actions.append("the pre-rollback data had been put back before the interruption")
    elif statuses["restore_xid"] == "committed" or journal.get("restore") == "committed":
        recovery.data = DataState.CHANGED
        await services.store.record(run.id, Step.RESTORE.value, restore="committed")
        recovery.actions.append("the restore had committed: the database holds the backup")
    elif statuses["wipe_xid"] == "committed":
        await _put_back_emptied(services, run, target, recovery)
    else:
        recovery.data = DataState.UNCHANGED
        recovery.actions.append(
            "the restore had not committed: PostgreSQL rolled it back, the data is as before"
        )


async def _put_back_emptied(
    services: Services, run: RunRecord, target: DatabaseTarget, recovery: Recovery
) -> None:
    """No-room mode: the wipe committed, the restore did not. The database is empty; the
    safety backup taken just before holds its data."""
    path = run.journal.get("safety_backup")
    if not isinstance(path, str) or not run.journal.get("safety_backup_done"):
        recovery.data = DataState.UNKNOWN
        recovery.problems.append("THE DATABASE WAS EMPTIED and no safety backup was finished")
        return
    stat = await asyncio.to_thread(Path(path).stat)
    safety = Backup(Path(path).name, Path(path), stat.st_size, datetime.now(UTC))
    await services.store.record(run.id, Step.UNDO_RESTORE.value, undo_restore="started")

    async def journal_xid(label: str, xid: int) -> None:
        await services.store.record(run.id, Step.UNDO_RESTORE.value, undo_restore_xid=xid)

    await database.restore_in_place(target, safety, on_transaction=journal_xid)
    await services.store.record(run.id, Step.UNDO_RESTORE.value, undo_restore="committed")
    recovery.data = DataState.UNCHANGED
    recovery.actions.append(
        f"the database had been emptied before the restore; its pre-rollback data was put "
        f"back from the safety backup {safety.name}"
    )


async def _remove_partial(path: Path, recovery: Recovery) -> None:
    partial = path.with_name(f".{path.name}.partial")
    if await asyncio.to_thread(partial.exists):
        await asyncio.to_thread(partial.unlink)
        recovery.actions.append(f"unfinished dump {partial.name} removed")


def _journalled(journal: dict[str, Any], fact: str) -> dict[str, str]:
    return {str(c["id"]): str(c["name"]) for c in journal.get(fact) or []}


async def _start_stopped(
    services: Services, environment: Environment, journal: dict[str, Any], recovery: Recovery
) -> None:
    """Thaw what the run paused and start what it stopped (and only that); the rest was
    not the run's to change."""
    paused, stopped = _journalled(journal, "pausing"), _journalled(journal, "stopping")
    wanted = {**stopped, **paused}
    if not wanted:
        return
    # A Swarm service goes back to the replica count it had, as journalled before the stop.
    replicas = {
        str(c["id"]): int(c["replicas"]) for c in journal.get("stopping") or [] if "replicas" in c
    }
    try:
        current = await services.runtime.containers(environment.workload)
    except RollbackError as error:
        recovery.problems.append(f"containers not started: {error}")
        return
    gone = set(wanted) - {c.id for c in current}
    if gone:
        recovery.problems.append(
            "no longer there: " + ", ".join(sorted(wanted[cid] for cid in gone))
        )
    frozen = [c for c in current if c.id in paused and c.state == "paused"]
    await _bring_back(services.runtime.unpause, frozen, ("thaw", "thawed", "paused"), recovery)
    down = [
        replace(c, replicas=replicas.get(c.id, c.replicas))
        for c in current
        if c.id in stopped and not c.running and c.state != "paused"
    ]
    await _bring_back(services.runtime.start, down, ("start", "started", "stopped"), recovery)


async def _bring_back(
    act: Callable[[list[Container]], Awaitable[list[ContainerOutcome]]],
    containers: list[Container],
    words: tuple[str, str, str],
    recovery: Recovery,
) -> None:
    if not containers:
        return
    verb, done, held = words
    outcomes = await act(containers)
    ok = [o.container.name for o in outcomes if o.ok]
    failed = [f"{o.container.name} ({o.error})" for o in outcomes if not o.ok]
    if ok:
        recovery.actions.append(f"{done} {len(ok)} container(s) the run had {held}")
    if failed:
        recovery.problems.append(f"could not {verb} " + "; ".join(failed))


async def _state_sentence(services: Services, environment: Environment, recovery: Recovery) -> str:
    try:
        containers: list[Container] = await services.runtime.containers(environment.workload)
    except RollbackError as error:
        return f"{recovery.data_sentence}; container state unknown ({error})"
    down = [c.name for c in containers if not c.running]
    running = (
        f"{environment.name} is PARTLY DOWN: {', '.join(down)} not running"
        if down
        else f"all {len(containers)} containers of {environment.name} running"
    )
    health = await _quick_health(services, environment)
    return f"{recovery.data_sentence}; {running}; {health}"


async def _quick_health(services: Services, environment: Environment) -> str:
    """Health as it is now, within a short deadline: recovery reports, it does not wait."""
    quick = environment.model_copy(
        update={
            "health": environment.health.model_copy(
                update={"deadline_seconds": min(environment.health.deadline_seconds, 5.0)}
            )
        }
    )
    try:
        report = await run_health_checks(
            quick,
            session=services.http,
            runtime=services.runtime,
            database=target_for(services, environment),
        )
    except RollbackError as error:
        return f"health unknown ({error})"
    if report.ok:
        return "health checks pass"
    return "health checks FAIL: " + "; ".join(f"{r.name}: {r.detail}" for r in report.failed)


# ---------------------------------------------------------------- Resume and Abort


async def interrupted_run(
    services: Services, environment_name: str, run_id: str | None = None
) -> RunRecord:
    """The recovered run an approver may resume or abort: interrupted, and nothing has run
    on its environment since (a later run changed what it would resume or put back)."""
    environment = services.environment(environment_name)
    recent = await services.store.recent_runs(environment.name, 20)
    if run_id is not None:
        run: RunRecord | None = await services.store.get(run_id)
    else:
        run = next((r for r in recent if r.status is RunStatus.INTERRUPTED), None)
    if run is None or run.environment != environment.name:
        raise RollbackError(f"No interrupted rollback of {environment.name} to act on.")
    if run.status is not RunStatus.INTERRUPTED or "recovery" not in (run.result or {}):
        raise RollbackError(
            f"Run {run.id} is {run.status.value}: only an interrupted, recovered run can be "
            "resumed or aborted."
        )
    later = [
        r for r in recent if r.requested_at > run.requested_at and r.status not in _NEVER_EXECUTED
    ]
    if later:
        raise RollbackError(
            f"Run {later[-1].id} of {environment.name} came after {run.id}; act on that one."
        )
    return run


async def _known_data(services: Services, run: RunRecord) -> tuple[RunRecord, DataState]:
    """The run's data state; one left UNKNOWN (its server was down at recovery) is looked
    at again now, under the run's lease, and recorded."""
    data = recovered_data(run)
    if data is not DataState.UNKNOWN:
        return run, data
    async with services.store.lease(run.id, owner=services.owner):
        recovery = await recover_run(services, run)
        await _record(services, run, recovery)
    if recovery.data is DataState.UNKNOWN:
        raise RollbackError(
            f"Run {run.id}'s database state is still unknown: "
            + ("; ".join(recovery.problems) or "its server does not answer")
        )
    return await services.store.get(run.id), recovery.data


def recovered_data(run: RunRecord) -> DataState:
    return DataState(str(((run.result or {}).get("recovery") or {}).get("data", "unknown")))


async def resume_run(
    services: Services, run_id: str, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """Continue an interrupted run where that is safe: if its data is live, check health and
    finish; if nothing took effect, run the rollback again (same backup, same file)."""
    run = await services.store.get(run_id)
    run = await interrupted_run(services, run.environment, run.id)
    if run.kind == RunKind.CODE.value:
        await services.store.append_event(run.id, "resumed", actor=requested_by)
        return await resume_code(services, run, listener=listener)
    run, data = await _known_data(services, run)
    plan = await plan_rollback(services, run.environment, run.backup_name, own_run_id=run.id)
    identity = run.plan.get("backup_identity")
    if identity and identity != plan.backup.identity:
        raise RollbackError(
            f"The backup {plan.backup.name} changed since run {run.id} was approved; "
            "request a new rollback."
        )
    await services.store.append_event(run.id, "resumed", actor=requested_by)
    if data is DataState.UNCHANGED:
        await services.store.forget(run.id, _EXECUTION_FACTS)
        if not await services.store.transition(
            run.id, to=RunStatus.APPROVED, expect=(RunStatus.INTERRUPTED,)
        ):
            raise RollbackError(f"Run {run.id} changed meanwhile; nothing was done.")
        if run.kind == RunKind.FULL.value:
            return await execute_full(
                services,
                full_plan_of(run, plan),
                run_id=run.id,
                requested_by=run.requested_by,
                listener=listener,
                expect=(RunStatus.APPROVED,),
            )
        return await execute_rollback(
            services, plan, run_id=run.id, listener=listener, expect=(RunStatus.APPROVED,)
        )
    if run.kind == RunKind.FULL.value:
        return await finish_code_half(services, run, plan, listener=listener)
    return await _finish_changed(services, run, plan, listener)


async def _finish_changed(
    services: Services, run: RunRecord, plan: RollbackPlan, listener: Listener
) -> RollbackResult:
    """The rollback's data is live and the containers run: check health, then what the
    run would have done after it (ANALYZE, or the old database's dump)."""
    recorder = StepRecorder(services, run.id, listener)
    execution = Execution(services, plan, recorder)
    result = RollbackResult(run_id=run.id, ok=False, strategy=run.strategy or "")
    async with (
        log_context.run_scope(run.id, run.environment),
        services.store.lease(run.id, owner=services.owner) as lease,
    ):
        if not await services.store.transition(
            run.id, to=RunStatus.RUNNING, expect=(RunStatus.INTERRUPTED,), owner=lease.owner
        ):
            raise RollbackError(f"Run {run.id} changed meanwhile; nothing was done.")
        try:
            await execution.check_health()
            result.ok = True
            result.environment_state = (
                f"{plan.environment.name} is running on {plan.backup.name}; health checks pass"
            )
        except Exception as failure:
            result.error = describe_error(failure)
            result.environment_state = (
                f"{plan.environment.name} has {plan.backup.name} live but health checks FAIL; "
                "Abort and restore puts the pre-rollback data back"
            )
        recorder.best_effort = True
        old = (run.result or {}).get("old_database")
        if isinstance(old, str):
            result.old_database = old
            result.keep_old_until = datetime.now(UTC) + timedelta(
                hours=plan.environment.keep_old_database_hours
            )
            if result.ok:
                await _dump_old(execution, old)
        elif result.ok:
            try:
                await execution.analyze()
            except RollbackError as error:
                log.warning("run %s: ANALYZE after resume: %s", run.id, error)
        collect_result(result, recorder, execution)
        status = RunStatus.SUCCEEDED if result.ok else RunStatus.FAILED
        await services.store.update(
            run.id, status=status, result={**(run.result or {}), **result.summary()}
        )
        await services.store.append_event(
            run.id, "finished", detail={"ok": result.ok, "state": result.environment_state}
        )
    return result


async def _dump_old(execution: Execution, old: str) -> None:
    try:
        async with execution.recorder.step(Step.ARCHIVE_OLD) as record:
            dump = await database.dump_database(
                execution.target.on(old), execution.plan.safety_backup
            )
            execution.safety = dump
            record.message = f"{dump.name} ({dump.size_bytes / 1e6:.1f} MB)"
            record.message += await execution.sidecar(dump, BackupKind.OLD_DATABASE, old)
    except RollbackError as error:
        log.warning("dumping the old database %s failed: %s", old, error)


async def abort_run(
    services: Services, run_id: str, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """Back to the pre-rollback data: nothing to do if the rollback never took effect (its
    staging database is dropped), the old database swapped back (swap), or the safety
    backup restored (in place, as a rollback of its own that keeps a safety copy too)."""
    run = await services.store.get(run_id)
    run = await interrupted_run(services, run.environment, run.id)
    environment = services.environment(run.environment)
    run, data = await _known_data(services, run)
    pushed = run.journal.get("code_push") == PUSH_DONE
    if pushed:  # a code or full rollback whose revert landed: its code is rolled back
        raise RollbackError(
            f"Run {run.id}'s revert {str(run.journal.get('code_new_tip'))[:7]} was pushed before "
            "the interruption: Abort cannot take a push back (nor put the data back under the "
            "reverted code). Resume checks health and finishes, or revert the revert in git."
        )
    if not await services.store.transition(
        run.id, to=RunStatus.ABORTED, expect=(RunStatus.INTERRUPTED,)
    ):
        raise RollbackError(f"Run {run.id} changed meanwhile; nothing was done.")
    await services.store.append_event(run.id, "aborted", actor=requested_by)
    if data is DataState.UNCHANGED:
        names = swap.SwapNames.from_facts(run.journal)
        target = target_for(services, environment)
        if names is not None and await swap.database_exists(target, names.staging):
            await swap.drop_database(target, names.staging)
        result = RollbackResult(run_id=run.id, ok=True, strategy=run.strategy or "")
        result.environment_state = (
            f"nothing to put back: {environment.name} holds its pre-rollback data"
            + (" and code" if run.kind != RunKind.DATABASE.value else "")
        )
        await services.store.update(
            run.id, result={**(run.result or {}), "aborted": result.environment_state}
        )
        return result
    if run.strategy == Strategy.SWAP.value or (run.result or {}).get("old_database"):
        result = await undo_rollback(
            services, environment.name, requested_by=requested_by, listener=listener, run_id=run.id
        )
    else:
        safety = run.journal.get("safety_backup")
        if not isinstance(safety, str):
            raise RollbackError(f"Run {run.id} has no safety backup to restore.")
        plan = await plan_rollback(services, environment.name, Path(safety).name)
        plan = _in_place(plan)
        result = await rollback_database(
            services, plan, requested_by=requested_by, listener=listener
        )
    await services.store.update(
        run.id,
        result={**(run.result or {}), "aborted_by": result.run_id, "aborted": result.ok},
    )
    return result


def _in_place(plan: RollbackPlan) -> RollbackPlan:
    """Putting a safety backup back is a plain in-place restore (no staging copy)."""
    mode, note = cutover_modes.effective_mode(plan.environment.cutover_mode, Strategy.IN_PLACE)
    return replace(
        plan,
        strategy=Strategy.IN_PLACE,
        strategy_note="abort: in-place restore",
        cutover_mode=mode,
        mode_note=note,
    )
