"""Undo of a swap rollback (two renames back), and the end of the old databases it keeps."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from services import backups as catalogue
from services import database, swap
from services.backups import Backup
from services.bundle import Services
from services.environments import Environment, Strategy
from services.errors import RollbackError
from services.events import Listener, Step
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


async def undoable_run(services: Services, environment_name: str) -> RunRecord | None:
    """The environment's last rollback, if it was a swap whose old database is still kept."""
    for run in await services.store.recent_runs(environment_name, 20):
        if run.kind == "undo" and run.status is RunStatus.SUCCEEDED:
            return None  # already undone
        if run.kind != "database" or run.status is not RunStatus.SUCCEEDED:
            continue
        result = run.result or {}
        if result.get("old_database") and not result.get("old_database_dropped"):
            return run
        return None
    return None


async def undo_rollback(
    services: Services, environment_name: str, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """Swap the pre-rollback database back: stop, two renames, start, health."""
    environment = services.environment(environment_name)
    original = await undoable_run(services, environment.name)
    target = target_for(services, environment)
    if original is None or original.result is None:
        raise RollbackError(
            f"Nothing to undo for {environment.name}: its last rollback kept no old database "
            "(in-place rollbacks are undone by rolling back to their safety backup)."
        )
    old = str(original.result["old_database"])
    if not await swap.database_exists(target, old):
        raise RollbackError(f"The old database {old} of run {original.id} no longer exists.")
    await services.runtime.ping()
    run_record = await services.store.create_run(
        environment=environment.name,
        kind="undo",
        requested_by=requested_by,
        status=RunStatus.RUNNING,
        plan={"undo_of": original.id, "old_database": old},
        strategy=Strategy.SWAP.value,
    )
    run_id = run_record.id
    names = swap.SwapNames.for_undo(target.name, run_id, old)
    plan = await _undo_plan(services, environment, original)
    recorder = StepRecorder(services, run_id, listener)
    run = Execution(services, plan, recorder)
    result = RollbackResult(run_id=run_id, ok=False, strategy=Strategy.SWAP.value)
    lock = await services.store.hold(run_id)
    try:
        try:
            await run.stop()
            async with recorder.step(Step.SWAP_BACK) as record:
                run.database_unavailable_seconds = await swap.swap_back(
                    target, names, names.staging
                )
                record.message = (
                    f"{names.live} holds the pre-rollback data again; the rolled-back one is "
                    f"kept as {names.staging}"
                )
            await run.start()
            await run.check_health()
            if run.down_since is not None:
                result.downtime_seconds = time.monotonic() - run.down_since
            result.ok = True
            result.old_database = names.staging
            result.keep_old_until = datetime.now(UTC) + timedelta(
                hours=environment.keep_old_database_hours
            )
            await services.store.update(
                original.id, result={**original.result, "undone_by": run_id}
            )
        except Exception as failure:  # whatever failed, restart what was stopped
            result.error = str(failure)
        restarted = await run.restart_stopped()
        state = await describe_state(run)
        verdict = (
            f"{environment.name} is back on its pre-rollback data" if result.ok else "undo failed"
        )
        result.environment_state = "; ".join(p for p in (verdict, restarted, state) if p)
        collect_result(result, recorder, run)
        await finish_run(services, run_id, result)
        return result
    finally:
        await asyncio.shield(services.store.release(lock, run_id))


async def _undo_plan(
    services: Services, environment: Environment, original: RunRecord
) -> RollbackPlan:
    """A plan-shaped description of the undo, for the shared execution steps."""
    containers = await services.runtime.containers(environment.compose_project)
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
                result = {**result, "safety_backup": str(dump.path)}
            await swap.drop_database(target, name)
            await services.store.update(run.id, result={**result, "old_database_dropped": True})
            await services.store.append_event(run.id, "old_database_dropped", detail={"name": name})
            dropped.append(name)
    return dropped
