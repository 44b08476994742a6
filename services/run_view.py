"""Everything shown about one run, read back from the run store (the audit log is the truth).

Whoever renders a run (the live Slack message, the incident report) reads a `RunView`;
whatever changed it (a click, a step, the sweeper), the latest view is the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services import monitor_events
from services.approvals import escalates_at, expires_at
from services.bundle import Services
from services.checklist import (
    CHECKLIST_EVENT,
    CHECKLIST_LABELS,
    ChecklistItem,
    Tick,
    checklist_state,
)
from services.environments import Environment
from services.events import STEP_LABELS, EventKind, Step, expected_steps
from services.monitor_events import MonitoringState
from services.run_store import ApprovalRecord, EventRecord, RunRecord


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class StepState:
    step: Step
    status: StepStatus
    seconds: float | None = None
    message: str = ""

    @property
    def label(self) -> str:
        return STEP_LABELS[self.step]


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    what: str
    actor: str | None = None
    people: tuple[str, ...] = ()  # users or user groups the entry is about (e.g. told)


@dataclass(frozen=True)
class TableRows:
    table: str
    live: int
    backup: int
    estimated: bool = False  # from the planner's statistics (a large table), not counted

    @property
    def leaving(self) -> int:
        """Rows the rollback removes from the live table (negative: rows it brings back)."""
        return self.live - self.backup


def _data_loss(events: list[EventRecord]) -> tuple[TableRows, ...]:
    latest = next((e for e in reversed(events) if e.kind == "data_loss_preview"), None)
    if latest is None:
        return ()
    rows = []
    for item in latest.detail.get("tables") or []:
        try:
            rows.append(
                TableRows(
                    str(item["table"]),
                    int(item["live"]),
                    int(item["backup"]),
                    bool(item.get("estimated", False)),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(rows)


@dataclass(frozen=True)
class RunView:
    run: RunRecord
    environment: Environment
    approvals: tuple[ApprovalRecord, ...]  # that count: approvals of the current plan
    stale_approvals: tuple[ApprovalRecord, ...]  # given to an earlier plan
    rejections: tuple[ApprovalRecord, ...]
    checklist: dict[ChecklistItem, Tick | None]
    steps: tuple[StepState, ...]
    plan_changes: tuple[str, ...]  # why the plan changed, oldest first
    timeline: tuple[TimelineEntry, ...]
    expires_at: datetime
    escalates_at: datetime | None
    closed_by: str | None  # who rejected or cancelled
    # swap: per table, rows in the live database and in the backup (from the preparation)
    data_loss: tuple[TableRows, ...] = ()
    monitoring: MonitoringState | None = None  # the watch after a success, if any

    @property
    def plan(self) -> dict[str, Any]:
        return self.run.plan

    @property
    def required_approvals(self) -> int:
        return self.environment.approval.required_approvals


def _steps(events: list[EventRecord], expected: tuple[Step, ...]) -> tuple[StepState, ...]:
    states: dict[Step, StepState] = {s: StepState(s, StepStatus.PENDING) for s in expected}
    for event in events:
        if event.step is None:
            continue
        try:
            step, kind = Step(event.step), EventKind(event.kind)
        except ValueError:
            continue
        message = str(event.detail.get("message") or "")
        seconds = event.detail.get("seconds")
        before = states.get(step, StepState(step, StepStatus.PENDING))
        if kind is EventKind.STARTED:
            states[step] = StepState(step, StepStatus.RUNNING)
        elif kind is EventKind.PROGRESS:
            states[step] = StepState(step, before.status, before.seconds, message)
        else:
            status = StepStatus.DONE if kind is EventKind.FINISHED else StepStatus.FAILED
            states[step] = StepState(step, status, seconds, message)
    return tuple(states.values())


_TIMELINE_WORDS = {
    "requested": "requested the rollback",
    "approved": "approved",
    "rejected": "rejected",
    "approval_granted": "approval complete",
    "plan_changed": "plan changed",
    "escalated": "escalated to the next contacts",
    "expired": "request expired",
    "cancelled": "cancelled",
    "interrupted": "interrupted",
    "recovered": "interrupted (its process stopped) and recovered by another bot process",
    "resumed": "chose Resume",
    "aborted": "chose Abort and restore",
}


def _timeline_entry(event: EventRecord) -> TimelineEntry | None:
    monitored = monitor_events.timeline_text(event)
    if monitored is not None:
        return TimelineEntry(event.at, monitored)
    if event.kind in _TIMELINE_WORDS:
        what = _TIMELINE_WORDS[event.kind]
        if event.kind == "plan_changed":
            what += f": {event.detail.get('why', '')}"
        subject = str(event.detail.get("plan_hash", ""))
        if event.kind == "approved" and ":" in subject:  # a gated action (services/approvals)
            what = f"approved the {subject.split(':', 1)[0]}"
        return TimelineEntry(event.at, what, event.actor)
    if event.kind == "notified":
        told = (*event.detail.get("users", []), *event.detail.get("usergroups", []))
        what = f"contacts told ({event.detail.get('notice')})" + ("" if told else ": nobody")
        return TimelineEntry(event.at, what, people=tuple(str(t) for t in told))
    if event.kind == CHECKLIST_EVENT:
        try:
            item = ChecklistItem(str(event.detail.get("item")))
        except ValueError:
            return None
        verb = "ticked" if event.detail.get("ticked") else "unticked"
        return TimelineEntry(event.at, f"{verb} “{CHECKLIST_LABELS[item]}”", event.actor)
    if event.kind in (EventKind.FINISHED.value, EventKind.FAILED.value) and event.step:
        try:
            label = STEP_LABELS[Step(event.step)]
        except ValueError:
            return None
        seconds = event.detail.get("seconds")
        timing = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
        outcome = "done" if event.kind == EventKind.FINISHED.value else "FAILED"
        return TimelineEntry(event.at, f"{label} {outcome}{timing}")
    if event.kind == "finished":
        return TimelineEntry(
            event.at, "finished: " + ("succeeded" if event.detail.get("ok") else "FAILED")
        )
    return None


async def load_run_view(services: Services, run_id: str) -> RunView:
    run = await services.store.get(run_id)
    environment = services.environment(run.environment)
    events = await services.store.events(run_id)
    decisions = await services.store.approvals(run_id)
    current = run.plan.get("plan_hash")
    approvals = tuple(a for a in decisions if a.decision == "approve" and a.plan_hash == current)
    # "undo:<run>" and the like: approvals of a gated action, not of an earlier plan.
    stale = tuple(
        a
        for a in decisions
        if a.decision == "approve" and a.plan_hash != current and ":" not in a.plan_hash
    )
    closed_by = next(
        (e.actor for e in reversed(events) if e.kind in ("rejected", "cancelled")), None
    )
    entries = (_timeline_entry(e) for e in events)
    return RunView(
        run=run,
        environment=environment,
        approvals=approvals,
        stale_approvals=stale,
        rejections=tuple(a for a in decisions if a.decision == "reject"),
        checklist=checklist_state(events),
        steps=_steps(
            events,
            expected_steps(
                run.kind,
                run.strategy,
                str(run.plan.get("cutover_mode") or "stop"),
                waits_for_version=bool((run.plan.get("code") or {}).get("waits_for_version")),
            ),
        ),
        plan_changes=tuple(
            str(e.detail.get("why", "")) for e in events if e.kind == "plan_changed"
        ),
        timeline=tuple(e for e in entries if e is not None),
        expires_at=expires_at(run, environment.approval),
        escalates_at=escalates_at(run, environment.approval),
        closed_by=closed_by,
        data_loss=_data_loss(events),
        monitoring=monitor_events.monitoring_state(events),
    )
