"""What watching an environment after its rollback saw, as the run's audit log keeps it: the
event kinds, the state replayed from them (for the message, the report, and a process that
takes the watch over) and the report's line ("Monitoring 10 min: healthy throughout")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services import humanize
from services.run_store import EventRecord

DETAIL_LIMIT = 160  # characters of one failing check's detail
SHOWN_CHECKS = 5


class MonitorKind(StrEnum):
    STARTED = "monitor_started"
    RESUMED = "monitor_resumed"  # another process took the watch over
    CHECKED = "monitor_check"  # one round of health checks (the audit trail only)
    DEGRADED = "monitor_degraded"
    RECOVERED = "monitor_recovered"
    ENDED = "monitor_ended"


class Outcome(StrEnum):
    HEALTHY = "healthy"  # healthy throughout
    DEGRADED = "degraded"  # degraded at some point, recovered or not
    SUPERSEDED = "superseded"  # a new rollback of the environment ended it early
    UNWATCHED = "unwatched"  # its process stopped and none took over before the end


@dataclass(frozen=True)
class FailedCheck:
    name: str
    detail: str

    def as_detail(self) -> dict[str, str]:
        return {"name": self.name, "detail": self.detail[:DETAIL_LIMIT]}


def failed_checks(detail: dict[str, Any]) -> tuple[FailedCheck, ...]:
    return tuple(
        FailedCheck(str(item.get("name", "?")), str(item.get("detail", "")))
        for item in detail.get("failed") or []
        if isinstance(item, dict)
    )


def failed_text(failed: Sequence[FailedCheck]) -> str:
    """ "web: HTTP 500, expected 200; containers: not running: app-web-1" (bounded)."""
    shown = [f"{f.name}: {f.detail[:DETAIL_LIMIT]}" for f in failed[:SHOWN_CHECKS]]
    more = len(failed) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def at_text(at: datetime) -> str:
    """A moment as the workspace shows times: HH:MM in UTC."""
    return at.astimezone(UTC).strftime("%H:%M UTC")


def window_text(seconds: float) -> str:
    """A window's length: "10 min", or "6.0 s" for a short one."""
    if seconds >= 60 and round(seconds) % 60 == 0:
        return f"{round(seconds) // 60} min"
    return humanize.duration(seconds)


@dataclass(frozen=True)
class Episode:
    """One stretch of failing health checks."""

    began: datetime
    failed: tuple[FailedCheck, ...]
    ended: datetime | None = None

    def seconds(self, now: datetime) -> float:
        return max(0.0, ((self.ended or now) - self.began).total_seconds())


@dataclass(frozen=True)
class MonitoringState:
    started_at: datetime
    until: datetime
    interval_seconds: float
    checks: int = 0
    last_check_at: datetime | None = None
    episodes: tuple[Episode, ...] = ()
    ended_at: datetime | None = None
    outcome: str | None = None
    line: str | None = None

    @property
    def window_seconds(self) -> float:
        return (self.until - self.started_at).total_seconds()

    @property
    def degraded(self) -> Episode | None:
        """The stretch of failing health going on now, if any."""
        if self.episodes and self.episodes[-1].ended is None and self.ended_at is None:
            return self.episodes[-1]
        return None


def _at(detail: dict[str, Any], key: str, default: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(detail[key]))
    except (KeyError, ValueError):
        return default


def monitoring_state(events: Iterable[EventRecord]) -> MonitoringState | None:
    """The run's monitoring replayed from its events; None if it was never watched."""
    state: MonitoringState | None = None
    for event in events:
        try:
            kind = MonitorKind(event.kind)
        except ValueError:
            continue
        detail = event.detail
        if kind is MonitorKind.STARTED:
            state = MonitoringState(
                started_at=_at(detail, "started_at", event.at),
                until=_at(detail, "until", event.at),
                interval_seconds=float(detail.get("interval_seconds") or 0),
            )
        elif state is None:
            continue
        elif kind is MonitorKind.CHECKED:
            state = replace(state, checks=state.checks + 1, last_check_at=event.at)
        elif kind is MonitorKind.DEGRADED:
            episode = Episode(event.at, failed_checks(detail))
            state = replace(state, episodes=(*state.episodes, episode))
        elif kind is MonitorKind.RECOVERED and state.degraded is not None:
            closed = replace(state.episodes[-1], ended=event.at)
            state = replace(state, episodes=(*state.episodes[:-1], closed))
        elif kind is MonitorKind.ENDED:
            state = replace(
                state,
                ended_at=event.at,
                outcome=str(detail.get("outcome") or ""),
                line=str(detail.get("line") or ""),
            )
    return state


def _history(state: MonitoringState, end: datetime) -> str:
    episodes = state.episodes
    if not episodes:
        if not state.checks:
            return "no check ran"
        return f"healthy throughout ({state.checks} check{'s' if state.checks != 1 else ''})"
    first, last = episodes[0], episodes[-1]
    at_end = "still failing at the end" if last.ended is None else "healthy at the end"
    if len(episodes) == 1:
        if last.ended is None:
            return f"DEGRADED since {at_text(first.began)} ({failed_text(first.failed)}), {at_end}"
        return (
            f"degraded at {at_text(first.began)} for {humanize.duration(first.seconds(end))} "
            f"({failed_text(first.failed)}); {at_end}"
        )
    total = sum(e.seconds(end) for e in episodes)
    return (
        f"degraded {len(episodes)} times, first at {at_text(first.began)} "
        f"({failed_text(first.failed)}), {humanize.duration(total)} in all; {at_end}"
    )


def outcome_of(state: MonitoringState) -> Outcome:
    return Outcome.DEGRADED if state.episodes else Outcome.HEALTHY


def report_line(
    state: MonitoringState, *, end: datetime, outcome: Outcome, reason: str = ""
) -> str:
    """The line the run's report gets when its monitoring ends."""
    window = window_text(state.window_seconds)
    history = _history(state, end)
    if outcome is Outcome.SUPERSEDED:
        watched = humanize.duration(max(0.0, (end - state.started_at).total_seconds()))
        return f"Monitoring ended after {watched} of {window}: {reason}; until then {history}"
    if outcome is Outcome.UNWATCHED:
        since = state.last_check_at or state.started_at
        return (
            f"Monitoring {window}: not watched after {at_text(since)} ({reason}); "
            f"until then {history}"
        )
    return f"Monitoring {window}: {history}"


def started_detail(started_at: datetime, until: datetime, interval: float) -> dict[str, Any]:
    return {
        "started_at": started_at.isoformat(),
        "until": until.isoformat(),
        "interval_seconds": interval,
    }


def timeline_text(event: EventRecord) -> str | None:
    """The incident timeline's words for a monitoring event (None: not shown there)."""
    detail = event.detail
    if event.kind == MonitorKind.STARTED:
        until = _at(detail, "until", event.at)
        interval = float(detail.get("interval_seconds") or 0)
        return f"monitoring started: health every {interval:g} s until {at_text(until)}"
    if event.kind == MonitorKind.RESUMED:
        return "monitoring taken over by another bot process (the one watching stopped)"
    if event.kind == MonitorKind.DEGRADED:
        return f"health DEGRADED: {failed_text(failed_checks(detail))}"
    if event.kind == MonitorKind.RECOVERED:
        seconds = detail.get("seconds")
        after = f" after {humanize.duration(seconds)}" if isinstance(seconds, int | float) else ""
        return f"health recovered{after}"
    if event.kind == MonitorKind.ENDED:
        return str(detail.get("line") or "monitoring ended")
    return None
