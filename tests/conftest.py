"""Shared fixtures: a throwaway PostgreSQL cluster, fresh databases, a real Docker engine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import aiodocker
import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from bot.logs import LogFormat, configure_logging
from sandbox.demo_environment import (
    ComposeProject,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
)
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.backups import Backup
from services.bundle import Services
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.environments import Environment, HealthConfig, HttpCheck, Strategy
from services.pgtools import PgTools, mask_password
from services.run_store import RunStore, migrate
from tests.docker_over_tls import Certificates, make_certificates

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


@pytest.fixture
async def hung_engine(tmp_path: Path) -> AsyncIterator[aiodocker.Docker]:
    """A client on a unix socket that accepts connections and never answers."""
    socket_path = tmp_path / "hung-docker.sock"
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, keep it open

    server = await asyncio.start_unix_server(accept, path=str(socket_path))
    client = aiodocker.Docker(url=f"unix://{socket_path}")
    try:
        yield client
    finally:
        await client.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# -- The rollback engine's stage: run store, services bundle, a seeded environment --


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
        strategy=Strategy.IN_PLACE,
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist each worker hands its hostile-input tally to the controller."""
    from tests.hostile import TALLY

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["hostile_tally"] = dict(TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Add up the workers' tallies on the controller."""
    from tests.hostile import TALLY

    TALLY.update(getattr(node, "workeroutput", {}).get("hostile_tally", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figure issue 8 asks for: hostile inputs tried, and how many touched anything."""
    from tests.hostile import TALLY

    if TALLY["tried"]:
        terminalreporter.write_line(
            f"hostile inputs tried: {TALLY['tried']}, touched anything: {TALLY['touched']}"
        )


@contextlib.contextmanager
def bot_log(
    level: int = logging.INFO, secrets: Sequence[str] = (), log_format: LogFormat = "text"
) -> Iterator[io.StringIO]:
    """What the bot's own log handler (bot.logs.configure_logging) writes, meanwhile."""
    stream, root = io.StringIO(), logging.getLogger()
    saved = root.level
    handler = configure_logging(level, secrets=secrets, stream=stream, log_format=log_format)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def free_port() -> int:
    """A TCP port free on localhost now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def docker_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a rogue one."""
    return make_certificates(tmp_path_factory.mktemp("docker-tls"))
