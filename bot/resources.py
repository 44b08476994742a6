"""Opening and closing the bot's resources: one owner for the pool, the engine, the session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import asyncpg

from bot.docker_endpoints import open_docker_clients
from bot.logs import configured_secrets
from bot.settings import Settings
from services.bundle import Services
from services.environments import Environment
from services.errors import ConfigError, DatabaseError
from services.git import deployed_commit_reader
from services.pgtools import asyncpg_url, find_pg_tools, installed_tool_sets, mask_password
from services.run_store import RunStore, migrate
from services.runtimes import route_environments
from services.scrub import Scrubber

STORE_COMMAND_SECONDS = 60.0


async def open_store_pool(settings: Settings) -> asyncpg.Pool:
    if settings.database_url is None:
        raise ConfigError(["DATABASE_URL: not set (the bot's own database, for the run store)"])
    url = settings.database_url.get_secret_value()
    try:
        # Connecting and every statement are bounded: a hung run store must not hang the bot.
        pool = await asyncpg.create_pool(
            asyncpg_url(url),
            min_size=1,
            max_size=10,
            timeout=10,
            command_timeout=STORE_COMMAND_SECONDS,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise DatabaseError(
            f"Cannot open the run store at {mask_password(url)}", str(error)
        ) from error
    assert pool is not None
    return pool


@asynccontextmanager
async def open_services(
    settings: Settings, environments: Mapping[str, Environment]
) -> AsyncIterator[Services]:
    """Everything the services need, opened once and closed in reverse order."""
    tools = find_pg_tools(settings.pg_bin)
    async with AsyncExitStack() as stack:
        pool = await open_store_pool(settings)
        stack.push_async_callback(pool.close)
        await migrate(pool)
        # One client per engine; the router sends each environment's calls to its own.
        clients = await open_docker_clients(stack, environments)
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        yield Services(
            environments=environments,
            runtime=route_environments(environments, clients),
            http=http,
            tools=tools,
            store=RunStore(pool),
            tool_sets=installed_tool_sets(settings.pg_bin),
            deployed_commit=deployed_commit_reader(http),
            scrubber=Scrubber(configured_secrets(settings, environments)),
        )
