"""Typed events a run emits, for whoever renders it (the terminal, Slack) and for the audit log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol


class Step(StrEnum):
    PREFLIGHT = "preflight"
    STOP = "stop"
    SAFETY_BACKUP = "safety_backup"
    RESTORE = "restore"
    START = "start"
    HEALTH = "health"
    # Compensating steps, run only after a failure.
    UNDO_RESTORE = "undo_restore"
    RESTART = "restart"
    # The swap strategy.
    PREPARE = "prepare"
    CUTOVER = "cutover"
    ANALYZE = "analyze"
    SWAP_BACK = "swap_back"
    ARCHIVE_OLD = "archive_old"
    # The pause cut-over mode (also on the way back after a failure).
    PAUSE = "pause"
    UNPAUSE = "unpause"
    # Code rollback (and the code half of a full rollback).
    PUSH = "push"
    DEPLOY = "deploy"


STEP_LABELS: dict[Step, str] = {
    Step.PREFLIGHT: "Pre-flight checks",
    Step.STOP: "Stop containers",
    Step.SAFETY_BACKUP: "Safety backup",
    Step.RESTORE: "Restore database",
    Step.START: "Start containers",
    Step.HEALTH: "Health checks",
    Step.UNDO_RESTORE: "Put the pre-rollback database back",
    Step.RESTART: "Start containers again",
    Step.PREPARE: "Restore into a staging database",
    Step.CUTOVER: "Swap the databases",
    Step.ANALYZE: "Refresh planner statistics",
    Step.SWAP_BACK: "Swap the old database back",
    Step.ARCHIVE_OLD: "Dump the old database to the backups folder",
    Step.PAUSE: "Pause containers",
    Step.UNPAUSE: "Thaw containers",
    Step.PUSH: "Revert the commits and push",
    Step.DEPLOY: "Wait for the version endpoint to report the revert",
}

EXECUTE_STEPS = (Step.STOP, Step.SAFETY_BACKUP, Step.RESTORE, Step.START, Step.HEALTH)
SWAP_STEPS = (Step.PREPARE, Step.STOP, Step.CUTOVER, Step.START, Step.HEALTH, Step.ARCHIVE_OLD)
UNDO_STEPS = (Step.STOP, Step.SWAP_BACK, Step.START, Step.HEALTH)


def planned_steps(strategy: str | None, cutover_mode: str | None = None) -> tuple[Step, ...]:
    """The steps a run of this strategy and cut-over mode goes through, in order."""
    steps = SWAP_STEPS if strategy == "swap" else EXECUTE_STEPS
    if cutover_mode == "pause":
        paused = {Step.STOP: Step.PAUSE, Step.START: Step.UNPAUSE}
        return tuple(paused.get(s, s) for s in steps)
    if cutover_mode == "keep":
        return tuple(s for s in steps if s not in (Step.STOP, Step.START))
    return steps


def expected_steps(
    kind: str, strategy: str | None, cutover_mode: str | None = None, *, waits_for_version: bool
) -> tuple[Step, ...]:
    """The steps a run of this kind shows before they happen (a full rollback: the database
    half without its own health check, then the code half, then one health check)."""
    code = (Step.PUSH, *((Step.DEPLOY,) if waits_for_version else ()), Step.HEALTH)
    if kind == "code":
        return code
    database = planned_steps(strategy, cutover_mode)
    if kind != "full":
        return database
    before_health = database[: database.index(Step.HEALTH)]
    return (*before_health, *code, *database[database.index(Step.HEALTH) + 1 :])


class EventKind(StrEnum):
    STARTED = "step_started"
    PROGRESS = "step_progress"
    FINISHED = "step_finished"
    FAILED = "step_failed"


@dataclass(frozen=True)
class StepEvent:
    run_id: str
    step: Step
    kind: EventKind
    message: str = ""
    seconds: float | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def label(self) -> str:
        return STEP_LABELS[self.step]


Listener = Callable[[StepEvent], Awaitable[None]]


async def ignore(event: StepEvent) -> None:
    """A listener for callers that only want the result."""


class RunObserver(Protocol):
    """Watches runs from outside (the bot's metrics): each step event, the approval that
    lets a run start, each run's end. Called inline: it never waits on anything slow."""

    async def step(self, event: StepEvent) -> None: ...

    async def approved(self, run_id: str) -> None: ...

    async def finished(self, run_id: str) -> None: ...


class NoObserver:
    async def step(self, event: StepEvent) -> None:
        pass

    async def approved(self, run_id: str) -> None:
        pass

    async def finished(self, run_id: str) -> None:
        pass
