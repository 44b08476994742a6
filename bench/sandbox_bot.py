"""For the Slack benchmarks: a seeded stage, and a bot served over real HTTP and wired to the
sandbox workspace."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp
import asyncpg
from aiohttp import web
from pydantic import SecretStr

from bot.app import BotOptions, create_app
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from sandbox.demo_environment import (
    ComposeProject,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
)
from sandbox.slack import Channel, SandboxWorkspace, SlackUser, User, UserGroup
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.bundle import Services
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.pgtools import PgTools
from services.run_store import RunStore, migrate

TOKEN, SECRET = "xoxb-bench", "bench-secret"


@dataclass
class RunningBot:
    workspace: SandboxWorkspace
    slack: SlackUser
    tasks: BackgroundTasks


@asynccontextmanager
async def running_bot(
    services: Services,
    *,
    users: Sequence[User],
    channels: Sequence[Channel],
    usergroups: Sequence[UserGroup] = (),
    options: BotOptions | None = None,
) -> AsyncIterator[RunningBot]:
    async with AsyncExitStack() as stack:
        workspace = await stack.enter_async_context(
            SandboxWorkspace(bot_token=TOKEN, users=users, channels=channels, usergroups=usergroups)
        )
        settings = Settings(
            slack_bot_token=SecretStr(TOKEN),
            slack_signing_secret=SecretStr(SECRET),
            slack_api_url=workspace.base_url,
        )
        tasks = await stack.enter_async_context(BackgroundTasks(grace_seconds=30))
        app = create_app(settings, services, tasks=tasks, options=options or BotOptions())
        runner = web.AppRunner(app.web_app(), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        slack = await stack.enter_async_context(
            SlackUser(workspace, f"http://{host}:{port}/slack/events", SECRET)
        )
        yield RunningBot(workspace, slack, tasks)


@dataclass
class BenchStage:
    """A seeded shop database with one backup, the run store, a running Compose project."""

    dsn: str
    size_bytes: int
    backups: Path
    compose: ComposeProject
    services: Services  # no environments yet: each benchmark adds its own


@asynccontextmanager
async def bench_stage(
    *, rows: int, fast: bool, services: Sequence[ServiceSpec]
) -> AsyncIterator[BenchStage]:
    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pg = await stack.enter_async_context(ThrowawayPostgres(fast=fast))
        await pg.create_database("shop")
        await pg.create_database("store")
        dsn = pg.superuser_dsn("shop")
        tools = PgTools(pg.bin_dir)
        print(f"seeding {rows} rows …", flush=True)
        await seed_demo_database(dsn, rows=rows)
        connection = await asyncpg.connect(dsn)
        size = int(await connection.fetchval("SELECT pg_database_size('shop')"))
        await connection.close()
        backups = folder / "backups"
        backups.mkdir()
        await dump_database(DatabaseTarget(dsn, tools), backups / "pre-deploy-20241203-120000.dump")
        pool = await asyncpg.create_pool(pg.superuser_dsn("store"), min_size=2, max_size=20)
        assert pool is not None
        stack.push_async_callback(pool.close)
        await migrate(pool)
        docker = aiodocker.Docker()
        stack.push_async_callback(docker.close)
        image = await build_demo_image(docker)
        project = f"rbbench-{uuid.uuid4().hex[:8]}"
        stack.push_async_callback(remove_compose_project, docker, project)
        compose = await create_compose_project(docker, project, list(services), image)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        base = Services({}, DockerRuntime(docker), http, tools, RunStore(pool))
        yield BenchStage(dsn, size, backups, compose, base)
