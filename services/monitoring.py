"""Watching an environment after a successful rollback (the runbook's "After Rollback:
monitor the application"): its health checks every `monitor_interval_seconds` for
`monitor_minutes`, the contacts told at once when health degrades (the failing checks and
the failing containers' last log lines) and when it recovers, one line for the report at
the end.

The rollback run is finished (succeeded) and its environment free while it is watched: a
second rollback may start if things degrade, and starting ends the watch. The window is a
row in the run store (services/watch_store.py) with a lease; the process watching renews
it, a process that finds it free or expired (its watcher died) takes it over, exactly one
wins, and goes on until the same end. What the watch saw is in the run's events
(services/monitor_events.py), from which whoever takes over rebuilds its state.

Any rollback kind calls `open_watch(services, run_id=…)` once its run succeeded, then
`run_watch` where it runs its background work (the caller chooses: the bot's task set, or
the terminal with --watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services import log_context, log_excerpts
from services.bundle import Services
from services.environments import Environment
from services.health import CheckResult, run_health_checks
from services.log_excerpts import LogExcerpt
from services.monitor_events import (
    FailedCheck,
    MonitoringState,
    MonitorKind,
    Outcome,
    monitoring_state,
    outcome_of,
    report_line,
    started_detail,
)
from services.run_store import RunRecord, RunStatus
from services.watch_store import WatchRecord, WatchStore
from services.workflow import target_for

log = logging.getLogger(__name__)

# A round's checks are retried this long at most before health counts as degraded (one
# slow answer is not an incident; a minute of retries would hide one).
ROUND_SECONDS = 10.0
# Rollbacks are watched after they succeed; an undo puts back what was running before.
WATCHED_KINDS = ("database", "code", "full")
# Runs that stop the environment on purpose: the watch ends rather than alarm.
_TAKING_OVER = (RunStatus.APPROVED, RunStatus.RUNNING)


@dataclass(frozen=True)
class Watch:
    run_id: str
    environment: str
    started_at: datetime
    until: datetime
    interval_seconds: float

    @classmethod
    def of(cls, record: WatchRecord) -> Watch:
        return cls(
            record.run_id,
            record.environment,
            record.started_at,
            record.until,
            record.interval_seconds,
        )


@dataclass(frozen=True)
class MonitorEvent:
    """What the watch tells its listener (the Slack thread, the terminal)."""

    watch: Watch
    kind: MonitorKind
    failed: tuple[FailedCheck, ...] = ()
    excerpts: tuple[LogExcerpt, ...] = ()
    line: str = ""  # ENDED: the report's line
    degraded_seconds: float | None = None  # RECOVERED: how long it lasted
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


MonitorListener = Callable[[MonitorEvent], Awaitable[None]]


def lease_seconds(interval_seconds: float) -> float:
    """How long a watcher's lease lasts unrenewed: a dead watcher is replaced this soon."""
    return min(max(3 * interval_seconds, 2.0), 90.0)


def round_seconds(environment: Environment) -> float:
    return min(
        environment.health.deadline_seconds, ROUND_SECONDS, environment.monitor_interval_seconds
    )


def _store(services: Services) -> WatchStore:
    return WatchStore(services.store.pool)


async def open_watch(services: Services, *, run_id: str, watching: bool = True) -> Watch | None:
    """Open the monitoring window of a rollback that succeeded: from its end for its
    environment's `monitor_minutes` (None: 0 minutes, not a rollback that succeeded, or the
    window is over already). Ends the environment's earlier window, saying so. With
    `watching`, this process holds the lease and should `run_watch` at once; without, any
    bot process may take it."""
    run = await services.store.get(run_id)
    environment = services.environments.get(run.environment)
    if (
        run.status is not RunStatus.SUCCEEDED
        or run.kind not in WATCHED_KINDS
        or environment is None
        or not environment.monitor_minutes
    ):
        return None
    started = run.finished_at or datetime.now(UTC)
    until = started + timedelta(minutes=environment.monitor_minutes)
    if until <= datetime.now(UTC):
        return None  # reported late (its process died): nothing left of the window
    store = _store(services)
    for earlier in await store.open_watches(environment.name):
        if earlier.run_id != run_id:
            await _end(services, Watch.of(earlier), Outcome.SUPERSEDED, _superseded(run))
    interval = environment.monitor_interval_seconds
    record = await store.open(
        run_id=run_id,
        environment=environment.name,
        started_at=started,
        until=until,
        interval_seconds=interval,
        owner=services.owner if watching else None,
        lease_seconds=lease_seconds(interval),
        event=(MonitorKind.STARTED.value, started_detail(started, until, interval)),
    )
    if record is None:  # opened before (a report retried): the same window
        record = await store.get(run_id)
        if record is None or record.ended_at is not None:
            return None
    return Watch.of(record)


def _superseded(run: RunRecord) -> str:
    return f"run {run.id} ({run.kind}) rolled {run.environment} back again"


async def _end(
    services: Services, watch: Watch, outcome: Outcome | None = None, reason: str = ""
) -> tuple[bool, str]:
    """Close the window with its line (True if this call closed it); no `outcome`: at its
    end, healthy or degraded by what it saw."""
    events = await services.store.events(watch.run_id)
    state = monitoring_state(events) or MonitoringState(
        watch.started_at, watch.until, watch.interval_seconds
    )
    now = datetime.now(UTC)
    outcome = outcome or outcome_of(state)
    line = report_line(state, end=min(now, watch.until), outcome=outcome, reason=reason)
    closed = await _store(services).end(
        watch.run_id,
        outcome=outcome.value,
        line=line,
        event=(MonitorKind.ENDED.value, {"outcome": outcome.value, "line": line}),
    )
    return closed, line


class _Watcher:
    """One process's watch of one window, while it holds the lease."""

    def __init__(self, services: Services, watch: Watch, listener: MonitorListener) -> None:
        self.services = services
        self.watch = watch
        self.listener = listener
        self.environment = services.environment(watch.environment)
        self.store = _store(services)
        self.lease = lease_seconds(watch.interval_seconds)
        self.lost = asyncio.Event()
        self.target = target_for(services, self.environment)
        # A probe's error goes to Slack and the audit log: never with a secret in it.
        self.scrubber = log_excerpts.environment_scrubber(services, self.environment)

    def failed(self, result: CheckResult) -> FailedCheck:
        return FailedCheck(result.name, self.scrubber.scrub_all(result.detail))

    async def tell(self, event: MonitorEvent) -> None:
        try:
            await self.listener(event)
        except Exception:  # a broken display must never end the watch
            log.exception("the monitoring listener failed on %s", event.kind)

    async def renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                mine = await self.store.renew(
                    self.watch.run_id, owner=self.services.owner, lease_seconds=self.lease
                )
            except Exception:  # the run store is down: try again; expiry decides
                log.warning("monitoring lease of %s not renewed", self.watch.run_id)
                continue
            if not mine:
                self.lost.set()
                return

    async def interrupted(self) -> str | None:
        """The window's line if it ended elsewhere, or ends now because a new run of the
        environment is about to stop it (told); None: go on."""
        record = await self.store.get(self.watch.run_id)
        line: str | None = None
        if record is None or record.ended_at is not None:
            line = (record.line if record else None) or "Monitoring ended."
        else:
            active = await self.services.store.active_run(self.watch.environment)
            if active and active.id != self.watch.run_id and active.status in _TAKING_OVER:
                reason = _superseded(active)
                _, line = await _end(self.services, self.watch, Outcome.SUPERSEDED, reason)
        if line is not None:
            await self.tell(MonitorEvent(self.watch, MonitorKind.ENDED, line=line))
        return line

    async def check(self) -> tuple[CheckResult, ...]:
        """One round of health checks, kept in the audit log; the failed ones."""
        report = await run_health_checks(
            self.environment,
            session=self.services.http,
            runtime=self.services.runtime,
            database=self.target,
            deadline_seconds=round_seconds(self.environment),
        )
        await self.services.store.append_event(
            self.watch.run_id,
            MonitorKind.CHECKED.value,
            detail={"ok": report.ok, "failed": [self.failed(r).as_detail() for r in report.failed]},
        )
        return report.failed

    async def degraded(self, failed: tuple[CheckResult, ...]) -> None:
        """Health went bad: what failed and what the failing containers printed, told."""
        excerpts = await log_excerpts.capture_and_record(
            self.services, self.environment, failed, run_id=self.watch.run_id, during="monitoring"
        )
        checks = tuple(self.failed(r) for r in failed)
        await self.services.store.append_event(
            self.watch.run_id,
            MonitorKind.DEGRADED.value,
            detail={"failed": [f.as_detail() for f in checks]},
        )
        log.warning("health degraded: %s", "; ".join(f"{f.name}: {f.detail}" for f in checks))
        await self.tell(MonitorEvent(self.watch, MonitorKind.DEGRADED, checks, excerpts))

    async def recovered(self, since: datetime) -> None:
        seconds = (datetime.now(UTC) - since).total_seconds()
        await self.services.store.append_event(
            self.watch.run_id, MonitorKind.RECOVERED.value, detail={"seconds": seconds}
        )
        log.info("health recovered after %.1f s", seconds)
        await self.tell(MonitorEvent(self.watch, MonitorKind.RECOVERED, degraded_seconds=seconds))

    def next_round(self, now: datetime) -> datetime:
        """Rounds fall every interval from the window's start, whoever watches."""
        done = (now - self.watch.started_at).total_seconds() / self.watch.interval_seconds
        step = math.floor(done) + 1
        return self.watch.started_at + timedelta(seconds=step * self.watch.interval_seconds)

    async def run(self, resumed: bool) -> str | None:
        """Watch until the end; the report line, or None if another process took over."""
        if resumed:
            await self.services.store.append_event(
                self.watch.run_id,
                MonitorKind.RESUMED.value,
                detail={"owner": self.services.owner},
            )
        kind = MonitorKind.RESUMED if resumed else MonitorKind.STARTED
        await self.tell(MonitorEvent(self.watch, kind))
        state = monitoring_state(await self.services.store.events(self.watch.run_id))
        degraded = state.degraded if state is not None else None
        degraded_since = degraded.began if degraded is not None else None
        while True:
            now = datetime.now(UTC)
            upcoming = self.next_round(now)
            last = upcoming > self.watch.until
            wake = self.watch.until if last else upcoming
            await asyncio.sleep(max(0.0, (wake - now).total_seconds()))
            if self.lost.is_set():
                log.warning("another process took the watch of %s over", self.watch.run_id)
                return None
            stopped = await self.interrupted()
            if stopped is not None:
                return stopped
            if last:
                break
            failed = await self.check()
            if failed and degraded_since is None:
                # A rollback that started meanwhile stops the containers on purpose.
                stopped = await self.interrupted()
                if stopped is not None:
                    return stopped
                degraded_since = datetime.now(UTC)
                await self.degraded(failed)
            elif not failed and degraded_since is not None:
                await self.recovered(degraded_since)
                degraded_since = None
        closed, line = await _end(self.services, self.watch)
        if not closed:  # ended elsewhere meanwhile: its line is the one kept
            record = await self.store.get(self.watch.run_id)
            line = (record.line if record else None) or line
        log.info("%s", line)
        await self.tell(MonitorEvent(self.watch, MonitorKind.ENDED, line=line))
        return line


async def run_watch(
    services: Services, watch: Watch, listener: MonitorListener, *, resumed: bool = False
) -> str | None:
    """Watch the window to its end in this process; returns its report line, or None if
    another process watches it. Cancelled (the process stops), it gives the window back at
    once for the next process to take over."""
    watcher = _Watcher(services, watch, listener)  # UnknownEnvironment before the claim
    store = watcher.store
    if not await store.claim(watch.run_id, owner=services.owner, lease_seconds=watcher.lease):
        return None
    async with log_context.run_scope(watch.run_id, watch.environment):
        renewer = asyncio.create_task(watcher.renew(), name=f"watch-lease-{watch.run_id}")
        try:
            return await watcher.run(resumed)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
            with contextlib.suppress(Exception):
                await asyncio.shield(store.release(watch.run_id, owner=services.owner))


async def watches_to_take_over(services: Services) -> list[Watch]:
    """Open windows of this process's environments that nobody watches now (never taken,
    given back at a shut-down, or their watcher died); `run_watch` decides who gets each."""
    now = datetime.now(UTC)
    return [
        Watch.of(record)
        for record in await _store(services).unwatched()
        if record.environment in services.environments and record.until > now
    ]


async def close_unwatched(services: Services) -> list[tuple[Watch, str]]:
    """End the windows past their end that nobody watched to it (their process died and none
    took over in time), saying so; each is closed by exactly one caller."""
    now = datetime.now(UTC)
    closed = []
    for record in await _store(services).unwatched():
        if record.until > now:
            continue
        watch = Watch.of(record)
        done, line = await _end(
            services, watch, Outcome.UNWATCHED, "the bot process watching it stopped"
        )
        if done:
            closed.append((watch, line))
    return closed


@dataclass(frozen=True)
class WindowStatus:
    """An open window as `status` shows it: what it saw so far, and who watches it now."""

    watch: Watch
    watcher: str | None  # the process holding the lease; None: nobody right now
    state: MonitoringState | None


async def open_windows(services: Services, environment: str | None = None) -> list[WindowStatus]:
    """The open monitoring windows (of one environment), oldest first."""
    now = datetime.now(UTC)
    found = []
    for record in await _store(services).open_watches(environment):
        alive = record.lease_until is not None and record.lease_until > now
        state = monitoring_state(await services.store.events(record.run_id))
        found.append(WindowStatus(Watch.of(record), record.owner if alive else None, state))
    return found
