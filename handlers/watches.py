"""The Slack side of watching an environment after its rollback: the run's message shows the
watch, its thread gets the alerts (with the failing containers' last log lines), the
recovery and the final line, the contacts are told at once. The watching is the service's
(services/monitoring.py); this runs it in the bot's background task set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from slack_sdk.models.blocks import Block

from handlers.live import LiveMessages
from handlers.messages.log_excerpt import excerpt_text, log_excerpt_blocks
from handlers.messages.monitoring import monitoring_reply
from handlers.tasks import BackgroundTasks
from services.bundle import Services
from services.log_excerpts import recorded_excerpts
from services.monitor_events import MonitorKind
from services.monitoring import (
    MonitorEvent,
    Watch,
    close_unwatched,
    open_watch,
    run_watch,
    watches_to_take_over,
)
from services.notifications import Notice
from services.run_store import RunRecord

log = logging.getLogger(__name__)

ThreadPoster = Callable[[RunRecord, list[Block], str], Awaitable[None]]
Notify = Callable[[str, Notice], Awaitable[None]]


class Watches:
    def __init__(
        self,
        *,
        services: Services,
        tasks: BackgroundTasks,
        live: LiveMessages,
        thread: ThreadPoster,
        notify: Notify,
    ) -> None:
        self.services = services
        self.tasks = tasks
        self.live = live
        self.thread = thread
        self.notify = notify
        self._running: dict[str, asyncio.Task[None]] = {}

    async def start(self, run_id: str) -> None:
        """After a rollback's success: open its window and watch it from this process.
        Never raises (the run's report must go out whatever happens here)."""
        try:
            watch = await open_watch(self.services, run_id=run_id)
        except Exception:
            log.exception("run %s: monitoring could not start", run_id)
            return
        if watch is not None:
            self._watch(watch, resumed=False)
            self.live.refresh(run_id)

    async def take_over(self) -> None:
        """Watch what nobody watches (a process died or stopped), and close windows that
        ended unwatched, saying so (each in exactly one process)."""
        for watch in await watches_to_take_over(self.services):
            self._watch(watch, resumed=True)
        for watch, line in await close_unwatched(self.services):
            self._tell_later(MonitorEvent(watch, MonitorKind.ENDED, line=line))

    def _watch(self, watch: Watch, *, resumed: bool) -> None:
        if watch.run_id in self._running:
            return

        async def watching() -> None:
            try:
                await run_watch(self.services, watch, self._show, resumed=resumed)
            finally:
                self._running.pop(watch.run_id, None)

        # Cancelled at shut-down: the window is given back and the next process resumes it.
        self._running[watch.run_id] = self.tasks.spawn(
            watching(), name=f"watch-{watch.run_id}", cancel_at_close=True
        )

    def _tell_later(self, event: MonitorEvent) -> None:
        self.tasks.spawn(self._show(event), name=f"watch-note-{event.watch.run_id}")

    async def _show(self, event: MonitorEvent) -> None:
        """Called by the watch, which goes on meanwhile only after Slack answered (bounded
        by the client's timeout): the alert reaches people before the next round."""
        run_id = event.watch.run_id
        self.live.refresh(run_id)
        reply = monitoring_reply(event)
        if reply is not None:
            await self.thread(await self.services.store.get(run_id), *reply)
        if event.kind is MonitorKind.DEGRADED:
            await self.notify(run_id, Notice.DEGRADED)
        elif event.kind is MonitorKind.RECOVERED:
            await self.notify(run_id, Notice.HEALTHY_AGAIN)

    async def post_health_excerpts(
        self, run_id: str, *, after: Iterable[asyncio.Task[None]]
    ) -> None:
        """The rollback's health step failed: what the failing containers wrote last, in the
        thread right after the failure it explains."""
        await asyncio.gather(*after, return_exceptions=True)
        excerpts = await recorded_excerpts(self.services.store, run_id, during="health")
        if excerpts:
            blocks = log_excerpt_blocks(
                excerpts, title="📜 What the failing containers wrote last:"
            )
            await self.thread(await self.services.store.get(run_id), blocks, excerpt_text(excerpts))
