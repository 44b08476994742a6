"""The runbook's rollback checklist: the bot ticks what it does itself, people tick the rest.

Every tick is an event in the run's audit log; the checklist's state is read back from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.events import EventKind, Step
from services.monitor_events import MonitorKind
from services.run_store import EventRecord, RunStore


class ChecklistItem(StrEnum):
    ASSESSED = "assessed"
    TEAM_NOTIFIED = "team_notified"
    BACKUP_CREATED = "backup_created"
    PROCEDURE_SELECTED = "procedure_selected"
    EXECUTED = "executed"
    HEALTH_PASSED = "health_passed"
    MONITORING = "monitoring"
    ROOT_CAUSE = "root_cause"
    DOCUMENTATION = "documentation"


# In the runbook's order and words ("Rollback Checklist").
CHECKLIST_LABELS: dict[ChecklistItem, str] = {
    ChecklistItem.ASSESSED: "Issue identified and assessed",
    ChecklistItem.TEAM_NOTIFIED: "Team notified",
    ChecklistItem.BACKUP_CREATED: "Backup created (if possible)",
    ChecklistItem.PROCEDURE_SELECTED: "Rollback procedure selected",
    ChecklistItem.EXECUTED: "Rollback executed",
    ChecklistItem.HEALTH_PASSED: "Health checks passed",
    ChecklistItem.MONITORING: "Monitoring active",
    ChecklistItem.ROOT_CAUSE: "Root cause investigation started",
    ChecklistItem.DOCUMENTATION: "Documentation updated",
}

# Monitoring: ticked by the bot when it starts watching (monitor_minutes > 0), by people
# otherwise.
PEOPLE_ITEMS = (
    ChecklistItem.ASSESSED,
    ChecklistItem.MONITORING,
    ChecklistItem.ROOT_CAUSE,
    ChecklistItem.DOCUMENTATION,
)
BOT = "bot"
CHECKLIST_EVENT = "checklist"


@dataclass(frozen=True)
class Tick:
    by: str  # a Slack user ID, or "bot"
    at: datetime


def _bot_item(event: EventRecord) -> ChecklistItem | None:
    """The item an event of the bot's own work ticks, if any."""
    if event.kind == "requested":
        return ChecklistItem.PROCEDURE_SELECTED
    if event.kind == MonitorKind.STARTED:  # the bot watches the environment (monitoring.py)
        return ChecklistItem.MONITORING
    if event.kind == "notified" and event.detail.get("notice") == "requested":
        told = event.detail.get("users") or event.detail.get("usergroups")
        return ChecklistItem.TEAM_NOTIFIED if told else None
    if event.kind == EventKind.FINISHED.value:
        return {
            Step.SAFETY_BACKUP.value: ChecklistItem.BACKUP_CREATED,
            Step.ARCHIVE_OLD.value: ChecklistItem.BACKUP_CREATED,  # swap: the old database
            Step.START.value: ChecklistItem.EXECUTED,
            Step.UNPAUSE.value: ChecklistItem.EXECUTED,  # the pause cut-over mode
            Step.CUTOVER.value: ChecklistItem.EXECUTED,  # keep: the containers never stop
            Step.PUSH.value: ChecklistItem.EXECUTED,  # code: the revert is pushed
            Step.HEALTH.value: ChecklistItem.HEALTH_PASSED,
        }.get(event.step or "")
    return None


def checklist_state(events: Iterable[EventRecord]) -> dict[ChecklistItem, Tick | None]:
    """Each item's latest tick (None: not ticked), replayed from the audit log."""
    state: dict[ChecklistItem, Tick | None] = dict.fromkeys(ChecklistItem)
    for event in events:
        if event.kind == CHECKLIST_EVENT:
            try:
                item = ChecklistItem(str(event.detail.get("item")))
            except ValueError:
                continue
            ticked = bool(event.detail.get("ticked"))
            state[item] = Tick(event.actor or "?", event.at) if ticked else None
            continue
        bot_item = _bot_item(event)
        if bot_item is not None and state[bot_item] is None:
            state[bot_item] = Tick(BOT, event.at)
    return state


async def tick_checklist(
    store: RunStore,
    *,
    run_id: str,
    user: str,
    ticked: Sequence[str],
    shown: Sequence[str] | None,
) -> list[ChecklistItem]:
    """Apply what this person changed; returns the items that changed.

    `ticked`: the items selected now; `shown`: those ticked in the view they clicked in.
    Only the difference is applied, so a click on a stale view never unticks what others
    ticked meanwhile (nor re-ticks what they unticked). Without a view, nothing is unticked.
    """
    await store.get(run_id)  # RunNotFound for a stale or forged run ID
    known = {item.value for item in ChecklistItem}
    wanted = {ChecklistItem(v) for v in ticked if v in known}
    before = {ChecklistItem(v) for v in shown or () if v in known}
    state = checklist_state(await store.events(run_id))
    changed = []
    for item in PEOPLE_ITEMS:
        if item in wanted and (shown is None or item not in before):
            now_ticked = True
        elif shown is not None and item in before and item not in wanted:
            now_ticked = False
        else:
            continue  # this person did not touch it
        if (state[item] is not None) != now_ticked:
            await store.append_event(
                run_id,
                CHECKLIST_EVENT,
                actor=user,
                detail={"item": item.value, "ticked": now_ticked},
            )
            changed.append(item)
    return changed
