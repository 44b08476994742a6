"""The command line's view of a run: a live step list on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TextIO

from services import humanize
from services.backups import Backup
from services.environments import Strategy
from services.events import EXECUTE_STEPS, STEP_LABELS, SWAP_STEPS, EventKind, Step, StepEvent
from services.names import visible
from services.workflow import RollbackPlan, RollbackResult

MARKS = {"pending": "·", "running": "⏳", "done": "✓", "failed": "✗"}


MAX_SHOWN = 1000


def shown(text: object, limit: int = MAX_SHOWN) -> str:
    """Anything that came from outside, on one bounded line: control characters as escapes,
    so a name cannot draw a line of its own (a fake "Rollback SUCCEEDED") or move the cursor."""
    line = visible(str(text))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _age(backup: Backup, now: datetime | None = None) -> str:
    if backup.future_dated(now):
        return "DATED IN THE FUTURE"  # not "0 s ago" (issue 8)
    return f"{humanize.age(backup.age_seconds(now))} ago"


def plan_lines(plan: RollbackPlan) -> list[str]:
    env = plan.environment
    backup = plan.backup
    age = _age(backup, plan.planned_at)
    taken = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC"
    lines = [
        f"Rollback plan for {shown(env.name)}",
        f"  database      {shown(env.database_display)}",
        f"  backup        {shown(backup.name)} ({humanize.size(backup.size_bytes)}, "
        f"taken {taken}, {age}, {len(plan.archive.tables)} tables)",
        *(f"  warning       {note}" for note in backup.notes(plan.planned_at)),
        f"  data loss     everything written since {taken} "
        f"({age}) leaves the live database; it stays in the safety backup",
        f"  containers    {len(plan.containers)} of Compose project {shown(env.compose_project)}:",
    ]
    lines += [f"                  {shown(c.name)} ({c.state})" for c in plan.containers]
    steps = SWAP_STEPS if plan.strategy is Strategy.SWAP else EXECUTE_STEPS
    lines += [
        f"  strategy      {plan.strategy_note or plan.strategy.value}",
        f"  safety backup {shown(plan.safety_backup)}"
        + (
            " (a dump of the old database, which is also kept)"
            if plan.strategy is Strategy.SWAP
            else ""
        ),
        "  steps         " + " → ".join(STEP_LABELS[s] for s in steps),
    ]
    return lines


def backup_lines(backups: list[Backup], now: datetime | None = None) -> list[str]:
    if not backups:
        return ["No backups."]
    names = [shown(b.name) for b in backups]
    width = min(max(len(n) for n in names), 80)
    lines = [f"{'NAME':<{width}}  {'SIZE':>9}  {'TAKEN (UTC)':<19}  AGE"]
    for name, backup in zip(names, backups, strict=True):
        notes = [n.split(":")[0] for n in backup.notes(now) if not n.startswith("dated")]
        age = _age(backup, now).removesuffix(" ago")
        lines.append(
            f"{name:<{width}}  {humanize.size(backup.size_bytes):>9}  "
            f"{backup.created_at:%Y-%m-%d %H:%M:%S}  {age}"
            + "".join(f"  ({note})" for note in notes)
        )
    return lines


class StepView:
    """Renders step events: redraws the step list on a TTY, appends lines elsewhere."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.rows: dict[Step, list[str]] = {}
        self.drawn = 0
        self.began = time.monotonic()

    def _row(self, step: Step, mark: str, detail: str = "") -> list[str]:
        return [mark, STEP_LABELS[step], shown(detail)]

    async def __call__(self, event: StepEvent) -> None:
        seconds = f"{event.seconds:.1f} s" if event.seconds is not None else ""
        if event.kind is EventKind.STARTED:
            row = self._row(event.step, MARKS["running"])
        elif event.kind is EventKind.PROGRESS:
            row = self._row(event.step, MARKS["running"], event.message)
        elif event.kind is EventKind.FINISHED:
            row = self._row(event.step, MARKS["done"], f"{seconds}  {event.message}".strip())
        else:
            row = self._row(event.step, MARKS["failed"], f"{seconds}  {event.message}".strip())
        self.rows[event.step] = row
        if self.live:
            self._redraw()
        else:
            elapsed = time.monotonic() - self.began
            self.out.write(f"[{elapsed:6.1f}s] {row[0]} {row[1]}  {row[2]}".rstrip() + "\n")
            self.out.flush()

    def _redraw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        for mark, label, detail in self.rows.values():
            self.out.write(f"\x1b[2K  {mark} {label:<36} {detail}\n")
        self.drawn = len(self.rows)
        self.out.flush()


def result_lines(result: RollbackResult) -> list[str]:
    lines = ["", "Rollback " + ("SUCCEEDED" if result.ok else "FAILED") + f" (run {result.run_id})"]
    if result.error:
        lines.append(f"  error         {shown(result.error)}")
    lines.append(f"  state         {result.environment_state}")
    if result.downtime_seconds is not None:
        lines.append(
            f"  downtime      {humanize.duration(result.downtime_seconds)} "
            "(containers stopped → health checks passing)"
        )
    if result.database_unavailable_seconds is not None:
        lines.append(
            f"  database      unavailable for {result.database_unavailable_seconds:.2f} s"
            f" ({result.strategy})"
        )
    if result.old_database and result.keep_old_until:
        lines.append(
            f"  old database  kept as {result.old_database} until "
            f"{result.keep_old_until:%Y-%m-%d %H:%M} UTC (rollback-bot undo for an instant undo)"
        )
    if result.safety_backup:
        lines.append(f"  safety backup {shown(result.safety_backup.path)}")
    if result.health:
        lines.append("  health")
        for check in result.health.results:
            mark = MARKS["done"] if check.ok else MARKS["failed"]
            lines.append(
                f"    {mark} {shown(check.name):<14} {shown(check.detail)}  "
                f"({check.latency_seconds * 1000:.0f} ms, {check.attempts} attempt(s))"
            )
    return lines
