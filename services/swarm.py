"""Swarm stacks behind the Runtime seam: the services of a stack are scaled to 0 and back.

A stack is the services labelled `com.docker.stack.namespace=NAME` (what `docker stack
deploy` writes). Each service is one `Container` whose `replicas` is its replica count; a
stop scales it to 0 and returns the count it had, which a start (or recovery, from the
run's journal) scales it back to exactly. Stop waits until no task of it runs any more;
start waits until as many tasks run as it had (the tasks converge), and reports the
tasks' own error when they do not within the environment's Docker deadline.

Only replicated services can be scaled: a stack with a global-mode service is refused when
it is listed, so at plan time, before anything changes (its tasks would keep running on the
database during the restore, and a service cannot change mode).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import aiodocker

from services.containers import (
    ENGINE_ERRORS,
    Container,
    ContainerOutcome,
    EngineRuntime,
    bounded,
    translate,
)
from services.environments import STACK_LABEL, STACK_PAUSE
from services.errors import ContainerError, DeadlineExceeded, RollbackError

# Swarm task states (Docker's task life cycle): before a container exists, and with one.
_SCHEDULING = frozenset({"new", "allocated", "pending", "assigned", "accepted"})
_CONTAINER = frozenset({"preparing", "ready", "starting", "running"})
POLL_SECONDS = 0.1
DOCKER_DEFAULT_GRACE = 10.0  # the engine's stop grace period when the spec sets none
_UPDATE_ATTEMPTS = 3  # a service changed between our inspect and our update: read it again

Task = Mapping[str, Any]


def _replicas(service: Mapping[str, Any]) -> int:
    mode = service["Spec"].get("Mode") or {}
    if "Replicated" not in mode:
        kind = next(iter(mode), "unknown")
        raise ContainerError(
            f"service {service['Spec']['Name']} is in {kind.lower()} mode: the bot scales "
            "replicated services to 0 and back, and cannot stop this one without changing its "
            "spec; make it replicated or move it out of the stack"
        )
    return int(mode["Replicated"].get("Replicas", 1))


def _stop_grace(service: Mapping[str, Any]) -> float:
    """Seconds the engine gives a task between SIGTERM and SIGKILL."""
    spec = service["Spec"]["TaskTemplate"].get("ContainerSpec") or {}
    grace = spec.get("StopGracePeriod")
    return grace / 1e9 if grace is not None else DOCKER_DEFAULT_GRACE


def _running(tasks: Sequence[Task]) -> int:
    return sum(
        1
        for t in tasks
        if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running"
    )


def _active(tasks: Sequence[Task]) -> int:
    """Tasks whose container runs or may still start: one with a container, or one still
    being scheduled that is meant to run (a pending task told to shut down never starts)."""
    return sum(
        1
        for t in tasks
        if (state := (t.get("Status") or {}).get("State")) in _CONTAINER
        or (state in _SCHEDULING and t.get("DesiredState") == "running")
    )


def _task_error(tasks: Sequence[Task]) -> str:
    """The newest task's complaint (`no suitable node`, `non-zero exit (127)`), if any."""
    for task in sorted(tasks, key=lambda t: str(t.get("UpdatedAt", "")), reverse=True):
        status = task.get("Status") or {}
        detail = status.get("Err") or (
            status.get("Message") if status.get("State") not in ("running", "shutdown") else ""
        )
        if detail:
            return f"{status.get('State')}: {detail}"
    return ""


@dataclass(frozen=True)
class _Wait:
    """One service a stop or start waits for."""

    container: Container
    done: Callable[[Sequence[Task]], bool]
    deadline: float  # time.monotonic()


class SwarmRuntime(EngineRuntime):
    """The stacks of one Swarm, through a manager's engine.

    The deadline per stack bounds each engine call and the convergence of a start; a stop
    gets the services' stop grace period more.
    """

    async def ping(self, project: str | None = None) -> None:
        seconds = self._seconds(project) if project else self._default_seconds
        try:
            info = await bounded(self._docker.system.info(), seconds, "info")
        except ENGINE_ERRORS as error:
            raise translate(error) from error
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise ContainerError(
                "the Docker engine is not a Swarm manager (swarm "
                f"{swarm.get('LocalNodeState') or 'inactive'}): a stack is reached through "
                "a manager's engine"
            )

    async def containers(self, project: str) -> list[Container]:
        """The stack's services, by name; refused if one of them cannot be scaled."""
        seconds = self._seconds(project)
        try:
            services = await bounded(
                self._docker.services.list(filters={"label": f"{STACK_LABEL}={project}"}),
                seconds,
                f"listing the services of stack {project}",
            )
            tasks = await self._tasks([s["ID"] for s in services], seconds)
        except ENGINE_ERRORS as error:
            raise translate(error) from error
        found = [self._describe(project, s, tasks.get(s["ID"], [])) for s in services]
        return sorted(found, key=lambda c: c.name)

    async def _tasks(self, service_ids: Sequence[str], seconds: float) -> dict[str, list[Task]]:
        """Every task of these services, by service (one call: filters are OR-ed)."""
        if not service_ids:
            return {}
        found = await bounded(
            self._docker.tasks.list(filters={"service": list(service_ids)}),
            seconds,
            "listing tasks",
        )
        by_service: dict[str, list[Task]] = {sid: [] for sid in service_ids}
        for task in found:
            by_service.setdefault(str(task.get("ServiceID")), []).append(task)
        return by_service

    @staticmethod
    def _describe(stack: str, service: Mapping[str, Any], tasks: Sequence[Task]) -> Container:
        replicas = _replicas(service)
        running, active = _running(tasks), _active(tasks)
        if replicas and running >= replicas:
            state = "running"
        elif replicas:
            state = f"{running}/{replicas} tasks running"
        elif active:
            state = f"scaled to 0, {active} task(s) stopping"
        else:
            state = "scaled to 0"
        name = str(service["Spec"]["Name"])
        return Container(
            id=str(service["ID"]),
            name=name,
            service=name.removeprefix(f"{stack}_"),
            state=state,
            project=stack,
            replicas=replicas,
        )

    async def _scale(
        self, container: Container, replicas: int, expect: int | None
    ) -> Mapping[str, Any]:
        """Set the service's replica count; returns the service as it was. `expect`: the
        count the caller recorded, refused if the service has another one now (the journal
        must be exact). The update carries the version read: a change in between is read
        again."""
        seconds = self._seconds(container.project)
        for attempt in range(_UPDATE_ATTEMPTS):
            service = await bounded(
                self._docker.services.inspect(container.id), seconds, f"inspect {container.name}"
            )
            had = _replicas(service)
            if expect is not None and had != expect:
                raise ContainerError(
                    f"it has {had} replicas now, not the {expect} recorded; left as it is"
                )
            if had == replicas:
                return service
            spec = copy.deepcopy(service["Spec"])
            spec["Mode"]["Replicated"]["Replicas"] = replicas
            try:
                # aiodocker's services.update changes only the image: the raw endpoint.
                await bounded(
                    self._docker._query_json(
                        f"services/{container.id}/update",
                        method="POST",
                        params={"version": str(service["Version"]["Index"])},
                        data=spec,
                    ),
                    seconds,
                    f"scale {container.name} to {replicas}",
                )
            except aiodocker.DockerError as error:
                if "out of sequence" in str(error.message) and attempt + 1 < _UPDATE_ATTEMPTS:
                    continue
                raise
            return service
        raise AssertionError("unreachable")

    async def _wait(self, waits: Sequence[_Wait]) -> dict[str, str]:
        """Poll the tasks of these services until each one's condition holds or its deadline
        passes; returns why each late one is late (by service id)."""
        pending = {w.container.id: w for w in waits}
        late: dict[str, str] = {}
        last: dict[str, list[Task]] = {}
        problem = ""
        while pending:
            try:
                tasks = await self._tasks(list(pending), self._default_seconds)
                last.update(tasks)
            except (DeadlineExceeded, *ENGINE_ERRORS) as error:
                problem = str(error if isinstance(error, DeadlineExceeded) else translate(error))
            now = time.monotonic()
            for sid, wait in list(pending.items()):
                if sid in last and wait.done(last[sid]):
                    del pending[sid]
                elif now >= wait.deadline:
                    del pending[sid]
                    late[sid] = _task_error(last.get(sid, [])) or problem
            if pending:
                await asyncio.sleep(POLL_SECONDS)
        return late

    async def stop(self, containers: Sequence[Container], timeout: float) -> list[ContainerOutcome]:
        """Scale each service to 0 and wait until none of its tasks runs.

        A service whose tasks outlive the deadline, or a stop interrupted, is scaled back to
        the count it had before this returns or raises: a failed outcome means running.
        """
        began = time.monotonic()
        outcomes: dict[str, ContainerOutcome] = {}
        scaled: dict[str, Container] = {}  # scaled to 0, carrying the count it had

        async def scale_down(container: Container) -> _Wait | None:
            try:
                service = await self._scale(container, 0, expect=container.replicas)
            except (RollbackError, *ENGINE_ERRORS) as error:
                outcomes[container.id] = self._failed(container, began, error)
                return None
            scaled[container.id] = replace(container, replicas=_replicas(service))
            grace = max(timeout, _stop_grace(service))
            deadline = time.monotonic() + grace + self._seconds(container.project)
            return _Wait(scaled[container.id], lambda tasks: _active(tasks) == 0, deadline)

        try:
            waits = await asyncio.gather(*(scale_down(c) for c in containers))
            late = await self._wait([w for w in waits if w is not None])
        except BaseException:
            await asyncio.shield(self._scale_back(list(scaled.values())))
            raise
        back = [scaled[sid] for sid in late]
        undone = await self._scale_back(back)
        for sid, container in scaled.items():
            if sid in late:
                outcomes[sid] = ContainerOutcome(
                    container,
                    False,
                    time.monotonic() - began,
                    f"tasks still running after {time.monotonic() - began:.0f} s"
                    + (f" ({late[sid]})" if late[sid] else "")
                    + f"; {undone.get(sid, f'scaled back to {container.replicas}')}",
                )
            else:
                outcomes[sid] = ContainerOutcome(container, True, time.monotonic() - began)
        return [outcomes[c.id] for c in containers]

    async def _scale_back(self, containers: Sequence[Container]) -> dict[str, str]:
        """Undo this stop's scale-downs; returns what could not be undone, by service id."""

        async def one(container: Container) -> tuple[str, str]:
            try:
                await self._scale(container, container.replicas or 0, expect=None)
            except (RollbackError, *ENGINE_ERRORS) as error:
                return container.id, f"NOT scaled back to {container.replicas}: {error}"
            return container.id, ""

        results = await asyncio.gather(*(one(c) for c in containers))
        return {sid: problem for sid, problem in results if problem}

    async def start(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Scale each service back to `replicas` (the count its stop returned) and wait
        until that many of its tasks run."""
        began = time.monotonic()
        outcomes: dict[str, ContainerOutcome] = {}

        async def scale_up(container: Container) -> _Wait | None:
            target = container.replicas
            if target is None:
                outcomes[container.id] = self._failed(
                    container, began, ContainerError("no replica count to scale it back to")
                )
                return None
            try:
                await self._scale(container, target, expect=None)
            except (RollbackError, *ENGINE_ERRORS) as error:
                outcomes[container.id] = self._failed(container, began, error)
                return None
            deadline = time.monotonic() + self._seconds(container.project)
            return _Wait(container, lambda tasks: _running(tasks) >= target, deadline)

        waits = [w for w in await asyncio.gather(*(scale_up(c) for c in containers)) if w]
        late = await self._wait(waits)
        for wait in waits:
            container = wait.container
            seconds = time.monotonic() - began
            if container.id in late:
                reason = late[container.id]
                outcomes[container.id] = ContainerOutcome(
                    container,
                    False,
                    seconds,
                    f"its tasks did not converge to {container.replicas} running within "
                    f"{self._seconds(container.project):g} s" + (f" ({reason})" if reason else ""),
                )
            else:
                outcomes[container.id] = ContainerOutcome(container, True, seconds)
        return [outcomes[c.id] for c in containers]

    async def logs(self, container: Container, lines: int) -> str:
        """The service's last lines, from all its tasks (the engine prefixes each with the
        task's name), as `docker service logs` shows them."""
        # Without follow, aiodocker returns a coroutine of the lines.
        call = cast(
            Awaitable[list[str]],
            self._docker.services.logs(container.id, stdout=True, stderr=True, tail=str(lines)),
        )
        try:
            found = await bounded(
                call,
                self._seconds(container.project),
                f"logs of {container.name}",
            )
        except ENGINE_ERRORS as error:
            raise translate(error) from error
        return "".join(found)

    async def pause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Refused (the environments file refuses cutover_mode = "pause" for a stack)."""
        return [ContainerOutcome(c, False, 0.0, STACK_PAUSE) for c in containers]

    async def unpause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        """Nothing of a stack is ever paused by the bot: there is nothing to thaw."""
        return [ContainerOutcome(c, True, 0.0) for c in containers]

    @staticmethod
    def _failed(container: Container, began: float, error: BaseException) -> ContainerOutcome:
        detail = error if isinstance(error, RollbackError) else translate(error)
        return ContainerOutcome(container, False, time.monotonic() - began, str(detail))
