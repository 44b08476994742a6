"""Benchmark: downtime of the swap strategy against in-place, at about 300 MB and 1.5 GB.

Downtime = containers stopped → health checks passing; the database part = how long the
database itself is unusable (in-place: the restore; swap: ending sessions + two renames).
Each size gets its own database, backup and Compose-style project, rolled back once with
each strategy in the same run, through the bot's own services (PostgreSQL with its
default durability settings). Targets: the database part under 0.5 s for swap at both
sizes; swap's whole downtime at least 5x shorter than in-place at 1.5 GB and within 30%
between the two sizes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import aiodocker
import asyncpg

from bot.environments_file import load_environments
from bot.resources import open_services
from bot.settings import load_settings
from sandbox.demo_environment import (
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
)
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.database import DatabaseTarget, dump_database
from services.events import ignore
from services.pgtools import PgTools
from services.workflow import RollbackResult, plan_rollback, rollback_database

SIZES = {"300 MB": 830_000, "1.5 GB": 4_150_000}
if os.environ.get("BENCH_QUICK"):
    SIZES = {"small": 50_000, "medium": 250_000}


async def one_size(
    docker: aiodocker.Docker,
    cluster: ThrowawayPostgres,
    image: str,
    folder: Path,
    label: str,
    rows: int,
) -> dict[str, RollbackResult]:
    database = f"shop_{rows}"
    await cluster.create_database(database)
    dsn = cluster.superuser_dsn(database)
    await seed_demo_database(dsn, rows=rows)
    connection = await asyncpg.connect(dsn)
    size = await connection.fetchval("SELECT pg_database_size(current_database())")
    await connection.close()
    results: dict[str, RollbackResult] = {}
    for strategy in ("in-place", "swap"):
        name = f"bench-{strategy}-{rows}".replace("-", "_")
        backups = folder / "instances" / name / "backups"
        backups.mkdir(parents=True, exist_ok=True)
        backup = await dump_database(
            DatabaseTarget(dsn, PgTools(cluster.bin_dir)),
            backups / "pre-deployment-20240101-000000.dump",
        )
        project = f"rbbench-{strategy}-{rows}"
        compose = await create_compose_project(
            docker, project, [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")], image
        )
        config = folder / f"{name}.toml"
        config.write_text(
            f'[environments.{name}]\ncompose_project = "{project}"\ndatabase_url = "{dsn}"\n'
            f'backups_dir = "{backups}"\nstrategy = "{strategy}"\n'
            f"[environments.{name}.health]\ninterval_seconds = 0.1\n"
            f'[[environments.{name}.health.http]]\nname = "web"\n'
            f'url = "{compose.web_urls["web"]}"\n'
        )
        settings = load_settings(
            database_url=cluster.superuser_dsn("rollback_bot"),
            rollback_config=config,
            pg_bin=str(cluster.bin_dir),
        )
        try:
            async with open_services(settings, load_environments(config)) as services:
                plan = await plan_rollback(services, name, backup.name)
                assert plan.strategy.value == strategy, plan.strategy_note
                result = await rollback_database(
                    services, plan, requested_by="bench", listener=ignore
                )
                assert result.ok, result.error
                results[strategy] = result
                prepare = next((s.seconds for s in result.steps if s.step.value == "prepare"), 0.0)
                print(
                    f"{label:>7} ({size / 1e9:.2f} GB) {strategy:<8} downtime "
                    f"{result.downtime_seconds:6.2f} s, database unusable "
                    f"{result.database_unavailable_seconds:6.3f} s"
                    + (f", prepared while running in {prepare:.1f} s" if prepare else ""),
                    flush=True,
                )
        finally:
            await remove_compose_project(docker, project)
    return results


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rollback-bench-swap-"))
    try:
        async with aiodocker.Docker() as docker, ThrowawayPostgres() as cluster:
            image = await build_demo_image(docker)
            await cluster.create_database("rollback_bot")
            measured = {
                label: await one_size(docker, cluster, image, folder, label, rows)
                for label, rows in SIZES.items()
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    small, large = (measured[label] for label in SIZES)
    db_ok = all((r["swap"].database_unavailable_seconds or 0) < 0.5 for r in measured.values())
    speedup = (large["in-place"].downtime_seconds or 0) / (large["swap"].downtime_seconds or 1)
    growth = (large["swap"].downtime_seconds or 0) / (small["swap"].downtime_seconds or 1)
    print(f"swap database part < 0.5 s at both sizes: {'met' if db_ok else 'not met'}")
    print(f"in-place / swap downtime at the larger size: {speedup:.1f}x (target >= 5x)")
    print(f"swap downtime larger / smaller size: {growth:.2f} (target within 1.30)")


if __name__ == "__main__":
    asyncio.run(main())
