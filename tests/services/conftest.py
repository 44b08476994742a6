"""Fixtures for the services: a run store, a services bundle, a seeded environment with backups."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import aiodocker
import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from bot.demo_environment import ComposeProject, ServiceSpec, seed_demo_database
from bot.throwaway_postgres import ThrowawayPostgres
from services.backups import Backup
from services.bundle import Services
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.environments import Environment, HealthConfig, HttpCheck
from services.pgtools import PgTools, mask_password
from services.run_store import RunStore, migrate
from tests.conftest import FreshDatabase, MakeComposeProject


@pytest.fixture(scope="session")
async def store_pool(pg: ThrowawayPostgres) -> AsyncIterator[asyncpg.Pool]:
    """The bot's own database (the run store), migrated once for the session."""
    await pg.create_database("rollback_bot_store")
    pool = await asyncpg.create_pool(pg.superuser_dsn("rollback_bot_store"), min_size=1)
    assert pool is not None
    await migrate(pool)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def tools(pg: ThrowawayPostgres) -> PgTools:
    return PgTools(pg.bin_dir)


@dataclass
class Stage:
    """One environment ready for a rollback: seeded database, a backup, running containers."""

    environment: Environment
    database: FreshDatabase
    project: ComposeProject
    backup: Backup
    services: Services

    @property
    def dsn(self) -> str:
        return self.database.dsn

    def target(self) -> DatabaseTarget:
        return DatabaseTarget(self.dsn, self.services.tools)

    def with_environment(self, **changes: object) -> Stage:
        environment = self.environment.model_copy(update=changes)
        services = replace(self.services, environments={environment.name: environment})
        return replace(self, environment=environment, services=services)


def make_environment(
    name: str,
    dsn: str,
    backups_dir: Path,
    project: ComposeProject,
    *,
    deadline: float = 20.0,
) -> Environment:
    return Environment(
        name=name,
        compose_project=project.project,
        database_url=SecretStr(dsn),
        database_display=mask_password(dsn),
        backups_dir=backups_dir,
        stop_timeout_seconds=5,
        health=HealthConfig(
            http=tuple(HttpCheck(name=s, url=u) for s, u in project.web_urls.items()),
            deadline_seconds=deadline,
            interval_seconds=0.2,
        ),
    )


def make_services(
    environments: Mapping[str, Environment],
    docker: aiodocker.Docker,
    http: aiohttp.ClientSession,
    tools: PgTools,
    store_pool: asyncpg.Pool,
) -> Services:
    return Services(
        environments=environments,
        runtime=DockerRuntime(docker),
        http=http,
        tools=tools,
        store=RunStore(store_pool),
    )


@pytest.fixture
async def stage(
    fresh_db: FreshDatabase,
    make_compose_project: MakeComposeProject,
    docker: aiodocker.Docker,
    http: aiohttp.ClientSession,
    tools: PgTools,
    store_pool: asyncpg.Pool,
    tmp_path: Path,
) -> Stage:
    """A seeded database with one backup taken, and a web + worker project running."""
    await seed_demo_database(fresh_db.dsn, rows=2000)
    backups = tmp_path / "backups"
    backups.mkdir()
    backup = await dump_database(
        DatabaseTarget(fresh_db.dsn, tools), backups / "pre-deployment-20241203-120000.dump"
    )
    project = await make_compose_project(
        [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")]
    )
    name = f"env-{uuid.uuid4().hex[:8]}"
    environment = make_environment(name, fresh_db.dsn, backups, project)
    services = make_services({name: environment}, docker, http, tools, store_pool)
    return Stage(environment, fresh_db, project, backup, services)


async def change_after_backup(dsn: str) -> None:
    """What a bad deployment does: new table, new view, new and deleted and changed rows."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            """
            CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL);
            INSERT INTO feature_flags VALUES ('new_checkout', true);
            CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount_cents > 50000;
            CREATE SCHEMA reporting;
            CREATE TABLE reporting.daily (day date, total bigint);
            ALTER TABLE customers ADD COLUMN loyalty_tier text DEFAULT 'gold';
            INSERT INTO customers (name, email) VALUES ('late', 'late@example.com');
            DELETE FROM orders WHERE id % 10 = 0;
            UPDATE orders SET status = 'cancelled' WHERE id % 7 = 0;
            """
        )
    finally:
        await connection.close()


async def container_states(docker: aiodocker.Docker, project: ComposeProject) -> dict[str, str]:
    states = {}
    for name in project.container_names.values():
        info = await docker.containers.get(name)
        states[name] = info["State"]["Status"]
    return states


async def wait_for_state(
    docker: aiodocker.Docker, project: ComposeProject, state: str, timeout: float = 10
) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = await container_states(docker, project)
        if all(s == state for s in states.values()) or loop.time() > deadline:
            return states
        await asyncio.sleep(0.2)
