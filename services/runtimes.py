"""One Runtime for the bot: each environment's calls go to its own engine and kind.

The workflow calls `services.runtime` with an environment's `workload` (see
services/environments.py) and with containers that carry it as their `project`. The router
looks the workload up: which engine (the local one, or the environment's
`docker_endpoint`), which kind (Compose project or Swarm stack), and the name that
runtime knows it by. So a new runtime needs no change in the workflow: one more kind here.
An engine that does not answer fails only the calls about its own environments.

A method added to `Runtime` is routed the same way: `_each` for containers, `_route` for
a workload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import aiodocker

from services.containers import Container, ContainerOutcome, DockerRuntime, Runtime
from services.environments import DockerEndpoint, Environment
from services.errors import ContainerError, DeadlineExceeded, EndpointUnavailable, EngineUnavailable
from services.swarm import SwarmRuntime

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    runtime: Runtime  # the engine's Compose or Swarm runtime
    name: str  # the Compose project or stack, as that runtime knows it
    endpoint: str | None = None  # the configured docker_endpoint; None: the local engine


class RuntimeRouter:
    """Implements Runtime by routing each call to the runtime of the workload's environment."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    def _route(self, workload: str) -> Route:
        try:
            return self._routes[workload]
        except KeyError:
            raise ContainerError(f"no Docker engine is configured for {workload}") from None

    @staticmethod
    async def _reach(route: Route, call: Awaitable[T]) -> T:
        """A configured endpoint that does not answer is named in the error."""
        try:
            return await call
        except (EngineUnavailable, DeadlineExceeded) as error:
            if route.endpoint is None:
                raise
            detail = error.detail if isinstance(error, EngineUnavailable) else str(error)
            raise EndpointUnavailable(route.endpoint, detail) from error

    async def ping(self, project: str | None = None) -> None:
        if project is not None:
            route = self._route(project)
            await self._reach(route, route.runtime.ping(route.name))
            return
        engines = {id(r.runtime): r for r in self._routes.values()}
        for route in engines.values():
            await self._reach(route, route.runtime.ping())

    async def containers(self, project: str) -> list[Container]:
        route = self._route(project)
        found = await self._reach(route, route.runtime.containers(route.name))
        return [replace(c, project=project) for c in found]

    async def stop(self, containers: Sequence[Container], timeout: float) -> list[ContainerOutcome]:
        return await self._each(containers, lambda runtime, group: runtime.stop(group, timeout))

    async def start(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        return await self._each(containers, lambda runtime, group: runtime.start(group))

    async def pause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        return await self._each(containers, lambda runtime, group: runtime.pause(group))

    async def unpause(self, containers: Sequence[Container]) -> list[ContainerOutcome]:
        return await self._each(containers, lambda runtime, group: runtime.unpause(group))

    async def logs(self, container: Container, lines: int) -> str:
        route = self._route(container.project)
        inner = replace(container, project=route.name)
        return await self._reach(route, route.runtime.logs(inner, lines))

    async def _each(
        self,
        containers: Sequence[Container],
        call: Callable[[Runtime, list[Container]], Awaitable[list[ContainerOutcome]]],
    ) -> list[ContainerOutcome]:
        """`call` once per workload, concurrently; outcomes in the order given."""
        groups: dict[str, list[int]] = {}
        for index, container in enumerate(containers):
            groups.setdefault(container.project, []).append(index)
        outcomes: list[ContainerOutcome | None] = [None] * len(containers)

        async def one(workload: str, indexes: list[int]) -> None:
            try:
                route = self._route(workload)
            except ContainerError as error:
                for i in indexes:
                    outcomes[i] = ContainerOutcome(containers[i], False, 0.0, str(error))
                return
            group = [replace(containers[i], project=route.name) for i in indexes]
            for i, outcome in zip(indexes, await call(route.runtime, group), strict=True):
                back = replace(outcome.container, project=workload)
                outcomes[i] = replace(outcome, container=back)

        await asyncio.gather(*(one(w, i) for w, i in groups.items()))
        return [o for o in outcomes if o is not None]


def route_environments(
    environments: Mapping[str, Environment],
    clients: Mapping[DockerEndpoint | None, aiodocker.Docker],
) -> RuntimeRouter:
    """The router for these environments, over one client per engine (opened by bot/):
    one Compose and one Swarm runtime per engine, as the environments need them."""
    Kind = tuple[DockerEndpoint | None, bool]  # (engine, is a stack)

    def kind(environment: Environment) -> Kind:
        return environment.docker_endpoint, environment.stack is not None

    def name(environment: Environment) -> str:
        found = environment.stack or environment.compose_project
        assert found is not None
        return found

    deadlines: dict[Kind, dict[str, float]] = {}
    for environment in environments.values():
        per_name = deadlines.setdefault(kind(environment), {})
        per_name[name(environment)] = environment.timeouts.docker_seconds
    runtimes: dict[Kind, Runtime] = {
        (endpoint, swarm): (SwarmRuntime if swarm else DockerRuntime)(
            clients[endpoint], deadlines=per_name
        )
        for (endpoint, swarm), per_name in deadlines.items()
    }
    return RuntimeRouter(
        {
            e.workload: Route(
                runtimes[kind(e)],
                name(e),
                e.docker_endpoint.url if e.docker_endpoint else None,
            )
            for e in environments.values()
        }
    )
