"""The environment's containers: a small runtime interface, and its Docker Compose version.

Swarm stacks (services/swarm.py) and engines other than the local one (services/runtimes.py)
are behind the same interface.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiodocker
import aiohttp
from aiodocker.events import DockerEvents

from services.errors import ContainerError, DeadlineExceeded, EngineUnavailable

T = TypeVar("T")

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str
    state: str  # Docker's: running, exited, created, paused, restarting, dead
    health: str | None = None  # healthy / unhealthy / starting when the image defines a check
    project: str = ""  # its Compose project: whose deadline applies to calls about it
    # A Swarm service: the replicas it is set to; in what a stop returns, the count it had
    # (what start scales it back to). None for a container.
    replicas: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def to_stop(self) -> bool:
        """What a stop brings down: a running container, or a service set to run even while
        its tasks are still starting (left alone, they would come up mid-restore)."""
        return self.running or bool(self.replicas)


@dataclass(frozen=True)
class ContainerOutcome:
    container: Container
    ok: bool
    seconds: float
    error: str = ""


class Runtime(Protocol):
    """What the workflow needs from wherever the environment runs; `project` is an
    environment's `workload` (its Compose project, or where its stack runs)."""

    async def ping(self, project: str | None = None) -> None:
        """The engine that runs `project` answers (None: every engine this runtime uses)."""
        ...

    async def containers(self, project: str) -> list[Container]: ...

    async def stop(
        self, containers: Sequence[Container], timeout: float
    ) -> list[ContainerOutcome]: ...

    async def start(self, containers: Sequence[Container]) -> list[ContainerOutcome]: ...

    async def pause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Freeze the processes (the cut-over mode `pause`); one already frozen is ok."""
        ...

    async def unpause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Thaw them; one not frozen (any more) is ok."""
        ...

    async def logs(self, container: Container, lines: int) -> str:
        """The last `lines` lines the container wrote (stdout and stderr, interleaved)."""
        ...


def translate(error: BaseException) -> ContainerError:
    """An engine or connection error as the service boundary reports it."""
    if isinstance(error, aiodocker.DockerError):
        if error.status == 900:  # aiodocker's "Cannot connect to Docker Engine via …"
            return EngineUnavailable(str(error.message))
        message = error.message if isinstance(error.message, str) else str(error.message)
        return ContainerError(f"Docker: {message}")
    return EngineUnavailable(str(error) or type(error).__name__)


ENGINE_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, OSError)

# The engine's 409 when a container already is as asked: a pause or thaw run twice (a
# retry, recovery after a kill) is done, not failed.
_ALREADY = {"pause": "is already paused", "unpause": "is not paused"}


async def bounded(call: Awaitable[T], seconds: float, what: str) -> T:
    """One call to an engine under its deadline: a hung engine is an ordinary failure."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise DeadlineExceeded(f"the Docker engine did not answer ({what})", seconds) from None


class EngineRuntime:
    """A runtime on one Docker engine, whose aiodocker client is owned by the caller.

    Every call to the engine has a deadline: `deadlines` per project (the environment's
    `timeouts.docker_seconds`), else `default_seconds`. A hung engine is then an ordinary
    DeadlineExceeded, never a wait forever.
    """

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        deadlines: Mapping[str, float] | None = None,
        default_seconds: float = 30.0,
    ) -> None:
        self._docker = docker
        self._deadlines = dict(deadlines or {})
        self._default_seconds = default_seconds

    def _seconds(self, project: str) -> float:
        return self._deadlines.get(project, self._default_seconds)


class DockerRuntime(EngineRuntime):
    """Compose projects on one Docker engine (deadlines per Compose project; a stop adds
    its grace period)."""

    @functools.cached_property
    def _pending(self) -> dict[str, asyncio.Future[ContainerOutcome]]:
        """Stop calls still finishing in the engine after the processes died."""
        return {}

    async def ping(self, project: str | None = None) -> None:
        try:
            await bounded(self._docker.version(), self._default_seconds, "version")
        except ENGINE_ERRORS as error:
            raise EngineUnavailable(str(error) or type(error).__name__) from error

    async def containers(self, project: str) -> list[Container]:
        """The project's service containers (one-off `run` containers excluded), by name."""
        try:
            found = await bounded(
                self._docker.containers.list(
                    all=True, filters={"label": [f"{PROJECT_LABEL}={project}"]}
                ),
                self._seconds(project),
                f"listing the containers of {project}",
            )
        except ENGINE_ERRORS as error:
            raise translate(error) from error
        containers = [self._describe(item._container) for item in found]
        return sorted((c for c in containers if c is not None), key=lambda c: (c.service, c.name))

    @staticmethod
    def _describe(raw: dict[str, Any]) -> Container | None:
        labels = raw.get("Labels") or {}
        if str(labels.get(ONEOFF_LABEL, "False")).lower() == "true":
            return None
        names = raw.get("Names") or [raw["Id"][:12]]
        status = str(raw.get("Status", ""))
        health = None
        for word in ("unhealthy", "healthy", "health: starting"):
            if f"({word})" in status:
                health = word.removeprefix("health: ")
                break
        return Container(
            id=raw["Id"],
            name=names[0].lstrip("/"),
            service=str(labels.get(SERVICE_LABEL, "")),
            state=str(raw.get("State", "unknown")),
            health=health,
            project=str(labels.get(PROJECT_LABEL, "")),
        )

    async def _one(self, container: Container, action: str, timeout: float) -> ContainerOutcome:
        began = time.monotonic()
        seconds = self._seconds(container.project)
        try:
            handle = self._docker.containers.container(container.id)
            if action == "stop":
                # The engine sends SIGTERM, then SIGKILL after `t` seconds.
                grace = max(1, round(timeout))
                await bounded(handle.stop(t=grace), grace + seconds, f"stop {container.name}")
            else:
                call = {"start": handle.start, "pause": handle.pause, "unpause": handle.unpause}
                await bounded(call[action](), seconds, f"{action} {container.name}")
        except DeadlineExceeded as error:
            return ContainerOutcome(container, False, time.monotonic() - began, str(error))
        except ENGINE_ERRORS as error:
            if action in _ALREADY and _ALREADY[action] in str(getattr(error, "message", "")):
                return ContainerOutcome(container, True, time.monotonic() - began)
            return ContainerOutcome(
                container, False, time.monotonic() - began, str(translate(error))
            )
        return ContainerOutcome(container, True, time.monotonic() - began)

    async def stop(self, containers: Sequence[Container], timeout: float) -> list[ContainerOutcome]:
        """Stop all at once; returns as soon as every process has exited.

        The engine reports a container's `die` when its process exits, but finishes the
        stop (network and mounts torn down, one container at a time) up to a second later
        for 20 containers. The application is down at `die`, so the rollback goes on
        while the engine finishes; `start` waits for those stops first.
        """
        events = DockerEvents(self._docker)  # type: ignore[no-untyped-call]
        # `since` replays what happened before the stream was open: no `die` is missed.
        since = str(int(time.time()) - 1)
        died = events.subscribe(  # type: ignore[no-untyped-call]
            since=since, filters=json.dumps({"type": ["container"], "event": ["die"]})
        )
        stops = {c.id: asyncio.ensure_future(self._one(c, "stop", timeout)) for c in containers}
        for cid, future in stops.items():
            self._pending[cid] = future
            future.add_done_callback(lambda f, cid=cid: self._forget(cid, f))  # type: ignore[misc]
        began = time.monotonic()
        outcomes: dict[str, ContainerOutcome] = {}
        by_id = {c.id: c for c in containers}

        async def watch_deaths() -> None:
            while len(outcomes) < len(stops):
                event = await died.get()
                if event is None:
                    return  # the stream ended: the stop calls answer instead
                cid = event.get("id") or event.get("Actor", {}).get("ID")
                if cid in by_id and cid not in outcomes:
                    outcomes[cid] = ContainerOutcome(by_id[cid], True, time.monotonic() - began)

        watcher = asyncio.ensure_future(watch_deaths())
        try:
            pending: set[asyncio.Future[Any]] = {watcher, *stops.values()}
            while len(outcomes) < len(stops) and pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished is watcher:
                        continue
                    outcome: ContainerOutcome = finished.result()
                    # A failed call counts even after `die`; a finished one confirms it.
                    if not outcome.ok or outcome.container.id not in outcomes:
                        outcomes[outcome.container.id] = outcome
        finally:
            watcher.cancel()
            await events.stop()  # type: ignore[no-untyped-call]
        return [outcomes[c.id] for c in containers]

    def _forget(self, cid: str, future: asyncio.Future[ContainerOutcome]) -> None:
        if self._pending.get(cid) is future:
            del self._pending[cid]

    async def start(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        return list(await asyncio.gather(*(self._start(c) for c in containers)))

    async def pause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Freeze all at once (the cgroup freezer: tens of milliseconds, no signal sent)."""
        return list(await asyncio.gather(*(self._one(c, "pause", 0) for c in containers)))

    async def unpause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        return list(await asyncio.gather(*(self._one(c, "unpause", 0) for c in containers)))

    async def _start(self, container: Container) -> ContainerOutcome:
        stopping = self._pending.pop(container.id, None)
        if stopping is not None:
            await stopping  # the engine must have finished stopping it
        return await self._one(container, "start", 0)

    async def logs(self, container: Container, lines: int) -> str:
        try:
            handle = self._docker.containers.container(container.id)
            chunks = await bounded(
                handle.log(stdout=True, stderr=True, tail=str(lines)),
                self._seconds(container.project),
                f"logs of {container.name}",
            )
        except ENGINE_ERRORS as error:
            raise translate(error) from error
        return "".join(chunks)  # undecodable bytes were dropped by aiodocker
