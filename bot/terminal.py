"""The command line's view of a run: on a terminal, a live step list (with the restore's
progress) and tables drawn with rich; plain lines when the output is not a terminal, when
TERM=dumb or when NO_COLOR is set (those lines are the format scripts and tests read)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from services import humanize
from services.backup_now import TakenBackup
from services.backups import Backup
from services.code_rollback import CodeRollbackPlan, waits_for_version
from services.containers import Container
from services.environments import Strategy
from services.events import STEP_LABELS, EventKind, Step, StepEvent, expected_steps, planned_steps
from services.full_rollback import HEALTH_NOTE, FullRollbackPlan
from services.git import CommitInfo, display_url
from services.names import visible
from services.provenance import Listed, as_listed, sidecar_path
from services.run_store import RunRecord, RunStatus
from services.workflow import RollbackPlan, RollbackResult

MARKS = {"pending": "·", "running": "⏳", "done": "✓", "failed": "✗"}


MAX_SHOWN = 1000


def shown(text: object, limit: int = MAX_SHOWN) -> str:
    """Anything that came from outside, on one bounded line: control characters as escapes,
    so a name cannot draw a line of its own (a fake "Rollback SUCCEEDED") or move the cursor."""
    line = visible(str(text))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def plain(out: TextIO) -> bool:
    """Plain lines, no escape sequences: not a terminal, TERM=dumb, or NO_COLOR set."""
    return (
        not out.isatty()
        or os.environ.get("TERM", "") == "dumb"
        or bool(os.environ.get("NO_COLOR", ""))
    )


def console(out: TextIO | None = None) -> Console:
    """A rich console on `out` that never reads markup or highlights: what is drawn is the
    text as given (outside text is escaped by `shown` first)."""
    return Console(file=out or sys.stdout, markup=False, highlight=False, emoji=False)


def _text(value: object, style: str = "") -> Text:
    return Text(shown(value), style=style)


def show(lines: Sequence[str], table: RenderableType, out: TextIO | None = None) -> None:
    """`table` drawn on a terminal, `lines` printed elsewhere."""
    out = out or sys.stdout
    if plain(out):
        print("\n".join(lines), file=out, flush=True)
    else:
        console(out).print(table)


def _age(backup: Backup, now: datetime | None = None) -> str:
    if backup.future_dated(now):
        return "DATED IN THE FUTURE"  # not "0 s ago" (issue 8)
    return f"{humanize.age(backup.age_seconds(now))} ago"


def plan_rows(plan: RollbackPlan) -> list[tuple[str, str]]:
    """The plan's facts as (key, value); a key "" continues the row above (containers)."""
    env = plan.environment
    backup = plan.backup
    age = _age(backup, plan.planned_at)
    taken = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC"
    rows = [
        ("database", shown(env.database_display)),
        (
            "backup",
            f"{shown(backup.name)} ({humanize.size(backup.size_bytes)}, "
            f"taken {taken}, {age}, {len(plan.archive.tables)} tables)",
        ),
        *(("warning", note) for note in backup.notes(plan.planned_at)),
        (
            "data loss",
            f"everything written since {taken} ({age}) leaves the live database; "
            "it stays in the safety backup",
        ),
        (
            "containers",
            (
                f"{len(plan.containers)} services of Swarm stack {shown(env.stack)}"
                if env.stack is not None
                else f"{len(plan.containers)} of Compose project {shown(env.compose_project)}"
            )
            + (f" on {shown(env.docker_endpoint.url)}:" if env.docker_endpoint else ":"),
        ),
        *(("", f"{shown(c.name)} ({c.state}" + _replicas(c) + ")") for c in plan.containers),
    ]
    steps = planned_steps(plan.strategy.value, plan.cutover_mode.value)
    kept = " (a dump of the old database, which is also kept)"
    swapping = plan.strategy is Strategy.SWAP
    rows += [
        ("strategy", plan.strategy_note or plan.strategy.value),
        ("cut-over", f"{plan.cutover_mode.value}: {plan.application_sees}"),
        ("safety backup", shown(plan.safety_backup) + (kept if swapping else "")),
        ("steps", " → ".join(STEP_LABELS[s] for s in steps)),
    ]
    return rows


# Where the downtime starts, per cut-over mode.
_DOWN_SINCE = {"pause": "containers paused", "keep": "cut-over"}


def _replicas(container: Container) -> str:
    if container.replicas is None:
        return ""
    return f", {container.replicas} replica{'s' if container.replicas != 1 else ''}"


def plan_lines(plan: RollbackPlan) -> list[str]:
    return rows_lines(f"Rollback plan for {shown(plan.environment.name)}", plan_rows(plan))


def plan_table(plan: RollbackPlan) -> RenderableType:
    """The plan as a table: the same facts as `plan_lines`."""
    return rows_table(f"Rollback plan for {shown(plan.environment.name)}", plan_rows(plan))


def rows_lines(title: str, rows: Sequence[tuple[str, str]]) -> list[str]:
    """A plan's rows as plain lines (a key "" continues the row above)."""
    return [title] + [f"  {key:<13} {value}" if key else f"{'':<18}{value}" for key, value in rows]


def rows_table(title: str, rows: Sequence[tuple[str, str]]) -> RenderableType:
    """A plan's rows as a table: the same facts as `rows_lines`."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        style = "yellow" if key in ("warning", "data loss") else ""
        grid.add_row(key, Text(value, style=style))
    return Group(Text(title, style="bold"), grid)


def backup_lines(backups: Sequence[Backup | Listed], now: datetime | None = None) -> list[str]:
    if not backups:
        return ["No backups."]
    listed = [as_listed(b) for b in backups]
    names = [shown(item.backup.name) for item in listed]
    width = min(max(len(n) for n in names), 80)
    lines = [f"{'NAME':<{width}}  {'SIZE':>9}  {'TAKEN (UTC)':<19}  AGE"]
    for name, item in zip(names, listed, strict=True):
        backup = item.backup
        notes = [n.split(":")[0] for n in backup.notes(now) if not n.startswith("dated")]
        age = _age(backup, now).removesuffix(" ago")
        facts = item.facts()
        lines.append(
            f"{name:<{width}}  {humanize.size(backup.size_bytes):>9}  "
            f"{backup.created_at:%Y-%m-%d %H:%M:%S}  {age}"
            + "".join(f"  ({note})" for note in notes)
            + (f"  [{shown(' · '.join(facts))}]" if facts else "")
        )
    return lines


def history_lines(runs: Iterable[RunRecord]) -> list[str]:
    return [
        f"{run.requested_at:%Y-%m-%d %H:%M:%S} {run.id} {run.status.value:<18} "
        f"{'' if run.kind == 'database' else run.kind + ' '}"
        f"{shown(run.backup_name or '-')}  by {shown(run.requested_by)}"
        for run in runs
    ]


_STATUS_STYLES = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.INTERRUPTED: "bold red",
    RunStatus.RUNNING: "yellow",
}


def history_table(runs: Iterable[RunRecord]) -> RenderableType:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("REQUESTED", "RUN", "STATUS", "BACKUP", "BY"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            f"{run.requested_at:%Y-%m-%d %H:%M:%S}",
            run.id,
            Text(run.status.value, style=_STATUS_STYLES.get(run.status, "")),
            _text(("" if run.kind == "database" else f"{run.kind} ") + (run.backup_name or "-")),
            _text(run.requested_by),
        )
    return table


def backup_table(backups: Sequence[Backup | Listed], now: datetime | None = None) -> RenderableType:
    """The backups as a table: the same facts as `backup_lines`."""
    if not backups:
        return Text("No backups.")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("NAME", "left"), ("SIZE", "right"), ("TAKEN (UTC)", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_column("AGE")
    table.add_column("PROVENANCE", overflow="fold")
    for item in map(as_listed, backups):
        backup = item.backup
        notes = [n.split(":")[0] for n in backup.notes(now) if not n.startswith("dated")]
        age = _age(backup, now).removesuffix(" ago")
        table.add_row(
            _text(backup.name),
            humanize.size(backup.size_bytes),
            f"{backup.created_at:%Y-%m-%d %H:%M:%S}",
            Text(age + "".join(f"  ({note})" for note in notes), style="yellow" if notes else ""),
            _text(" · ".join(item.facts()) or "-", "bold red" if item.suspect else ""),
        )
    return table


_PERCENT = re.compile(r"(\d{1,3})%")


@dataclass(frozen=True)
class _Row:
    step: Step
    state: str  # a key of MARKS
    detail: str = ""
    percent: int | None = None


class StepView:
    """Renders step events: a live step list on a terminal (a spinner on the running step,
    a bar for the restore's progress), one appended line per event elsewhere.

    Use it in `with` on a terminal, so that the live display ends (and the cursor comes
    back) when the run does."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = not plain(self.out) if live is None else live
        self.rows: dict[Step, _Row] = {}
        self.began = time.monotonic()
        self.spinner = Spinner("dots", style="yellow")
        self._display: Live | None = None

    def __enter__(self) -> StepView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._display is not None:
            self._display.stop()  # leaves the last drawing on the screen
            self._display = None

    async def __call__(self, event: StepEvent) -> None:
        seconds = f"{event.seconds:.1f} s" if event.seconds is not None else ""
        if event.kind is EventKind.STARTED:
            row = _Row(event.step, "running")
        elif event.kind is EventKind.PROGRESS:
            found = _PERCENT.search(event.message)
            percent = min(int(found[1]), 100) if found else None
            row = _Row(event.step, "running", shown(event.message), percent)
        else:
            state = "done" if event.kind is EventKind.FINISHED else "failed"
            row = _Row(event.step, state, shown(f"{seconds}  {event.message}".strip()))
        self.rows[event.step] = row
        if not self.live:
            elapsed = time.monotonic() - self.began
            line = f"[{elapsed:6.1f}s] {MARKS[row.state]} {STEP_LABELS[row.step]}  {row.detail}"
            self.out.write(line.rstrip() + "\n")
            self.out.flush()
        elif self._display is None:
            self._display = Live(
                get_renderable=self._drawing,
                console=Console(file=self.out, force_terminal=True, markup=False, emoji=False),
                refresh_per_second=8,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._display.start()
        else:
            self._display.refresh()

    def _drawing(self) -> RenderableType:
        """The step list now (called from rich's refresh thread: reads a copy)."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=2)
        grid.add_column(min_width=36, no_wrap=True)
        grid.add_column(overflow="fold")
        for row in list(self.rows.values()):
            label = Text(STEP_LABELS[row.step])
            if row.state != "running":
                style = "green" if row.state == "done" else "bold red"
                grid.add_row(Text(MARKS[row.state], style=style), label, Text(row.detail))
            elif row.percent is not None:  # the restore's share of pg_restore's items
                progress = Table.grid(padding=(0, 1))
                progress.add_row(
                    ProgressBar(total=100, completed=row.percent, width=30), f"{row.percent}%"
                )
                grid.add_row(self.spinner, label, progress)
            else:
                grid.add_row(self.spinner, label, Text(row.detail))
        return grid


def result_lines(result: RollbackResult) -> list[str]:
    lines = ["", "Rollback " + ("SUCCEEDED" if result.ok else "FAILED") + f" (run {result.run_id})"]
    if result.error:
        lines.append(f"  error         {shown(result.error)}")
    lines.append(f"  state         {result.environment_state}")
    if result.downtime_seconds is not None:
        lines.append(
            f"  downtime      {humanize.duration(result.downtime_seconds)} "
            f"({_DOWN_SINCE.get(result.cutover_mode, 'containers stopped')} → health checks "
            "passing)"
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


def taken_backup_lines(taken: TakenBackup) -> list[str]:
    backup, known = taken.backup, taken.provenance
    schema = (
        f"{known.schema_version or 'unknown'} ({known.migrations_table})"
        if known.migrations_kind is not None
        else "not recorded (no migrations_table configured)"
    )
    lines = [
        f"Backup of {shown(known.environment)} written: {shown(backup.path)}",
        f"  size          {humanize.size(known.size_bytes)}, readable (pg_restore --list)",
        f"  sha256        {known.sha256}",
        f"  kind          {known.kind.value}, by {shown(known.created_by)}",
        f"  commit        {shown(known.deployed_commit or 'unknown')}",
        f"  schema        {shown(schema)}",
        f"  tools         {taken.tools.describe()}",
        f"  took          {humanize.duration(taken.seconds)}",
        f"  provenance    {shown(sidecar_path(backup.path))}",
    ]
    return lines + [f"  note          {shown(note)}" for note in known.notes]


# -- Code and full rollbacks (services/code_rollback.py, services/full_rollback.py) --------


def _commit_row(commit: CommitInfo, now: datetime) -> str:
    age = humanize.age((now - commit.authored_at).total_seconds())
    author = shown(commit.author_name, 60)
    return f"{commit.short_sha} {shown(commit.subject, 100)} — {author}, {age} ago"


def code_rows(plan: CodeRollbackPlan) -> list[tuple[str, str]]:
    """What the code rollback (or a full rollback's code half) reverts and pushes."""
    code, target, now = plan.code, plan.target, plan.planned_at
    after = (
        f"waits up to {target.version_wait_seconds:g} s for "
        f"{shown(display_url(target.version_url or ''))} to report the revert, then the health "
        "checks"
        if waits_for_version(target)
        else "the health checks (no version endpoint configured)"
    )
    commits = [_commit_row(c, now) for c in code.reverts]
    messages = [shown(m.split("\n", 1)[0]) for m in code.messages]
    return [
        ("remote", shown(code.remote)),
        ("branch", f"{shown(code.branch)} at {code.short_tip} (the plan is bound to this tip)"),
        ("revert", commits[0]),
        *(("", line) for line in commits[1:]),
        ("pushes", messages[0] + " (each names the run and the requester)"),
        *(("", line) for line in messages[1:]),
        *(("stays", _commit_row(c, now)) for c in code.pending[:10]),
        ("code back to", f"{code.short_target} (its tree); never a force push"),
        ("after push", after),
    ]


def code_plan_rows(plan: CodeRollbackPlan) -> list[tuple[str, str]]:
    steps = expected_steps("code", None, waits_for_version=waits_for_version(plan.target))
    return [*code_rows(plan), ("steps", " → ".join(STEP_LABELS[s] for s in steps))]


def full_plan_rows(plan: FullRollbackPlan) -> list[tuple[str, str]]:
    """The database half's rows, the code half's, and the one health check after both."""
    database = [row for row in plan_rows(plan.database.plan) if row[0] != "steps"]
    note = ("warning" if "⚠️" in plan.code_note else "code half", shown(plan.code_note))
    code = code_rows(plan.code) if plan.code is not None else []
    steps = expected_steps(
        "full",
        plan.database.plan.strategy.value,
        plan.database.plan.cutover_mode.value,
        waits_for_version=plan.code is not None and waits_for_version(plan.code.target),
    )
    return [
        *database,
        note,
        *code,
        ("health", HEALTH_NOTE),
        ("steps", " → ".join(STEP_LABELS[s] for s in steps)),
    ]


def code_result_lines(result: RollbackResult) -> list[str]:
    """A code or full rollback's extra lines: what was pushed, where each half stands."""
    lines = []
    pushed = result.code or {}
    if pushed.get("pushed"):
        lines.append(
            f"  pushed        {pushed.get('branch')}: {str(pushed.get('previous_tip'))[:7]}.."
            f"{str(pushed.get('new_tip'))[:7]} ({len(pushed.get('pushed') or [])} revert commit(s))"
        )
    for half, state in (result.halves or {}).items():
        lines.append(f"  {half + ' half':<13} {shown(state)}")
    return lines
