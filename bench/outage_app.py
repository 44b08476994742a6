"""The application of bench/client_outage.py: a small HTTP service reading the database
through an asyncpg pool, as a real one does. It runs inside a container on the host's
Python (bind-mounted read-only), so it imports nothing from this project.

Configured by the environment: DATABASE_URL, PORT, BOOT_SECONDS (a stand-in for a real
framework's start-up, spent before it listens).

Its sessions are ended at every cut-over (pause, keep) and new connections are refused for
milliseconds around the rename: a query that meets a closed or refused connection is
retried on a fresh one for up to RETRY_SECONDS, which is what a pool with a pre-ping does.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import asyncpg
from aiohttp import web

RETRY_SECONDS = 2.0
# The connection went away or cannot be had for now; another try may succeed.
RETRYABLE = (
    asyncpg.InterfaceError,  # closed under us (ConnectionDoesNotExistError, …)
    # The server's unsolicited FATAL (the session ended) read in the middle of a query.
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,  # 08xxx
    asyncpg.exceptions.OperatorInterventionError,  # 57P01: terminated by an administrator
    asyncpg.ObjectNotInPrerequisiteStateError,  # 55000: not accepting connections (rename)
    asyncpg.InvalidCatalogNameError,  # 3D000: the name is between two databases
    OSError,
    TimeoutError,
)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
CUSTOMERS: web.AppKey[int] = web.AppKey("customers", int)


async def query(pool: asyncpg.Pool, sql: str, *args: object) -> object:
    """The query on a pooled connection; one that failed for its connection is thrown away
    (the pool opens a new one) and the query tried again, for up to RETRY_SECONDS."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            async with pool.acquire() as connection:
                try:
                    return await connection.fetchval(sql, *args)
                except RETRYABLE:
                    connection.terminate()
                    raise
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def customer(request: web.Request) -> web.Response:
    """One customer by primary key: an index lookup, whatever the database's size."""
    wanted = random.randint(1, request.app[CUSTOMERS])
    email = await query(request.app[POOL], "SELECT email FROM customers WHERE id = $1", wanted)
    return web.json_response({"id": wanted, "email": email})


async def health(request: web.Request) -> web.Response:
    try:
        await query(request.app[POOL], "SELECT 1")
    except RETRYABLE as error:
        return web.Response(status=503, text=f"database: {type(error).__name__}\n")
    return web.Response(text="ok\n")


async def main() -> None:
    await asyncio.sleep(float(os.environ.get("BOOT_SECONDS", "0")))
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=2, max_size=10, command_timeout=5
    )
    app = web.Application()
    app[POOL] = pool
    largest = await query(pool, "SELECT max(id) FROM customers")
    app[CUSTOMERS] = largest if isinstance(largest, int) and largest > 0 else 1
    app.router.add_get("/customer", customer)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["PORT"])).start()
    await asyncio.Event().wait()  # until SIGTERM (docker-init forwards it; the default ends us)


if __name__ == "__main__":
    asyncio.run(main())
