"""Handing a database URL to the pg tools and showing it (issue 8, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.database import DatabaseTarget, connect, dump_database
from services.errors import DatabaseError
from services.pgtools import (
    PgTools,
    has_password,
    libpq_environment,
    mask_password,
    same_database,
    url_problems,
)
from tests.conftest import FreshDatabase


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
