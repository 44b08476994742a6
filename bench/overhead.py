"""Benchmark: a whole `rollback-bot rollback` against the raw runbook steps run by hand.

On a database of about 300 MB (PostgreSQL with its default durability settings) and a
Compose-style project of three containers, in the same run, alternately:
- by hand: `docker stop` of the project, `pg_dump -Fc` (safety backup),
  `pg_restore --clean --if-exists` of the backup, `docker start`; the sum of the four;
- the bot: `rollback-bot rollback <env> <backup> --yes` as a process, wall time from
  exec to exit (start-up, pre-flight, safety backup, transactional restore, ANALYZE,
  health checks and the run store included).
Target: bot / by hand <= 1.10.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiodocker
import asyncpg

from sandbox.demo_environment import (
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
)
from sandbox.throwaway_postgres import ThrowawayPostgres

ROWS = int(os.environ.get("BENCH_ROWS", "830000"))  # about 300 MB
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
# The bot's default is 1 (fast); BENCH_COMPRESSION=6 gives pg_dump's own default, as by hand.
COMPRESSION = int(os.environ.get("BENCH_COMPRESSION", "1"))
PROJECT = "rbbench-overhead"


LAST_OUTPUT: list[str] = []


async def run(*argv: str, env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {err.decode()[-2000:]}")
    LAST_OUTPUT[:] = out.decode().splitlines()
    return time.perf_counter() - began


async def by_hand(
    cluster: ThrowawayPostgres, names: list[str], backup: Path, folder: Path
) -> dict[str, float]:
    bin_dir = cluster.bin_dir
    env = {"PGHOST": cluster.host, "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    safety = folder / "by-hand-safety.dump"
    steps = {
        "stop": await run("docker", "stop", *names),
        "pg_dump": await run(str(bin_dir / "pg_dump"), "-Fc", "-f", str(safety), "shop", env=env),
        "pg_restore": await run(
            str(bin_dir / "pg_restore"),
            "--clean",
            "--if-exists",
            "--exit-on-error",
            "-d",
            "shop",
            str(backup),
            env=env,
        ),
        "start": await run("docker", "start", *names),
    }
    safety.unlink()
    return steps


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rollback-bench-"))
    try:
        async with aiodocker.Docker() as docker, ThrowawayPostgres() as cluster:
            image = await build_demo_image(docker)
            await cluster.create_database("rollback_bot")
            await cluster.create_database("shop")
            shop = cluster.superuser_dsn("shop")
            print(f"seeding {ROWS} customers and orders …", flush=True)
            await seed_demo_database(shop, rows=ROWS)
            connection = await asyncpg.connect(shop)
            size = await connection.fetchval("SELECT pg_database_size('shop')")
            await connection.close()
            backups = folder / "instances" / "bench" / "backups"
            backups.mkdir(parents=True)
            backup = backups / "pre-deployment-20240101-000000.dump"
            await run(
                str(cluster.bin_dir / "pg_dump"),
                "-Fc",
                "-f",
                str(backup),
                shop,
            )
            project = await create_compose_project(
                docker,
                PROJECT,
                [
                    ServiceSpec("web", "web"),
                    ServiceSpec("worker", "worker"),
                    ServiceSpec("scheduler", "worker"),
                ],
                image,
            )
            names = list(project.container_names.values())
            config = folder / "rollback.toml"
            config.write_text(
                f'[environments.bench]\ncompose_project = "{PROJECT}"\n'
                f'database_url = "{shop}"\nstrategy = "in-place"\n'
                f"safety_backup_compression = {COMPRESSION}\n"
                "[[environments.bench.health.http]]\n"
                f'name = "web"\nurl = "{project.web_urls["web"]}"\n'
            )
            print(
                f"database {size / 1e6:.0f} MB, dump {backup.stat().st_size / 1e6:.0f} MB",
                flush=True,
            )
            bot_env = {
                "DATABASE_URL": cluster.superuser_dsn("rollback_bot"),
                "PG_BIN": str(cluster.bin_dir),
            }
            hand_totals: list[float] = []
            bot_totals: list[float] = []
            try:
                for round_number in range(1, ROUNDS + 1):
                    steps = await by_hand(cluster, names, backup, folder)
                    hand_totals.append(sum(steps.values()))
                    detail = ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
                    print(
                        f"round {round_number} by hand: {hand_totals[-1]:.2f} s ({detail})",
                        flush=True,
                    )
                    bot_totals.append(
                        await run(
                            sys.executable,
                            "-m",
                            "bot.cli",
                            "--config",
                            str(config),
                            "rollback",
                            "bench",
                            backup.name,
                            "--yes",
                            env=bot_env,
                        )
                    )
                    print(f"round {round_number} bot:     {bot_totals[-1]:.2f} s", flush=True)
                    for line in LAST_OUTPUT:
                        if line.startswith("[") and "✓" in line:
                            print(f"    {line}")
                    for extra in backups.glob("pre-rollback-*.dump"):
                        extra.unlink()
            finally:
                await remove_compose_project(docker, PROJECT)
            hand, bot = statistics.median(hand_totals), statistics.median(bot_totals)
            verdict = "met" if bot / hand <= 1.10 else "not met"
            print(
                f"median by hand {hand:.2f} s, bot {bot:.2f} s, ratio {bot / hand:.3f} "
                f"(target <= 1.10: {verdict})"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
