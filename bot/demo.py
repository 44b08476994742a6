"""`rollback-bot demo`: a real rollback on embedded defaults, cleaned up afterwards.

A throwaway PostgreSQL cluster holds the bot's run store and a demo shop database with two
backups; a Compose-style project (containers built FROM scratch) serves a health endpoint;
a bad deployment changes the database; the bot rolls it back to the newest backup.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiodocker
import asyncpg

from bot import terminal
from bot.demo_environment import (
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
    table_checksums,
)
from bot.environments_file import load_environments
from bot.resources import open_services
from bot.settings import load_settings
from bot.throwaway_postgres import ThrowawayPostgres
from services.backups import list_backups
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.pgtools import PgTools
from services.workflow import plan_rollback, rollback_database

PROJECT = "rollback-demo"
BAD_DEPLOYMENT = """
CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL);
INSERT INTO feature_flags VALUES ('new_checkout', true);
ALTER TABLE customers ADD COLUMN loyalty_tier text DEFAULT 'gold';
DELETE FROM orders WHERE id % 3 = 0;
UPDATE orders SET status = 'cancelled' WHERE id % 5 = 0;
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _environments_file(folder: Path, store_port: int, web_url: str) -> Path:
    path = folder / "rollback.toml"
    path.write_text(
        f"""# Written by `rollback-bot demo`.
[environments.demo]
compose_project = "{PROJECT}"
database_url = "postgresql://postgres@127.0.0.1:{store_port}/shop"
stop_timeout_seconds = 5

[environments.demo.health]
deadline_seconds = 30
interval_seconds = 0.3

[[environments.demo.health.http]]
name = "web"
url = "{web_url}"
"""
    )
    return path


async def _counts(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        customers = await connection.fetchval("SELECT count(*) FROM customers")
        orders = await connection.fetchval("SELECT count(*) FROM orders")
        flags = await connection.fetchval("SELECT to_regclass('public.feature_flags') IS NOT NULL")
    finally:
        await connection.close()
    extra = ", feature_flags table present" if flags else ""
    return f"{customers} customers, {orders} orders{extra}"


async def run_demo(*, rows: int) -> int:
    folder = Path(tempfile.mkdtemp(prefix="rollback-bot-demo-"))
    docker = aiodocker.Docker()
    try:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(docker.close)
            _say("Setting up: throwaway PostgreSQL, demo containers, a shop database …")
            await DockerRuntime(docker).ping()
            image = await build_demo_image(docker)
            cluster = await stack.enter_async_context(ThrowawayPostgres(fast=True))
            await cluster.create_database("rollback_bot")
            await cluster.create_database("shop")
            shop = cluster.superuser_dsn("shop")
            await seed_demo_database(shop, rows=rows)

            backups = folder / "instances" / "demo" / "backups"
            backups.mkdir(parents=True)
            target = DatabaseTarget(shop, PgTools(cluster.bin_dir))
            stamp = datetime.now(UTC) - timedelta(hours=26)
            await dump_database(target, backups / f"pre-deployment-{stamp:%Y%m%d-%H%M%S}.dump")
            connection = await asyncpg.connect(shop)
            await connection.execute(
                "INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@shop.test'"
                " FROM generate_series(1, 50) g"
            )
            await connection.close()
            stamp = datetime.now(UTC) - timedelta(hours=2)
            newest = await dump_database(
                target, backups / f"pre-migration-{stamp:%Y%m%d-%H%M%S}.dump"
            )
            expected = await table_checksums(shop)
            _say(f"  shop database at the newest backup: {await _counts(shop)}")

            stack.push_async_callback(remove_compose_project, docker, PROJECT)
            project = await create_compose_project(
                docker,
                PROJECT,
                [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")],
                image,
            )
            web_url = project.web_urls["web"]

            connection = await asyncpg.connect(shop)
            await connection.execute(BAD_DEPLOYMENT)
            await connection.close()
            _say(f"  after a bad deployment:             {await _counts(shop)}")
            _say()

            config = _environments_file(folder, cluster.port, web_url)
            settings = load_settings(
                database_url=cluster.superuser_dsn("rollback_bot"),
                rollback_config=config,
                pg_bin=str(cluster.bin_dir),
            )
            environments = load_environments(config)
            services = await stack.enter_async_context(open_services(settings, environments))
            _say("$ rollback-bot backups demo")
            _say("\n".join(terminal.backup_lines(await list_backups(environments["demo"]))))
            _say()
            _say("$ rollback-bot rollback demo --yes")
            plan = await plan_rollback(services, "demo", None)
            _say("\n".join(terminal.plan_lines(plan)))
            _say()
            result = await rollback_database(
                services, plan, requested_by="demo (command line)", listener=terminal.StepView()
            )
            _say("\n".join(terminal.result_lines(result)))
            _say()
            same = await table_checksums(shop) == expected
            _say(f"  shop database now:                  {await _counts(shop)}")
            _say(f"  every table equals {newest.name}: {'yes' if same else 'NO'}")
            _say("Cleaning up …")
            return 0 if result.ok and same else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
