"""The command line's side of watching an environment after its rollback: what `rollback`
prints about the window (and, with --watch, each event as it comes), `watch` and `status`.

A terminal does not block for the window unless asked: the window is persisted, and a
running `rollback-bot serve` on the same run store watches it (or `rollback-bot watch ENV`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.terminal import shown
from services import humanize
from services.bundle import Services
from services.monitor_events import MonitorKind, at_text, failed_text
from services.monitoring import (
    MonitorEvent,
    Watch,
    WindowStatus,
    close_unwatched,
    lease_seconds,
    open_watch,
    open_windows,
    run_watch,
)
from services.run_store import RunRecord


class WatchPrinter:
    """A monitoring listener printing one line per event (and the log excerpts)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    async def __call__(self, event: MonitorEvent) -> None:
        print("\n".join(watch_lines(event)), file=self.out, flush=True)


def _every(watch: Watch) -> str:
    return f"health every {humanize.duration(watch.interval_seconds)}"


def watch_lines(event: MonitorEvent) -> list[str]:
    watch = event.watch
    env, until, now = shown(watch.environment), at_text(watch.until), f"{event.at:%H:%M:%S}"
    if event.kind is MonitorKind.STARTED:
        return [
            f"Watching {env} until {until} ({_every(watch)}); Ctrl-C stops watching here "
            f"(then `rollback-bot watch {env}` or a running `rollback-bot serve` goes on)."
        ]
    if event.kind is MonitorKind.RESUMED:
        return [f"Took over the watch of {env}: watching until {until} ({_every(watch)})."]
    if event.kind is MonitorKind.DEGRADED:
        lines = [f"{now} ✗ health DEGRADED: {shown(failed_text(event.failed))}"]
        for excerpt in event.excerpts:
            if excerpt.error:
                lines.append(f"  logs of {shown(excerpt.container)}: {shown(excerpt.error)}")
                continue
            lines.append(f"  last lines of {shown(excerpt.container)}:")
            lines += [f"    | {shown(line)}" for line in excerpt.text.split("\n") if excerpt.text]
        return lines
    if event.kind is MonitorKind.RECOVERED:
        return [f"{now} ✓ health back after {humanize.duration(event.degraded_seconds or 0.0)}"]
    return [shown(event.line or "Monitoring ended.")]


async def monitor_after_rollback(
    services: Services, run_id: str, *, here: bool, out: TextIO | None = None
) -> None:
    """After a successful rollback on the command line: open its window; with `here`
    (--watch) watch it to the end in this process, else say who will."""
    out = out or sys.stdout
    watch = await open_watch(services, run_id=run_id, watching=here)
    if watch is None:
        return
    if here:
        await run_watch(services, watch, WatchPrinter(out))
        return
    env = shown(watch.environment)
    print(
        f"Monitoring: watching {env} until {at_text(watch.until)} ({_every(watch)}) is left "
        f"to a running `rollback-bot serve` on this run store, or `rollback-bot watch {env}` "
        f"here — `rollback-bot status {env}` shows it.",
        file=out,
        flush=True,
    )


async def watch_window(services: Services, environment: str, out: TextIO | None = None) -> bool:
    """`rollback-bot watch ENV`: watch the environment's open window here to its end, taking
    it over once no other process watches it. False: no window is open."""
    out = out or sys.stdout
    waiting = False
    while True:
        windows = await open_windows(services, environment)
        if not windows:
            if waiting:
                print("The watch ended in the other process.", file=out, flush=True)
            return waiting
        watch = windows[-1].watch
        if await run_watch(services, watch, WatchPrinter(out), resumed=True) is not None:
            return True
        if not waiting:
            print(
                f"{shown(environment)} is watched by another bot process until "
                f"{at_text(watch.until)}; this takes over if it stops (Ctrl-C leaves).",
                file=out,
                flush=True,
            )
            waiting = True
        await asyncio.sleep(lease_seconds(watch.interval_seconds) / 3)


def window_line(window: WindowStatus) -> str:
    watch, state = window.watch, window.state
    degraded = state.degraded if state is not None else None
    checks = state.checks if state is not None else 0
    health = (
        f"DEGRADED since {at_text(degraded.began)} ({failed_text(degraded.failed)})"
        if degraded is not None
        else f"healthy so far ({checks} check{'s' if checks != 1 else ''})"
    )
    who = (
        f"watched by {window.watcher}"
        if window.watcher
        else "nobody is watching it now: start `rollback-bot serve` or run "
        f"`rollback-bot watch {watch.environment}`"
    )
    return shown(
        f"Monitoring {watch.environment} after run {watch.run_id} until {at_text(watch.until)}: "
        f"{health}; {who}.",
        2000,
    )


def run_status_line(run: RunRecord) -> str:
    step = f", step {run.current_step}" if run.current_step else ""
    return shown(
        f"Run {run.id} of {run.environment} ({run.kind}): {run.status.value.replace('_', ' ')}"
        f"{step}, requested by {run.requested_by} at {run.requested_at:%Y-%m-%d %H:%M} UTC."
    )


async def status_lines(services: Services, environment: str | None) -> list[str]:
    """`rollback-bot status [ENV]`: the rollbacks in progress and the open windows (those
    past their end that nobody watched to it are closed first, saying so in their runs)."""
    await close_unwatched(services)
    runs = [
        r
        for r in await services.store.active_runs()
        if environment is None or r.environment == environment
    ]
    windows = await open_windows(services, environment)
    where = f" of {shown(environment)}" if environment else ""
    lines = [run_status_line(r) for r in runs] or [f"No rollback{where} in progress."]
    lines += [window_line(w) for w in windows] or [f"No monitoring window{where} open."]
    return lines
