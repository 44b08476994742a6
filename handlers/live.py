"""Keeps each run's one channel message up to date.

Anything that changes a run (a step, a click, the sweeper) asks for a refresh; the message is
re-rendered from the run store when it is sent, so the latest state wins and bursts of
changes coalesce into at most one `chat.update` per `interval` per message. A 429 is
retried after its Retry-After by the client's retry handler, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient

from handlers.messages.run_message import run_message, run_message_text
from handlers.messages.text import as_dicts, fallback
from handlers.tasks import BackgroundTasks
from services.bundle import Services
from services.run_view import load_run_view

log = logging.getLogger(__name__)


@dataclass
class _Message:
    requested: int = 0
    sent: int = 0
    last_sent: float = float("-inf")
    pump: asyncio.Task[None] | None = None
    delivered: asyncio.Condition = field(default_factory=asyncio.Condition)


class LiveMessages:
    def __init__(
        self,
        client: AsyncWebClient,
        services: Services,
        tasks: BackgroundTasks,
        *,
        interval: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._services = services
        self._tasks = tasks
        self._interval = interval
        self._now = now
        self._messages: dict[str, _Message] = {}
        self.updates_sent = 0

    def refresh(self, run_id: str) -> int:
        """Ask for the run's message to show its current state; returns the request's number."""
        message = self._messages.setdefault(run_id, _Message())
        message.requested += 1
        if message.pump is None:
            message.pump = self._tasks.spawn(self._pump(run_id, message), name=f"live-{run_id}")
        return message.requested

    async def flush(self, run_id: str) -> None:
        """Refresh and wait until Slack shows the state as of now."""
        wanted = self.refresh(run_id)
        message = self._messages[run_id]
        async with message.delivered:
            await message.delivered.wait_for(lambda: message.sent >= wanted)

    async def _pump(self, run_id: str, message: _Message) -> None:
        loop = asyncio.get_running_loop()
        try:
            while message.sent < message.requested:
                delay = message.last_sent + self._interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                target = message.requested
                try:
                    await self._update(run_id)
                except Exception:
                    # Logged, not retried here: the next change renders the whole state again.
                    log.exception("could not update the message of run %s", run_id)
                message.sent = target
                message.last_sent = loop.time()
                async with message.delivered:
                    message.delivered.notify_all()
        finally:
            message.pump = None

    async def _update(self, run_id: str) -> None:
        view = await load_run_view(self._services, run_id)
        if view.run.slack_channel is None or view.run.slack_ts is None:
            return
        await self._client.chat_update(
            channel=view.run.slack_channel,
            ts=view.run.slack_ts,
            text=fallback(run_message_text(view)),
            blocks=as_dicts(run_message(view, now=self._now())),
        )
        self.updates_sent += 1
