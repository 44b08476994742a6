from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sandbox.throwaway_postgres import ThrowawayPostgres, ThrowawayPostgresError
from tests.conftest import FreshDatabase


def _uid_of_process(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.fixture
def open_base_dir() -> Iterator[Path]:
    """A base dir the unprivileged server user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="rbtest-pgbase-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_server_runs_as_unprivileged_user(pg: ThrowawayPostgres) -> None:
    expected_uid = pwd.getpwnam(pg.os_user).pw_uid
    if os.geteuid() == 0:
        assert expected_uid != 0
    conn = await asyncpg.connect(pg.superuser_dsn())
    try:
        data_dir = await conn.fetchval("SELECT current_setting('data_directory')")
        backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert _uid_of_process(backend_pid) == expected_uid
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["fsync", "synchronous_commit", "full_page_writes", "listen_addresses"],
        )
        settings = {row["name"]: row["setting"] for row in rows}
    finally:
        await conn.close()
    assert Path(data_dir) == pg.data_dir
    assert os.stat(data_dir).st_uid == expected_uid
    assert pg.pid is not None
    assert _uid_of_process(pg.pid) == expected_uid
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "127.0.0.1",
    }
    assert pg.host == "127.0.0.1"


async def test_bin_dir_has_client_tools_of_the_server_version(pg: ThrowawayPostgres) -> None:
    for tool in ("pg_dump", "pg_restore", "psql"):
        assert os.access(pg.bin_dir / tool, os.X_OK), tool
    proc = await asyncio.create_subprocess_exec(
        str(pg.bin_dir / "pg_dump"), "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    conn = await asyncpg.connect(pg.superuser_dsn())
    try:
        major = conn.get_server_version().major
    finally:
        await conn.close()
    assert f" {major}." in out.decode()


async def test_fresh_db_is_an_empty_database(
    pg: ThrowawayPostgres, fresh_db: FreshDatabase
) -> None:
    name, dsn = fresh_db
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_create_with_owner_and_drop_terminates_sessions(pg: ThrowawayPostgres) -> None:
    admin = await asyncpg.connect(pg.superuser_dsn())
    try:
        await admin.execute('CREATE ROLE "app owner" LOGIN')
        await pg.create_database('odd "name"', owner="app owner")
        owner = await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", 'odd "name"'
        )
        assert owner == "app owner"

        session = await asyncpg.connect(pg.superuser_dsn('odd "name"'))
        await pg.drop_database('odd "name"')
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await session.fetchval("SELECT 1")
        await session.close()
        exists = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", 'odd "name"'
        )
        assert exists == 0
        await pg.drop_database('odd "name"')  # idempotent
    finally:
        await admin.execute('DROP ROLE IF EXISTS "app owner"')
        await admin.close()


async def test_restart_immediate_keeps_port_and_data() -> None:
    async with ThrowawayPostgres(fast=True, settings={"max_connections": 17}) as cluster:
        port, first_pid = cluster.port, cluster.pid
        conn = await asyncpg.connect(cluster.superuser_dsn())
        # synchronous_commit=off may lose the last commit on an immediate stop; not this one.
        await conn.execute("SET synchronous_commit = on")
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        assert await conn.fetchval("SHOW max_connections") == "17"

        await cluster.restart(immediate=True)

        assert cluster.port == port
        assert cluster.pid != first_pid
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
        await conn.close()
        conn = await asyncpg.connect(cluster.superuser_dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 42
        finally:
            await conn.close()


async def test_cleanup_stops_server_and_removes_temp_dir_on_error() -> None:
    cluster = ThrowawayPostgres(fast=True)
    with pytest.raises(RuntimeError, match="boom"):
        async with cluster:
            base, pid = cluster.base_path, cluster.pid or 0
            assert pid and base.is_dir()
            raise RuntimeError("boom")
    assert not base.exists()
    assert not _alive(pid)
    assert not cluster.running
    await cluster.close()  # idempotent


async def test_cleanup_on_cancellation() -> None:
    entered: asyncio.Future[tuple[Path, int]] = asyncio.get_running_loop().create_future()

    async def hold_cluster() -> None:
        async with ThrowawayPostgres(fast=True) as cluster:
            assert cluster.pid is not None
            entered.set_result((cluster.base_path, cluster.pid))
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_cluster())
    base, pid = await asyncio.wait_for(entered, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not base.exists()
    assert not _alive(pid)


async def test_start_failure_reports_server_log_and_cleans_up(open_base_dir: Path) -> None:
    cluster = ThrowawayPostgres(settings={"shared_buffers": "lots"}, base_dir=open_base_dir)
    with pytest.raises(ThrowawayPostgresError, match="shared_buffers") as info:
        async with cluster:
            pass
    assert "exited with code" in str(info.value)
    assert await asyncio.to_thread(os.listdir, open_base_dir) == []


def test_missing_binaries_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BIN", "/nonexistent/pg/bin")
    with pytest.raises(ThrowawayPostgresError, match="PG_BIN=/nonexistent/pg/bin"):
        _ = ThrowawayPostgres().bin_dir
