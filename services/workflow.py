"""The database rollback: a read-only plan, then the runbook's steps with their compensations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services import (
    approved_copy,
    cutover_modes,
    database,
    log_context,
    log_excerpts,
    provenance,
    swap,
)
from services import backups as catalogue
from services.approved_copy import ApprovedCopy
from services.backups import ArchiveContents, Backup
from services.bundle import Services
from services.containers import Container, ContainerOutcome
from services.database import DatabaseTarget
from services.environments import CutoverMode, Environment, Strategy
from services.errors import (
    ContainerError,
    DeadlineExceeded,
    NoContainers,
    PreparationFailed,
    RestoreFailed,
    RollbackError,
    RunConflict,
)
from services.events import EventKind, Listener, Step, StepEvent
from services.health import HealthReport, run_health_checks
from services.pgtools import PgTools, ToolChoice, choose_tools
from services.run_store import RunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollbackPlan:
    """What a database rollback will do; built without changing anything."""

    environment: Environment
    backup: Backup
    archive: ArchiveContents
    containers: tuple[Container, ...]
    safety_backup: Path
    planned_at: datetime
    strategy: Strategy = Strategy.IN_PLACE  # the one that will run (after the room check)
    strategy_note: str = ""
    # No room for two copies: empty the database first (the safety backup covers it).
    wipe_first: bool = False
    # The approved bytes (set by approvals.bind_plan): what every restore reads.
    approved: ApprovedCopy | None = None
    tools: ToolChoice | None = None  # the client tools chosen for this server and dump
    # What the containers go through (the configured mode, unless the strategy forbids it).
    cutover_mode: CutoverMode = CutoverMode.STOP
    mode_note: str = ""  # why it is not the configured mode

    @property
    def backup_age_seconds(self) -> float:
        return self.backup.age_seconds(self.planned_at)

    @property
    def application_sees(self) -> str:
        sees = cutover_modes.application_sees(
            self.strategy, self.cutover_mode, self.environment.stop_timeout_seconds
        )
        return f"{sees} ({self.mode_note})" if self.mode_note else sees

    def summary(self) -> dict[str, Any]:
        """Plain data for the run store and the audit log (no secrets)."""
        return {
            "environment": self.environment.name,
            "compose_project": self.environment.compose_project,
            "workload": self.environment.workload_description,
            "database": self.environment.database_display,
            "backup": self.backup.name,
            "backup_size_bytes": self.backup.size_bytes,
            "backup_created_at": self.backup.created_at.isoformat(),
            "backup_notes": self.backup.notes(self.planned_at),
            "tables_in_backup": len(self.archive.tables),
            "containers": [c.name for c in self.containers],
            "safety_backup": self.safety_backup.name,
            "strategy": self.strategy.value,
            "strategy_note": self.strategy_note,
            "cutover_mode": self.cutover_mode.value,
            "application_sees": self.application_sees,
            "pg_tools": self.tools.describe() if self.tools else None,
        }


@dataclass
class StepRecord:
    step: Step
    ok: bool
    seconds: float
    message: str = ""


@dataclass
class RollbackResult:
    run_id: str
    ok: bool
    steps: list[StepRecord] = field(default_factory=list)
    health: HealthReport | None = None
    safety_backup: Backup | None = None
    error: str | None = None
    # One sentence a responder can act on: where the environment stands now.
    environment_state: str = ""
    downtime_seconds: float | None = None  # containers stopped → health checks passing
    database_unavailable_seconds: float | None = None
    strategy: str = Strategy.IN_PLACE.value
    cutover_mode: str = CutoverMode.STOP.value
    old_database: str | None = None  # swap: the pre-rollback database, kept for undo
    keep_old_until: datetime | None = None
    backup_sha256: str | None = None  # the bytes that were restored (the approved copy's)
    # Code and full rollbacks (services/code_rollback.py, full_rollback.py): what was pushed,
    # each half's state in one sentence, and what the message offers next (Action values).
    code: dict[str, Any] | None = None
    halves: dict[str, str] | None = None
    follow_ups: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            **({"code": self.code} if self.code is not None else {}),
            **({"halves": self.halves} if self.halves is not None else {}),
            **({"follow_ups": list(self.follow_ups)} if self.follow_ups else {}),
            "ok": self.ok,
            "error": self.error,
            "environment_state": self.environment_state,
            "safety_backup": str(self.safety_backup.path) if self.safety_backup else None,
            "downtime_seconds": self.downtime_seconds,
            "database_unavailable_seconds": self.database_unavailable_seconds,
            "strategy": self.strategy,
            "cutover_mode": self.cutover_mode,
            "old_database": self.old_database,
            "keep_old_until": self.keep_old_until.isoformat() if self.keep_old_until else None,
            "backup_sha256": self.backup_sha256,
            "steps": [
                {
                    "step": s.step.value,
                    "ok": s.ok,
                    "seconds": round(s.seconds, 3),
                    "message": s.message,
                }
                for s in self.steps
            ],
            "health": [
                {"name": r.name, "ok": r.ok, "detail": r.detail, "latency": r.latency_seconds}
                for r in (self.health.results if self.health else ())
            ],
        }


def target_for(
    services: Services, environment: Environment, tools: PgTools | None = None
) -> DatabaseTarget:
    return DatabaseTarget(
        environment.database_url.get_secret_value(),
        tools or services.tools,
        environment.timeouts,
    )


async def approved_source(plan: RollbackPlan) -> tuple[Backup, ApprovedCopy]:
    """The backup to restore, read from the approved copy after checking its checksum; a
    plan never bound to a checksum (the command line) has its copy taken here."""
    if plan.approved is None:
        copy = await approved_copy.take_copy(plan.backup, plan.environment.backups_dir)
    else:
        copy = plan.approved
        await approved_copy.verify(copy)
    return approved_copy.as_backup(plan.backup, copy), copy


async def plan_rollback(
    services: Services,
    environment_name: str,
    backup_name: str | None,
    *,
    own_run_id: str | None = None,
) -> RollbackPlan:
    """Pre-flight, read-only, under the environment's pre-flight deadline (a hung
    dependency must not hold the environment's planning lock forever)."""
    environment = services.environment(environment_name)
    limit = environment.timeouts.preflight_seconds
    try:
        async with asyncio.timeout(limit):
            return await _plan_rollback(services, environment, backup_name, own_run_id)
    except TimeoutError:
        raise DeadlineExceeded(f"the pre-flight of {environment.name}", limit) from None


async def _plan_rollback(
    services: Services,
    environment: Environment,
    backup_name: str | None,
    own_run_id: str | None,
) -> RollbackPlan:
    """The backup, the engine, the containers, the database, client tools that suit both
    the server and the dump, and (in place) the whole dump read through.

    `own_run_id`: the run this plan is for, already recorded (awaiting approval), which is
    not a conflict with itself.
    """
    backup = await catalogue.resolve_backup(environment, backup_name)
    await services.runtime.ping(environment.workload)
    containers = await services.runtime.containers(environment.workload)
    if not containers:
        raise NoContainers(environment.workload_description)
    target = target_for(services, environment)
    await database.ping(target)
    tools = await choose_tools(
        services.tool_candidates,
        server_major=await database.server_major(target),
        archive=backup.path,
        timeout=environment.timeouts.preflight_seconds,
    )
    archive = await catalogue.inspect_archive(tools.tools, backup)
    active = await services.store.active_run(environment.name)
    if active is not None and active.id != own_run_id:
        raise RunConflict(environment.name, active.id, active.requested_by)
    now = datetime.now(UTC)
    safety = environment.backups_dir / database.safety_backup_name(now)
    strategy, note, wipe_first = await _choose_strategy(services, environment)
    if strategy is Strategy.SWAP and not tools.restores_directly:
        strategy = Strategy.IN_PLACE
        note = (
            f"in-place: client tools {tools.major} cannot restore into a PostgreSQL "
            f"{tools.server_major} database directly (install client tools "
            f"{tools.server_major} for the swap)"
        )
    if strategy is Strategy.IN_PLACE:
        # Under swap the staging restore reads it all before the stop; in place, only this.
        await database.verify_archive(
            tools.tools, backup, timeout=environment.timeouts.restore_seconds
        )
    note = f"{note}; {tools.describe()}"
    mode, mode_note = cutover_modes.effective_mode(environment.cutover_mode, strategy)
    return RollbackPlan(
        environment,
        backup,
        archive,
        tuple(containers),
        safety,
        now,
        strategy,
        note,
        wipe_first,
        tools=tools,
        cutover_mode=mode,
        mode_note=mode_note,
    )


async def _choose_strategy(
    services: Services, environment: Environment
) -> tuple[Strategy, str, bool]:
    """The configured strategy if the server has room for a second copy of the database
    (a swap holds two databases; a one-transaction restore holds old and new rows until
    COMMIT); otherwise in-place, emptying the database before restoring."""
    try:
        room = await swap.check_room(target_for(services, environment))
    except RollbackError as error:
        return Strategy.IN_PLACE, f"in-place: the server could not be inspected ({error})", False
    if room.free_bytes is not None and not room.ok:
        return Strategy.IN_PLACE, f"in-place, emptying the database first: {room.reason}", True
    if environment.strategy is Strategy.IN_PLACE:
        return Strategy.IN_PLACE, "in-place, as configured", False
    if not room.ok:
        return Strategy.IN_PLACE, f"in-place: {room.reason}", False
    return Strategy.SWAP, f"swap: {room.reason}", False


class StepRecorder:
    """Persists each step in the run store before it runs, then tells the listener."""

    def __init__(self, services: Services, run_id: str, listener: Listener) -> None:
        self.services = services
        self.run_id = run_id
        self.listener = listener
        self.steps: list[StepRecord] = []
        # On the way back after a failure, an unreachable run store must not stop the
        # compensation: it is recorded where possible and logged otherwise.
        self.best_effort = False

    async def _persist(self, step: Step, kind: str, detail: dict[str, object]) -> None:
        try:
            if kind == EventKind.STARTED.value:
                await self.services.store.update(self.run_id, current_step=step.value)
            await self.services.store.append_event(
                self.run_id, kind, step=step.value, detail=detail
            )
        except Exception:
            if not self.best_effort:
                raise
            log.exception("run %s: could not record %s of %s", self.run_id, kind, step)

    async def emit(self, event: StepEvent) -> None:
        log.info("%s %s", event.kind.value, event.message or "-")  # names run and step
        await self._persist(
            event.step, event.kind.value, {"message": event.message, "seconds": event.seconds}
        )
        try:
            await self.listener(event)
        except Exception:  # a broken display must never break the rollback
            log.exception("listener failed on %s", event)

    async def journal(self, step: Step, **facts: object) -> None:
        """Record what this step is about to change or has changed (see recovery)."""
        try:
            await self.services.store.record(self.run_id, step.value, **facts)
        except Exception:
            if not self.best_effort:
                raise
            log.exception("run %s: could not journal %s", self.run_id, facts)

    async def progress(self, step: Step, message: str) -> None:
        await self.emit(StepEvent(self.run_id, step, EventKind.PROGRESS, message))

    @contextlib.asynccontextmanager
    async def step(self, step: Step, done: str = "") -> AsyncIterator[StepRecord]:
        with log_context.step_scope(step.value):  # every line the step writes names it
            async with self._step(step, done) as record:
                yield record

    @contextlib.asynccontextmanager
    async def _step(self, step: Step, done: str) -> AsyncIterator[StepRecord]:
        await self.emit(StepEvent(self.run_id, step, EventKind.STARTED))
        record = StepRecord(step, True, 0.0, done)
        began = time.monotonic()
        try:
            yield record
        except BaseException as error:
            record.ok = False
            record.seconds = time.monotonic() - began
            record.message = (
                str(error) if not isinstance(error, asyncio.CancelledError) else ("interrupted")
            )
            self.steps.append(record)
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.emit(
                        StepEvent(
                            self.run_id, step, EventKind.FAILED, record.message, record.seconds
                        )
                    )
                )
            raise
        record.seconds = time.monotonic() - began
        self.steps.append(record)
        await self.emit(
            StepEvent(self.run_id, step, EventKind.FINISHED, record.message, record.seconds)
        )


async def health_step(
    services: Services,
    environment: Environment,
    target: DatabaseTarget,
    recorder: StepRecorder,
    step: Step = Step.HEALTH,
    *,
    seen: Callable[[HealthReport], None] | None = None,
) -> HealthReport:
    """The health checks as a step of the run; RollbackError when any fails (`seen` gets
    the report either way)."""
    async with recorder.step(step) as record:
        report = await run_health_checks(
            environment, session=services.http, runtime=services.runtime, database=target
        )
        if seen is not None:
            seen(report)
        passed = len(report.results) - len(report.failed)
        record.message = f"{passed}/{len(report.results)} passed"
        if not report.ok:
            # What the failing containers printed, for the thread (never raises).
            await log_excerpts.capture_and_record(
                services, environment, report.failed, run_id=recorder.run_id, during="health"
            )
            raise RollbackError(
                "Health checks failed: " + "; ".join(f"{r.name}: {r.detail}" for r in report.failed)
            )
    return report


def _tools(plan: RollbackPlan) -> PgTools | None:
    return plan.tools.tools if plan.tools else None


def _names(containers: Sequence[Container]) -> str:
    shown = ", ".join(c.name for c in containers[:5])
    return shown + (f" and {len(containers) - 5} more" if len(containers) > 5 else "")


def container_refs(containers: Sequence[Container]) -> list[dict[str, str | int]]:
    """Containers as the journal keeps them (id and name, each once; a Swarm service with
    the replica count a start must scale it back to)."""
    seen: dict[str, dict[str, str | int]] = {}
    for container in containers:
        ref: dict[str, str | int] = {"id": container.id, "name": container.name}
        if container.replicas is not None:
            ref["replicas"] = container.replicas
        seen.setdefault(container.id, ref)
    return list(seen.values())


class Execution:
    """The destructive part of one run, with what it changed so far (for compensation)."""

    def __init__(self, services: Services, plan: RollbackPlan, recorder: StepRecorder) -> None:
        self.services = services
        self.plan = plan
        self.env = plan.environment
        self.recorder = recorder
        self.target = target_for(services, plan.environment, _tools(plan))
        self.stopped: list[Container] = []
        self.paused: list[Container] = []  # the pause cut-over mode
        self.safety: Backup | None = None
        self.database_changed = False  # True once the restore may have committed
        self.swapped = False  # swap strategy: the staging database is live
        self.down_since: float | None = None
        self.database_unavailable_seconds: float | None = None
        self.health: HealthReport | None = None
        self.source = plan.backup  # in place: the approved copy, once verified
        # The deployed commit for the safety backup's provenance (never raises).
        self.commit: asyncio.Future[provenance.CommitAnswer] | None = None

    async def hold(self) -> None:
        """Take the application off the database for the cut-over, as the plan's mode says."""
        if self.plan.strategy is Strategy.IN_PLACE and self.commit is None:
            # Asked while the application still answers, alongside the stop and the dump.
            self.commit = asyncio.ensure_future(
                provenance.ask_deployed_commit(self.services, self.env)
            )
        if self.plan.cutover_mode is CutoverMode.STOP:
            await self.stop()
        elif self.plan.cutover_mode is CutoverMode.PAUSE:
            await self.pause()
        else:  # keep: untouched; the database goes away at the rename
            self.down_since = time.monotonic()

    async def release(self) -> None:
        """Bring the application back after the cut-over (kept running: nothing to do)."""
        if self.plan.cutover_mode is CutoverMode.STOP:
            await self.start()
        elif self.plan.cutover_mode is CutoverMode.PAUSE:
            await self.unpause()

    async def stop(self) -> None:
        def stop(running: list[Container]) -> Awaitable[list[ContainerOutcome]]:
            return self.services.runtime.stop(running, self.env.stop_timeout_seconds)

        await self._take_down(Step.STOP, "stopping", self.stopped, stop, "stopped")

    async def pause(self) -> None:
        pause = self.services.runtime.pause
        await self._take_down(Step.PAUSE, "pausing", self.paused, pause, "paused")

    async def _take_down(
        self,
        step: Step,
        fact: str,
        held: list[Container],
        act: Callable[[list[Container]], Awaitable[list[ContainerOutcome]]],
        done: str,
    ) -> None:
        """Stop or pause the running containers, journalled first in `fact`."""
        async with self.recorder.step(step) as record:
            current = await self.services.runtime.containers(self.env.workload)
            running = [c for c in current if c.to_stop]
            # Before anything changes: whoever takes this run over brings exactly these back.
            await self.recorder.journal(step, **{fact: container_refs([*held, *running])})
            self.down_since = time.monotonic()
            outcomes = await act(running)
            # Added to, not replaced: after a failed start some are held already.
            changed = [o.container for o in outcomes if o.ok]
            held += changed
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise ContainerError(
                    f"Could not {step.value} "
                    + "; ".join(f"{o.container.name}: {o.error}" for o in failed)
                )
            idle = len(current) - len(running)
            idle_state = "already stopped" if step is Step.STOP else "not running"
            record.message = f"{len(changed)} {done}" + (f", {idle} {idle_state}" if idle else "")

    async def safety_backup(self) -> None:
        async with self.recorder.step(Step.SAFETY_BACKUP) as record:
            await self.recorder.journal(
                Step.SAFETY_BACKUP, safety_backup=str(self.plan.safety_backup)
            )
            # Sessions left on the database (and their locks) would stall the dump while
            # the application is down: end them first (issue 7).
            ended = await database.terminate_sessions(self.target)
            if ended:
                await self.recorder.progress(Step.SAFETY_BACKUP, f"ended {ended} other session(s)")
            self.safety = await database.dump_database(
                self.target,
                self.plan.safety_backup,
                compression=self.env.safety_backup_compression,
            )
            await self.recorder.journal(Step.SAFETY_BACKUP, safety_backup_done=True)
            record.message = f"{self.safety.name} ({self.safety.size_bytes / 1e6:.1f} MB)"
            record.message += await self.sidecar(self.safety, provenance.BackupKind.SAFETY)

    async def sidecar(
        self, dump: Backup, kind: provenance.BackupKind, database_name: str | None = None
    ) -> str:
        """The dump's provenance (of `database_name`, default the live one); a failure is a
        note for the step's message, never the run's failure."""
        source = self.target.on(database_name) if database_name else self.target
        note = await provenance.record_quietly(
            self.services,
            self.env,
            dump,
            kind=kind,
            source=source,
            run_id=self.recorder.run_id,
            commit=self.commit,
        )
        return f"; {note}" if note else ""

    def _journal_transaction(self, step: Step, prefix: str) -> database.TransactionHook:
        async def hook(label: str, xid: int) -> None:
            await self.recorder.journal(step, **{f"{prefix}{label}_xid": xid})

        return hook

    async def restore(self) -> None:
        async with self.recorder.step(Step.RESTORE) as record:
            ended = await database.terminate_sessions(self.target)
            if ended:
                await self.recorder.progress(Step.RESTORE, f"ended {ended} other session(s)")
            await self.recorder.progress(Step.RESTORE, f"restoring {self.plan.backup.name}")
            began = time.monotonic()
            await self.recorder.journal(
                Step.RESTORE, restore="started", wipe_first=self.plan.wipe_first
            )
            try:
                await database.restore_in_place(
                    self.target,
                    self.source,
                    wipe_first=self.plan.wipe_first,
                    on_transaction=self._journal_transaction(Step.RESTORE, ""),
                )
            except RestoreFailed as error:
                self.database_changed = error.may_have_committed
                raise
            except BaseException:
                self.database_changed = True  # interrupted: we cannot know, so assume it did
                raise
            self.database_changed = True
            self.database_unavailable_seconds = time.monotonic() - began
            await self.recorder.journal(Step.RESTORE, restore="committed")
            record.message = f"{self.plan.backup.name} restored"

    async def cut_over(self, names: swap.SwapNames) -> None:
        async with self.recorder.step(Step.CUTOVER) as record:
            # Connections to the live database are refused during the renames; recovery
            # allows them again and reads which names exist to know if they happened.
            await self.recorder.journal(Step.CUTOVER, cutover="started", **names.facts())
            seconds = await swap.cut_over(self.target, names)
            self.swapped = True
            await self.recorder.journal(Step.CUTOVER, cutover="done")
            self.database_unavailable_seconds = seconds
            record.message = (
                f"{names.live} is the backup now; the old one is kept as {names.old} "
                f"({seconds * 1000:.0f} ms without a database)"
            )

    async def start(self, step: Step = Step.START) -> None:
        await self._bring_back(step, self.stopped, self.services.runtime.start, "start", "started")

    async def unpause(self) -> None:
        await self._bring_back(
            Step.UNPAUSE, self.paused, self.services.runtime.unpause, "thaw", "thawed"
        )

    async def _bring_back(
        self,
        step: Step,
        held: list[Container],
        act: Callable[[list[Container]], Awaitable[list[ContainerOutcome]]],
        verb: str,
        done: str,
    ) -> None:
        """Start or thaw what this run held; those that failed stay in `held`."""
        async with self.recorder.step(step) as record:
            outcomes = await act(list(held))
            failed = [o for o in outcomes if not o.ok]
            held[:] = [o.container for o in failed]
            if failed:
                raise ContainerError(
                    f"Could not {verb} "
                    + "; ".join(f"{o.container.name}: {o.error}" for o in failed)
                )
            record.message = f"{len(outcomes)} {done}"

    async def check_health(self, step: Step = Step.HEALTH) -> HealthReport:
        def keep(report: HealthReport) -> None:
            self.health = report

        return await health_step(
            self.services, self.env, self.target, self.recorder, step, seen=keep
        )

    async def analyze(self) -> None:
        """Statistics after an in-place restore, while the application is already back."""
        async with self.recorder.step(Step.ANALYZE):
            await database.analyze(self.target)

    async def restart_stopped(self) -> str | None:
        """On the way back: thaw what this run paused, start what it stopped; a note for
        what could not be."""
        notes = []
        if self.paused:
            try:
                await self.unpause()
            except Exception as error:  # reported, whatever it is: this is the way back
                notes.append(f"CONTAINERS STILL PAUSED: {_names(self.paused)} ({error})")
        if self.stopped:
            try:
                await self.start(Step.RESTART)
            except Exception as error:  # reported, whatever it is: this is the way back
                notes.append(f"CONTAINERS STILL STOPPED: {_names(self.stopped)} ({error})")
        return "; ".join(notes) or None

    async def compensate(self, failure: BaseException) -> str:
        """Put back what was changed and start what was stopped; returns the state sentence."""
        self.recorder.best_effort = True
        notes: list[str] = []
        if self.database_changed and self.safety is not None:
            try:
                async with self.recorder.step(Step.UNDO_RESTORE) as record:
                    await database.wait_until_ready(self.target, 120)
                    await database.terminate_sessions(self.target)
                    await self.recorder.journal(Step.UNDO_RESTORE, undo_restore="started")
                    await database.restore_in_place(
                        self.target,
                        self.safety,
                        on_transaction=self._journal_transaction(Step.UNDO_RESTORE, "undo_"),
                    )
                    await self.recorder.journal(Step.UNDO_RESTORE, undo_restore="committed")
                    await database.analyze(self.target)
                    record.message = f"{self.safety.name} restored"
                self.database_changed = False
                notes.append(f"database back on its pre-rollback data ({self.safety.name})")
            except Exception as error:  # reported, whatever it is: this is the way back
                notes.append(
                    f"DATABASE NOT PUT BACK ({error}); the pre-rollback data is in "
                    f"{self.safety.path}"
                )
        elif isinstance(failure, RestoreFailed):
            notes.append(
                "database unchanged: the restore ran in one transaction and was rolled back"
            )
        restarted = await self.restart_stopped()
        if restarted:
            notes.append(restarted)
        return "; ".join(notes)

    async def undo_swap(self, names: swap.SwapNames) -> str:
        """After a failed start or health check: the old database back, containers up."""
        self.recorder.best_effort = True
        notes: list[str] = []
        try:
            await self.hold()  # what runs on the rolled-back database, if anything
            async with self.recorder.step(Step.SWAP_BACK) as record:
                await self.recorder.journal(Step.SWAP_BACK, swap_back="started")
                await swap.swap_back(self.target, names, names.staging)
                self.swapped = False
                await self.recorder.journal(Step.SWAP_BACK, swap_back="done")
                record.message = f"{names.live} is the pre-rollback database again"
            notes.append("undone automatically: the database is back on its pre-rollback data")
            await asyncio.shield(swap.drop_database(self.target, names.staging))
        except Exception as error:  # reported, whatever it is: this is the way back
            notes.append(f"UNDO FAILED ({error}); the pre-rollback database is {names.old}")
        restarted = await self.restart_stopped()
        if restarted:
            notes.append(restarted)
        return "; ".join(notes)


@dataclass
class Preparation:
    """Work done before approval: for a swap, the staging database and the data-loss preview."""

    names: swap.SwapNames | None
    loss: list[swap.TableLoss] = field(default_factory=list)
    note: str = ""
    sha256: str | None = None  # of the bytes restored into the staging database


def _prepared_for(plan: RollbackPlan) -> str:
    """What a staging database was restored from: other bytes need a new one."""
    if plan.approved is not None:
        return plan.approved.sha256
    return f"{plan.backup.name}|{plan.backup.identity}"


# While a run waits for approval, its preparation owns it; these statuses keep it going.
_PREPARING = (RunStatus.PENDING, RunStatus.AWAITING_APPROVAL, RunStatus.APPROVED)


async def _prepare_owned(
    services: Services, plan: RollbackPlan, run_id: str, recorder: StepRecorder
) -> Preparation:
    """Restore the backup into a staging database and preview the data loss; the caller
    owns the run. Raises PreparationFailed: a swap never falls back to in place by itself."""
    target = target_for(services, plan.environment, _tools(plan))
    names = swap.SwapNames.for_run(target.name, run_id)
    await recorder.journal(
        Step.PREPARE, prepare="started", prepared_for=_prepared_for(plan), **names.facts()
    )
    try:
        async with recorder.step(Step.PREPARE) as record:
            source, copy = await approved_source(plan)
            await recorder.journal(Step.PREPARE, approved_sha256=copy.sha256)
            await swap.restore_into_staging(
                target,
                source,
                names,
                jobs=plan.environment.restore_jobs,
                entries=plan.archive.entries,
                progress=lambda message: recorder.progress(Step.PREPARE, message),
            )
            limits = swap.PreviewLimits(
                exact_bytes=int(plan.environment.preview_exact_mb * (1 << 20)),
                timeout_seconds=plan.environment.preview_timeout_seconds,
            )
            loss = await swap.preview_data_loss(target, names, limits)
            removed = sum(max(t.removed, 0) for t in loss)
            about = "about " if any(t.estimated and t.removed for t in loss) else ""
            record.message = (
                f"staging database ready; {about}{removed} row(s) will leave the live data"
            )
            await services.store.append_event(
                run_id,
                "data_loss_preview",
                detail={
                    "tables": [
                        {
                            "table": t.table,
                            "live": t.live_rows,
                            "backup": t.backup_rows,
                            "estimated": t.estimated,
                        }
                        for t in loss
                    ]
                },
            )
    except RollbackError as error:
        await recorder.journal(Step.PREPARE, prepare="failed")
        raise PreparationFailed(
            f"Preparing the swap failed, so nothing was stopped and the live database is "
            f"unchanged ({error})"
        ) from error
    await recorder.journal(Step.PREPARE, prepare="done", prepared_sha256=copy.sha256)
    return Preparation(names, loss, plan.strategy_note, copy.sha256)


async def prepare_rollback(
    services: Services, plan: RollbackPlan, *, run_id: str, listener: Listener
) -> Preparation:
    """Non-destructive work that may start before approval (the application keeps running).

    The preparing process owns the run meanwhile (an approval handled elsewhere waits for
    it), and stops within a second when the run is rejected, cancelled or expires,
    whichever process records that. Raises PreparationFailed.
    """
    if plan.strategy is not Strategy.SWAP:
        return Preparation(None, note=plan.strategy_note)
    recorder = StepRecorder(services, run_id, listener)
    async with (
        log_context.run_scope(run_id, plan.environment.name),
        services.store.lease(run_id, owner=services.owner),
    ):
        work = asyncio.create_task(_prepare_owned(services, plan, run_id, recorder))
        while not work.done():
            await asyncio.wait({work}, timeout=0.5)
            if work.done():
                break
            run = await services.store.get(run_id)
            if run.status not in _PREPARING:
                work.cancel()  # pg_restore is killed and the staging database dropped
                with contextlib.suppress(asyncio.CancelledError, RollbackError):
                    await work
                await recorder.journal(Step.PREPARE, prepare="cancelled")
                return Preparation(None, note=f"the run was {run.status.value}")
        return work.result()


async def discard_preparation(services: Services, plan: RollbackPlan, prep: Preparation) -> None:
    """A rejected, cancelled or expired run leaves no staging database behind."""
    if prep.names is not None:
        await swap.drop_database(target_for(services, plan.environment), prep.names.staging)


async def discard_staging(services: Services, run_id: str) -> None:
    """Drop the staging database of a run that will not happen, once its preparation (in
    whichever process) has seen the run end and stopped."""
    run = await services.store.get(run_id)
    names = swap.SwapNames.from_facts(run.journal)
    environment = services.environments.get(run.environment)
    if names is None or environment is None:
        return
    try:
        async with services.store.lease(run_id, owner=services.owner, wait_seconds=30):
            await swap.drop_database(target_for(services, environment), names.staging)
    except RollbackError as error:  # the sweeper drops orphans later
        log.warning("run %s: staging database not dropped: %s", run_id, error)


async def _ensure_prepared(
    services: Services, plan: RollbackPlan, run_id: str, recorder: StepRecorder
) -> Preparation:
    """The staging database this run prepared for this very plan, or a new one."""
    if plan.strategy is not Strategy.SWAP:
        return Preparation(None, note=plan.strategy_note)
    journal = (await services.store.get(run_id)).journal
    names = swap.SwapNames.from_facts(journal)
    target = target_for(services, plan.environment)
    if (
        names is not None
        and journal.get("prepare") == "done"
        and journal.get("prepared_for") == _prepared_for(plan)
        and await swap.database_exists(target, names.staging)
    ):
        sha256 = journal.get("prepared_sha256")
        return Preparation(names, note=plan.strategy_note, sha256=str(sha256 or "") or None)
    return await _prepare_owned(services, plan, run_id, recorder)


# Between the containers' start and the end of the run: checks what the run did and says
# whether the database half stands (its old database is then archived). The default is the
# health check; a full rollback runs its code half first (services/full_rollback.py).
Verify = Callable[[Execution, swap.SwapNames | None, RollbackResult], Awaitable[bool]]


async def execute_rollback(
    services: Services,
    plan: RollbackPlan,
    *,
    run_id: str,
    listener: Listener,
    expect: tuple[RunStatus, ...] = (RunStatus.APPROVED, RunStatus.RUNNING),
    wait_seconds: float = 3600.0,
    report: Callable[[], Awaitable[None]] | None = None,
    verify: Verify | None = None,
) -> RollbackResult:
    """The destructive steps with their compensations; always reports where things stand.

    in-place: stop, safety backup, restore (one transaction), start, health, ANALYZE.
    swap: (prepare), stop, cut over (two renames), start, health, dump the old database;
    a failed start or health check swaps the old database back by itself.

    The run is owned by this process throughout (a lease in the run store; waiting up to
    `wait_seconds` for a preparation still running elsewhere), moves from one of `expect`
    to running by compare-and-set, and journals each change before making it.
    """
    async with owned_run(
        services,
        run_id,
        plan.environment.name,
        expect=expect,
        wait_seconds=wait_seconds,
        report=report,
    ):
        return await _execute_owned(services, plan, run_id, listener, verify or verify_health)


@contextlib.asynccontextmanager
async def owned_run(
    services: Services,
    run_id: str,
    environment: str,
    *,
    expect: tuple[RunStatus, ...],
    wait_seconds: float = 0.0,
    report: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    """The run owned by this process (its lease), moved to running from one of `expect`,
    and reported at the end, still owned, whatever happened."""
    async with (
        log_context.run_scope(run_id, environment),
        services.store.lease(run_id, owner=services.owner, wait_seconds=wait_seconds) as lease,
    ):
        if not await services.store.transition(
            run_id, to=RunStatus.RUNNING, expect=expect, owner=lease.owner
        ):
            run = await services.store.get(run_id)
            raise RunConflict(environment, run_id, f"nobody: it is {run.status.value}")
        try:
            yield
        finally:
            if report is not None:
                # Still owned while reporting: a process that finds the run finished,
                # unreported and unowned knows its reporter died (see unreported_runs).
                try:
                    await asyncio.shield(report())
                except Exception:
                    log.exception("run %s: the report failed", run_id)


async def _execute_owned(
    services: Services, plan: RollbackPlan, run_id: str, listener: Listener, verify: Verify
) -> RollbackResult:
    result = RollbackResult(
        run_id=run_id,
        ok=False,
        strategy=plan.strategy.value,
        cutover_mode=plan.cutover_mode.value,
    )
    try:
        return await _execute_steps(services, plan, run_id, listener, result, verify)
    finally:
        with contextlib.suppress(Exception):  # a leftover copy is the sweep's
            await asyncio.shield(
                approved_copy.discard_copy(services, plan.environment, result.backup_sha256)
            )


async def _execute_steps(
    services: Services,
    plan: RollbackPlan,
    run_id: str,
    listener: Listener,
    result: RollbackResult,
    verify: Verify,
) -> RollbackResult:
    recorder = StepRecorder(services, run_id, listener)
    run = Execution(services, plan, recorder)
    try:
        preparation = await _ensure_prepared(services, plan, run_id, recorder)
        if preparation.names is None:
            run.source, copy = await approved_source(plan)
            result.backup_sha256 = copy.sha256
        else:
            result.backup_sha256 = preparation.sha256
    except RollbackError as error:  # a failed preparation, a changed copy, a deadline
        result.error = str(error)
        result.environment_state = (
            f"{plan.environment.name} was not touched: nothing was stopped and the live "
            "database is unchanged"
        )
        collect_result(result, recorder, run)
        await finish_reported(services, run_id, result)
        return result
    # Whoever takes this run over removes the copy of these bytes with it.
    await recorder.journal(Step.PREFLIGHT, approved_sha256=result.backup_sha256)
    names = preparation.names
    try:
        await run.hold()
        if names is None:
            await run.safety_backup()
            await run.restore()
        else:
            await run.cut_over(names)
        await run.release()
    except (Exception, asyncio.CancelledError) as failure:
        # Whatever failed (ours, a library's, a cancellation), the way back runs.
        interrupted = isinstance(failure, asyncio.CancelledError)
        result.error = "interrupted" if interrupted else describe_error(failure)
        if not interrupted and not isinstance(failure, RollbackError | OSError):
            log.error("unexpected failure in run %s", run_id, exc_info=failure)
        # Compensation must finish even while being cancelled (Ctrl-C).
        if names is not None and run.swapped:
            notes = await asyncio.shield(run.undo_swap(names))
        else:
            notes = await asyncio.shield(run.compensate(failure))
            if names is not None:
                await asyncio.shield(_drop_quietly(run, names.staging))
                notes = "; ".join(
                    n for n in (notes, "database unchanged: nothing was renamed") if n
                )
        state = await asyncio.shield(describe_state(run))
        result.environment_state = "; ".join(p for p in (notes, state) if p)
        collect_result(result, recorder, run)
        await asyncio.shield(finish_reported(services, run_id, result))
        if interrupted:
            raise
        return result
    kept = await verify(run, names, result)
    # After the outcome is known, nothing may leave the run unfinished: these are extras.
    run.recorder.best_effort = True
    try:
        if names is None and run.database_changed:
            await run.analyze()
        elif names is not None and kept:
            await archive_old(run, names, result)
    except Exception as error:
        log.warning("run %s: after the rollback: %s", run_id, error)
    collect_result(result, recorder, run)
    await finish_reported(services, run_id, result)
    return result


async def verify_health(
    run: Execution, names: swap.SwapNames | None, result: RollbackResult
) -> bool:
    """The health checks decide; failing ones swap the old database back (swap) or are
    reported (in place). True when the rollback stands."""
    plan = run.plan
    try:
        await run.check_health()
        if run.down_since is not None:
            result.downtime_seconds = time.monotonic() - run.down_since
        result.ok = True
        result.environment_state = (
            f"{plan.environment.name} is running on {plan.backup.name}; health checks pass"
        )
    except Exception as failure:
        result.error = describe_error(failure)
        if names is not None:
            # The old database is intact and a rename away: go back by ourselves.
            notes = await run.undo_swap(names)
            state = await describe_state(run)
            result.environment_state = "; ".join(p for p in (notes, state) if p)
        else:
            # In place, going back is another full restore: the responders decide
            # (after a database-first full rollback the old code is expected to fail).
            safety = run.safety.name if run.safety else "the safety backup"
            state = await describe_state(run)
            result.environment_state = (
                f"{plan.environment.name} has {plan.backup.name} restored but health checks "
                f"FAIL; {state}; the pre-rollback data is in {safety} (roll back to it to undo)"
            )
    return result.ok


async def finish_reported(services: Services, run_id: str, result: RollbackResult) -> None:
    """Record the result; a run store that fails now is said in the state sentence."""
    try:
        await finish_run(services, run_id, result)
    except Exception as error:  # the state sentence matters more than the record
        log.exception("run %s: the result could not be recorded", run_id)
        result.environment_state += f" (not recorded in the run store: {error})"


async def _drop_quietly(run: Execution, name: str) -> None:
    try:
        await swap.drop_database(run.target, name)
    except RollbackError:
        log.warning("could not drop %s", name, exc_info=True)


async def archive_old(run: Execution, names: swap.SwapNames, result: RollbackResult) -> None:
    """Dump the old database beside the backups, so nothing is lost when it is dropped."""
    result.old_database = names.old
    result.keep_old_until = datetime.now(UTC) + timedelta(hours=run.env.keep_old_database_hours)
    try:
        async with run.recorder.step(Step.ARCHIVE_OLD) as record:
            await run.recorder.journal(Step.ARCHIVE_OLD, archive_old=str(run.plan.safety_backup))
            old = run.target.on(names.old)
            run.safety = await database.dump_database(old, run.plan.safety_backup)
            await run.recorder.journal(Step.ARCHIVE_OLD, archive_old_done=True)
            record.message = f"{run.safety.name} ({run.safety.size_bytes / 1e6:.1f} MB)"
            record.message += await run.sidecar(
                run.safety, provenance.BackupKind.OLD_DATABASE, names.old
            )
    except RollbackError as error:
        # The environment is fine and the old database itself is still there.
        log.warning("dumping the old database failed: %s", error)


def describe_error(error: BaseException) -> str:
    if isinstance(error, RollbackError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def collect_result(result: RollbackResult, recorder: StepRecorder, run: Execution) -> None:
    result.steps, result.safety_backup, result.health = recorder.steps, run.safety, run.health
    result.database_unavailable_seconds = run.database_unavailable_seconds


async def describe_state(run: Execution) -> str:
    try:
        containers = await run.services.runtime.containers(run.env.workload)
    except RollbackError as error:
        return f"container state unknown ({error})"
    down = [c for c in containers if not c.running]
    paused = [c for c in down if c.state == "paused"]
    if down:
        frozen = f" ({_names(paused)} paused)" if paused else ""
        return f"{run.env.name} is PARTLY DOWN: {_names(down)} not running{frozen}"
    return f"{run.env.name}: all {len(containers)} containers running"


async def finish_run(services: Services, run_id: str, result: RollbackResult) -> None:
    status = RunStatus.SUCCEEDED if result.ok else RunStatus.FAILED
    if not await services.store.update(
        run_id, status=status, result=result.summary(), expect=(RunStatus.RUNNING,)
    ):
        raise RollbackError(f"run {run_id} was taken over by another process meanwhile")
    await services.store.append_event(
        run_id, "finished", detail={"ok": result.ok, "state": result.environment_state}
    )


async def rollback_database(
    services: Services,
    plan: RollbackPlan,
    *,
    requested_by: str,
    listener: Listener,
) -> RollbackResult:
    """Record the run (one active run per environment) and execute it."""
    run = await services.store.create_run(
        environment=plan.environment.name,
        kind="database",
        requested_by=requested_by,
        # Confirmed on the command line: approved, and running once this process owns it.
        status=RunStatus.APPROVED,
        plan=plan.summary(),
        backup_name=plan.backup.name,
        strategy=plan.strategy.value,
    )
    return await execute_rollback(services, plan, run_id=run.id, listener=listener)
