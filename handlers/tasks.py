"""Background work the bot starts: kept referenced, and ended in order at shut-down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Tasks outliving the request that started them.

    Use as ``async with tasks:``. Services (the sweeper) start on entry and are cancelled on
    exit; critical tasks (running rollbacks) are waited for up to ``grace_seconds`` first,
    since cancelling one mid-way makes it compensate instead of finish.
    """

    def __init__(self, *, grace_seconds: float = 600.0) -> None:
        self.grace_seconds = grace_seconds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._critical: set[asyncio.Task[Any]] = set()
        self._services: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._service_tasks: set[asyncio.Task[Any]] = set()

    def add_service(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A loop to run while the bot runs (started on entry)."""
        self._services.append((name, factory))

    def spawn(
        self,
        coroutine: Coroutine[Any, Any, Any],
        *,
        name: str,
        critical: bool = False,
        cancel_at_close: bool = False,
    ) -> asyncio.Task[Any]:
        """`critical`: waited for at shut-down; `cancel_at_close`: cancelled at once there,
        like a service (a watch that the next process resumes)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        if critical:
            self._critical.add(task)
        if cancel_at_close:
            self._service_tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._critical.discard(task)
        self._service_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def __aenter__(self) -> Self:
        for name, factory in self._services:
            self._service_tasks.add(self.spawn(factory(), name=name))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._service_tasks:
            task.cancel()
        await asyncio.gather(*self._service_tasks, return_exceptions=True)
        self._service_tasks.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        # Work answering a click may be about to start a rollback: let it, briefly.
        answering = self._tasks - self._critical
        if answering:
            await asyncio.wait(answering, timeout=2.0)
        # Then every running rollback, including one started meanwhile, may finish.
        while self._critical and loop.time() < deadline:
            log.info("waiting for %d running rollback(s) to finish", len(self._critical))
            await asyncio.wait(set(self._critical), timeout=deadline - loop.time())
        # Let the reports of finished rollbacks go out, briefly, then stop the rest.
        others = set(self._tasks)
        if others:
            await asyncio.wait(others, timeout=2.0)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
