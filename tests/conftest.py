"""Shared fixtures: a throwaway PostgreSQL cluster, fresh databases, a real Docker engine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import aiodocker
import pytest

from bot.demo_environment import (
    ComposeProject,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
)
from bot.throwaway_postgres import ThrowawayPostgres

MakeComposeProject = Callable[[list[ServiceSpec]], Awaitable[ComposeProject]]


class FreshDatabase(NamedTuple):
    name: str
    dsn: str


@pytest.fixture(scope="session")
async def pg() -> AsyncIterator[ThrowawayPostgres]:
    """A started throwaway cluster (fsync off) shared by the whole session."""
    async with ThrowawayPostgres(fast=True) as cluster:
        yield cluster


@pytest.fixture
async def fresh_db(pg: ThrowawayPostgres) -> AsyncIterator[FreshDatabase]:
    """(name, superuser dsn) of a new empty database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await pg.create_database(name)
    try:
        yield FreshDatabase(name, pg.superuser_dsn(name))
    finally:
        await pg.drop_database(name)


@pytest.fixture(scope="session")
async def docker() -> AsyncIterator[aiodocker.Docker]:
    """An aiodocker client; fails (never skips) when the Docker engine does not answer."""
    problem: Exception | None = None
    client: aiodocker.Docker | None = None
    try:
        client = aiodocker.Docker()
        await asyncio.wait_for(client.version(), 10)
    except Exception as exc:
        problem = exc
    if problem is not None or client is None:
        if client is not None:
            await client.close()
        pytest.fail(
            f"Docker engine not reachable (these tests need a real one): {problem!r}",
            pytrace=False,
        )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
async def demo_image(docker: aiodocker.Docker) -> str:
    """Tag of the busybox demo image (built once, reused while its build context is unchanged)."""
    return await build_demo_image(docker)


@pytest.fixture
async def make_compose_project(
    docker: aiodocker.Docker, demo_image: str
) -> AsyncIterator[MakeComposeProject]:
    """Factory: ``await make(services)`` starts a uniquely named project; all removed after."""
    created: list[str] = []

    async def make(services: list[ServiceSpec]) -> ComposeProject:
        project = f"rbtest-{uuid.uuid4().hex[:10]}"
        created.append(project)
        return await create_compose_project(docker, project, services, demo_image)

    try:
        yield make
    finally:
        await asyncio.gather(*(remove_compose_project(docker, p) for p in created))
