"""Undo of a swap rollback (two renames back), and the end of the old databases it keeps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from services import backups as catalogue
from services import database, log_context, provenance, swap
from services.backups import Backup
from services.bundle import Services
from services.environments import Environment, Strategy
from services.errors import RollbackError
from services.events import Listener, Step
from services.provenance import BackupKind
from services.run_store import ACTIVE, RunRecord, RunStatus
from services.workflow import (
    Execution,
    RollbackPlan,
    RollbackResult,
    StepRecorder,
    collect_result,
    describe_state,
    finish_run,
    target_for,
)


def changed_live_data(run: RunRecord) -> bool:
    """Did this run leave the live database different from before it (net of its own
    compensation)? Runs that changed nothing are passed over when looking for what to undo."""
    journal = run.journal
    if run.kind == "undo":
        return run.status is RunStatus.SUCCEEDED or journal.get("swap_back") == "done"
    if not journal:  # recorded before runs kept a journal
        return run.status is RunStatus.SUCCEEDED
    if journal.get("cutover") == "done" or "swap_back" in journal:
        return journal.get("swap_back") != "done"
    return journal.get("restore") == "committed" and journal.get("undo_restore") != "committed"


def _old_database(run: RunRecord) -> str | None:
    result = run.result or {}
    name = result.get("old_database")
    if not name or result.get("old_database_dropped") or result.get("undone_by"):
        return None
    return str(name)


async def undoable_run(
    services: Services, environment_name: str, *, run_id: str | None = None
) -> RunRecord:
    """The run an undo will revert: the one named, or the environment's last run that
    changed its data. Either must be a swap whose old database is still kept, and the
    last to have changed the data; otherwise a clear refusal, never an older run's database."""
    environment = services.environment(environment_name)
    recent = await services.store.recent_runs(environment.name, 50)
    latest = next((r for r in recent if r.status not in ACTIVE and changed_live_data(r)), None)
    if run_id is not None:
        named = await services.store.get(run_id)
        if named.environment != environment.name:
            raise RollbackError(f"Run {run_id} is not a rollback of {environment.name}.")
        if latest is not None and latest.id != named.id:
            raise RollbackError(
                f"Run {run_id} cannot be undone: run {latest.id} changed {environment.name}'s "
                "data after it (undo that one first)."
            )
        latest = named
    if latest is None or latest.kind == "undo":
        raise RollbackError(
            f"Nothing to undo for {environment.name}: no rollback changed its data since the "
            "last undo."
        )
    if _old_database(latest) is None:
        raise RollbackError(
            f"Run {latest.id} of {environment.name} kept no old database to swap back "
            "(in-place rollbacks are undone by rolling back to their safety backup; an old "
            "database is dropped after keep_old_database_hours)."
        )
    return latest


async def undo_rollback(
    services: Services,
    environment_name: str,
    *,
    requested_by: str,
    listener: Listener,
    run_id: str | None = None,
) -> RollbackResult:
    """Swap the pre-rollback database of exactly one run back: stop, two renames, start,
    health. `run_id`: the run to undo (default: the last one that changed the data)."""
    environment = services.environment(environment_name)
    original = await undoable_run(services, environment.name, run_id=run_id)
    target = target_for(services, environment)
    old = _old_database(original)
    assert old is not None and original.result is not None
    if not await swap.database_exists(target, old):
        raise RollbackError(f"The old database {old} of run {original.id} no longer exists.")
    await services.runtime.ping(environment.workload)
    run_record = await services.store.create_run(
        environment=environment.name,
        kind="undo",
        requested_by=requested_by,
        status=RunStatus.APPROVED,
        plan={
            "undo_of": original.id,
            "old_database": old,
            "cutover_mode": environment.cutover_mode.value,
        },
        strategy=Strategy.SWAP.value,
    )
    run_id = run_record.id
    names = swap.SwapNames.for_undo(target.name, run_id, old)
    plan = await _undo_plan(services, environment, original)
    recorder = StepRecorder(services, run_id, listener)
    run = Execution(services, plan, recorder)
    result = RollbackResult(
        run_id=run_id,
        ok=False,
        strategy=Strategy.SWAP.value,
        cutover_mode=environment.cutover_mode.value,
    )
    async with (
        log_context.run_scope(run_id, environment.name),
        services.store.lease(run_id, owner=services.owner) as lease,
    ):
        await services.store.transition(
            run_id, to=RunStatus.RUNNING, expect=(RunStatus.APPROVED,), owner=lease.owner
        )
        try:
            await run.hold()
            async with recorder.step(Step.SWAP_BACK) as record:
                await recorder.journal(
                    Step.SWAP_BACK,
                    swap_back="started",
                    undo_of=original.id,
                    live_database=names.live,
                    incoming=names.old,
                    aside=names.staging,
                )
                run.database_unavailable_seconds = await swap.swap_back(
                    target, names, names.staging
                )
                await recorder.journal(Step.SWAP_BACK, swap_back="done")
                record.message = (
                    f"{names.live} holds the pre-rollback data of run {original.id} again; the "
                    f"rolled-back one is kept as {names.staging}"
                )
            await services.store.update(
                original.id, result={**original.result, "undone_by": run_id}
            )
            await run.release()
            await run.check_health()
            if run.down_since is not None:
                result.downtime_seconds = time.monotonic() - run.down_since
            result.ok = True
        except Exception as failure:  # whatever failed, restart what was stopped
            result.error = str(failure)
        recorder.best_effort = True  # from here on, reporting must not stop the way back
        result.old_database = names.staging if await _exists(target, names.staging) else None
        if result.old_database is not None:
            result.keep_old_until = datetime.now(UTC) + timedelta(
                hours=environment.keep_old_database_hours
            )
        restarted = await run.restart_stopped()
        state = await describe_state(run)
        swapped = result.old_database is not None
        verdict = (
            f"{environment.name} is back on the data from before run {original.id}"
            if swapped
            else f"undo failed before the swap; {environment.name}'s data is unchanged"
        )
        if not result.ok and swapped:
            verdict += " but the undo did not finish"
        result.environment_state = "; ".join(p for p in (verdict, restarted, state) if p)
        collect_result(result, recorder, run)
        await finish_run(services, run_id, result)
        return result


async def _exists(target: database.DatabaseTarget, name: str) -> bool:
    try:
        return await swap.database_exists(target, name)
    except RollbackError:
        return False


async def _undo_plan(
    services: Services, environment: Environment, original: RunRecord
) -> RollbackPlan:
    """A plan-shaped description of the undo, for the shared execution steps."""
    containers = await services.runtime.containers(environment.workload)
    now = datetime.now(UTC)
    backup_name = original.backup_name or "the backup"
    return RollbackPlan(
        environment=environment,
        backup=Backup(backup_name, environment.backups_dir / backup_name, 0, now),
        archive=catalogue.ArchiveContents("", 0, ()),
        containers=tuple(containers),
        safety_backup=environment.backups_dir / database.safety_backup_name(now),
        planned_at=now,
        strategy=Strategy.SWAP,
        strategy_note="undo of a swap",
        cutover_mode=environment.cutover_mode,  # a swap: every mode applies
    )


async def expire_old_databases(services: Services) -> list[str]:
    """Drop the old databases kept past their time (their dump is in the backups folder),
    and staging databases whose run is over (left by a process that stopped)."""
    dropped: list[str] = []
    now = datetime.now(UTC)
    for environment in services.environments.values():
        target = target_for(services, environment)
        for staging, run_id in await swap.staging_databases(target):
            try:
                owner = await services.store.get(run_id)
            except RollbackError:
                continue  # not ours to judge
            if owner.status not in ACTIVE:
                await swap.drop_database(target, staging)
                dropped.append(staging)
        for run in await services.store.recent_runs(environment.name, 50):
            result = run.result or {}
            name, until = result.get("old_database"), result.get("keep_old_until")
            if not name or not until or result.get("old_database_dropped"):
                continue
            if datetime.fromisoformat(until) > now:
                continue
            if not result.get("safety_backup") and await swap.database_exists(target, name):
                old = target.on(name)
                dump = await database.dump_database(
                    old, environment.backups_dir / database.safety_backup_name(now)
                )
                await provenance.record_quietly(
                    services,
                    environment,
                    dump,
                    kind=BackupKind.OLD_DATABASE,
                    source=old,
                    run_id=run.id,
                )
                result = {**result, "safety_backup": str(dump.path)}
            await swap.drop_database(target, name)
            await services.store.update(run.id, result={**result, "old_database_dropped": True})
            await services.store.append_event(run.id, "old_database_dropped", detail={"name": name})
            dropped.append(name)
    return dropped
