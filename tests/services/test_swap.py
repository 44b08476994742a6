"""The swap strategy on real PostgreSQL and containers (issue #4)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiodocker
import asyncpg
import pytest
from pydantic import SecretStr

from sandbox.demo_environment import database_snapshot, seed_demo_database
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.database import DatabaseTarget, dump_database
from services.environments import HttpCheck, Strategy
from services.events import Step, StepEvent
from services.pgtools import with_database
from services.run_store import RunStatus
from services.swap import (
    DerivedKind,
    PreviewLimits,
    SwapNames,
    derived_from,
    drop_database,
    parse_derived,
    preview_data_loss,
    restore_into_staging,
)
from services.undo import undo_rollback
from services.workflow import (
    discard_preparation,
    execute_rollback,
    plan_rollback,
    prepare_rollback,
    rollback_database,
)
from tests.conftest import FreshDatabase, Stage
from tests.services.conftest import change_after_backup, container_states


class Recorder:
    def __init__(self) -> None:
        self.events: list[StepEvent] = []

    async def __call__(self, event: StepEvent) -> None:
        self.events.append(event)


async def database_properties(dsn: str, name: str) -> dict[str, object]:
    connection = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        row = await connection.fetchrow(
            "SELECT pg_get_userbyid(datdba) AS owner, datacl::text[] AS acl, datconnlimit,"
            " datcollate, datctype, datlocprovider::text AS provider, daticulocale,"
            " (SELECT spcname FROM pg_tablespace WHERE oid = dattablespace) AS tablespace,"
            " (SELECT array_agg(g ORDER BY g) FROM (SELECT format('%s>%s:%s:%s',"
            "   pg_get_userbyid(a.grantor), pg_get_userbyid(a.grantee), a.privilege_type,"
            "   a.is_grantable) AS g FROM aclexplode(d.datacl) a) x) AS grants,"
            " shobj_description(oid, 'pg_database') AS comment,"
            " (SELECT array_agg(coalesce(r.rolname, '*') || ':'"
            "   || array_to_string(s.setconfig, ';')"
            "   ORDER BY r.rolname NULLS FIRST) FROM pg_db_role_setting s"
            "   LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid) AS settings"
            " FROM pg_database d WHERE datname = $1",
            name,
        )
    finally:
        await connection.close()
    assert row is not None
    return dict(row)


async def database_names(dsn: str) -> set[str]:
    connection = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        return {r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


@pytest.fixture
async def swap_stage(stage: Stage, pg: ThrowawayPostgres) -> AsyncIterator[Stage]:
    """The stage with the swap strategy and database-level properties worth keeping."""
    role = f"reader_{uuid.uuid4().hex[:6]}"
    connection = await asyncpg.connect(pg.superuser_dsn())
    name = stage.database.name
    await connection.execute(f"CREATE ROLE {role}")
    await connection.execute(f"REVOKE CONNECT ON DATABASE {name} FROM PUBLIC")
    await connection.execute(f"GRANT CONNECT ON DATABASE {name} TO {role}")
    await connection.execute(f"ALTER DATABASE {name} SET work_mem TO '12MB'")
    await connection.execute(f'ALTER DATABASE {name} SET search_path TO public, "$user"')
    await connection.execute(f"ALTER ROLE {role} IN DATABASE {name} SET statement_timeout TO '5s'")
    await connection.execute(f"COMMENT ON DATABASE {name} IS 'the shop'")
    await connection.execute(f"ALTER DATABASE {name} CONNECTION LIMIT 50")
    await connection.close()
    yield stage.with_environment(strategy=Strategy.SWAP)
    for database in await database_names(stage.dsn):
        if derived_from(name, database):
            await pg.drop_database(database)
    connection = await asyncpg.connect(pg.superuser_dsn())
    await connection.execute(f"DROP OWNED BY {role}")
    await connection.execute(f"DROP ROLE {role}")
    await connection.close()


async def client_loop(dsn: str, stop: asyncio.Event, seen: list[int], errors: list[str]) -> None:
    """A client that keeps connecting and reading, as an application's pool would."""
    while not stop.is_set():
        try:
            connection = await asyncpg.connect(dsn, timeout=2)
            try:
                seen.append(int(await connection.fetchval("SELECT count(*) FROM orders")))
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            errors.append(type(error).__name__)
        await asyncio.sleep(0.01)


async def test_swap_rollback_is_exactly_the_backup_keeps_properties_and_can_be_undone(
    swap_stage: Stage, docker: aiodocker.Docker
) -> None:
    stage = swap_stage
    name = stage.database.name
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    properties = await database_properties(stage.dsn, name)

    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    stop, seen, errors = asyncio.Event(), [], []
    clients = [asyncio.create_task(client_loop(stage.dsn, stop, seen, errors)) for _ in range(3)]
    try:
        events = Recorder()
        result = await rollback_database(
            stage.services, plan, requested_by="tester", listener=events
        )
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert result.ok, (result.error, result.environment_state)
    assert result.strategy == "swap"
    steps = [e.step for e in events.events if e.kind.value == "step_finished"]
    assert steps == [
        Step.PREPARE,
        Step.STOP,
        Step.CUTOVER,
        Step.START,
        Step.HEALTH,
        Step.ARCHIVE_OLD,
    ]
    preview = [
        e for e in events.events if e.step is Step.PREPARE and e.kind.value == "step_finished"
    ]
    assert "row(s) will leave the live data" in preview[0].message
    assert await database_snapshot(stage.dsn) == at_backup
    assert await database_properties(stage.dsn, name) == properties
    assert result.database_unavailable_seconds is not None
    assert result.database_unavailable_seconds < 0.5
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    # The clients read the live data, then the backup's, through the same name.
    assert seen[-1] == int(at_backup.checksums["public.orders"].split(":")[0])
    assert int(before.checksums["public.orders"].split(":")[0]) in seen
    assert result.old_database and result.old_database in await database_names(stage.dsn)
    assert result.safety_backup is not None and result.safety_backup.path.exists()

    undo = await undo_rollback(
        stage.services, stage.environment.name, requested_by="tester", listener=Recorder()
    )
    assert undo.ok, (undo.error, undo.environment_state)
    assert await database_snapshot(stage.dsn) == before
    assert await database_properties(stage.dsn, name) == properties
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_rejected_run_drops_its_staging_database(swap_stage: Stage) -> None:
    stage = swap_stage
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    run = await stage.services.store.create_run(
        environment=stage.environment.name,
        kind="database",
        requested_by="a",
        status=RunStatus.AWAITING_APPROVAL,
        plan=plan.summary(),
    )
    prep = await prepare_rollback(stage.services, plan, run_id=run.id, listener=Recorder())
    assert prep.names is not None
    assert prep.names.staging in await database_names(stage.dsn)
    assert {t.table for t in prep.loss} >= {"public.orders", "public.customers"}
    await discard_preparation(stage.services, plan, prep)
    assert prep.names.staging not in await database_names(stage.dsn)


@contextlib.contextmanager
def occupied(port: int):  # type: ignore[no-untyped-def]
    """Hold a host port, so that a container publishing it cannot start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


async def test_engine_error_on_start_swaps_back_and_restarts(
    swap_stage: Stage, docker: aiodocker.Docker
) -> None:
    stage = swap_stage
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    port = int(stage.project.web_urls["web"].split(":")[2].split("/")[0])
    holder: list[contextlib.ExitStack] = []

    async def block_port_while_starting(event: StepEvent) -> None:
        if event.step is Step.CUTOVER and event.kind.value == "step_finished":
            stack = contextlib.ExitStack()
            for _ in range(60):  # the engine may still be releasing it after the stop
                try:
                    stack.enter_context(occupied(port))
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            holder.append(stack)
        if event.step is Step.SWAP_BACK and event.kind.value == "step_started":
            for stack in holder:
                stack.close()

    plan = await plan_rollback(stage.services, stage.environment.name, None)
    result = await rollback_database(
        stage.services, plan, requested_by="t", listener=block_port_while_starting
    )
    assert holder, "the port was never taken"
    assert not result.ok
    assert "Could not start" in (result.error or "")
    assert "undone automatically" in result.environment_state
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_failing_health_checks_swap_back(swap_stage: Stage, docker: aiodocker.Docker) -> None:
    stage = swap_stage
    web = stage.project.web_urls["web"]
    health = stage.environment.health.model_copy(
        update={
            "http": (HttpCheck(name="web", url=web.replace("/health", "/missing")),),
            "deadline_seconds": 2.0,
        }
    )
    stage = stage.with_environment(health=health)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    result = await rollback_database(stage.services, plan, requested_by="t", listener=Recorder())
    assert not result.ok
    assert "Health checks failed" in (result.error or "")
    assert "undone automatically" in result.environment_state
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_rename_refused_because_a_session_stays_leaves_everything_as_it_was(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker
) -> None:
    """The bot's user cannot end a superuser's session, so the server refuses the rename."""
    role = f"app_{uuid.uuid4().hex[:6]}"
    database = f"shop_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg.superuser_dsn())
    await admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB")
    await admin.execute(f"CREATE DATABASE {database} OWNER {role}")
    await admin.close()
    app_dsn = f"postgresql://{role}@127.0.0.1:{pg.port}/{database}"
    try:
        await seed_demo_database(app_dsn, rows=500)
        backup = await dump_database(
            DatabaseTarget(app_dsn, stage.services.tools),
            stage.environment.backups_dir / "pre-deployment-20241206-120000.dump",
        )
        await change_after_backup(app_dsn)
        before = await database_snapshot(app_dsn)
        staged = stage.with_environment(database_url=SecretStr(app_dsn), strategy=Strategy.SWAP)
        plan = await plan_rollback(staged.services, staged.environment.name, backup.name)
        assert plan.strategy is Strategy.SWAP, plan.strategy_note
        stubborn = await asyncpg.connect(pg.superuser_dsn(database))
        try:
            result = await rollback_database(
                staged.services, plan, requested_by="t", listener=Recorder()
            )
        finally:
            await stubborn.close()
        assert not result.ok
        assert "cut-over was refused" in (result.error or "")
        assert "database unchanged" in result.environment_state
        assert await database_snapshot(app_dsn) == before
        assert set((await container_states(docker, stage.project)).values()) == {"running"}
        names = await database_names(app_dsn)
        assert not [n for n in names if derived_from(database, n)]
        # New connections are accepted again.
        connection = await asyncpg.connect(app_dsn)
        await connection.close()
    finally:
        admin = await asyncpg.connect(pg.superuser_dsn())
        for name in await database_names(pg.superuser_dsn()):
            if name.startswith(database):
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.fixture
async def small_disk_cluster() -> AsyncIterator[ThrowawayPostgres]:
    """A cluster on a 250 MB tmpfs, WAL kept small: no room for two copies of 70 MB."""
    mount = Path(f"/tmp/rb-small-disk-{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(mount.mkdir)
    mounted = await asyncio.to_thread(
        subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=250m", "tmpfs", str(mount)]
    )
    assert mounted.returncode == 0, "this test mounts a small tmpfs: it must run as root"
    await asyncio.to_thread(mount.chmod, 0o777)
    try:
        settings = {"max_wal_size": "48MB", "min_wal_size": "32MB"}
        async with ThrowawayPostgres(fast=True, base_dir=mount, settings=settings) as cluster:
            yield cluster
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mount)])
        await asyncio.to_thread(mount.rmdir)


async def test_not_enough_disk_falls_back_to_in_place(
    stage: Stage, small_disk_cluster: ThrowawayPostgres
) -> None:
    await small_disk_cluster.create_database("shop")
    dsn = small_disk_cluster.superuser_dsn("shop")
    await seed_demo_database(dsn, rows=200_000)
    staged = stage.with_environment(database_url=SecretStr(dsn), strategy=Strategy.SWAP)
    backup = await dump_database(
        DatabaseTarget(dsn, stage.services.tools),
        stage.environment.backups_dir / "pre-deployment-20241207-120000.dump",
    )
    expected = await database_snapshot(dsn)
    await change_after_backup(dsn)
    plan = await plan_rollback(staged.services, staged.environment.name, backup.name)
    assert plan.strategy is Strategy.IN_PLACE
    assert plan.wipe_first
    assert "emptying the database first" in plan.strategy_note
    result = await execute_rollback(
        staged.services,
        plan,
        run_id=(
            await staged.services.store.create_run(
                environment=staged.environment.name,
                kind="database",
                requested_by="t",
                status=RunStatus.RUNNING,
                plan=plan.summary(),
            )
        ).id,
        listener=Recorder(),
    )
    assert result.ok, result.error
    assert result.strategy == "in-place"
    assert await database_snapshot(dsn) == expected


# -- issue 8: derived names fit 63 bytes and map back to their run --

LONG_ASCII = "a" * 63
FORTY = "orders_archive_for_the_eu_region_2024_q4"  # 40 characters
MULTIBYTE = ("données_clients_production_" * 3)[:40]  # shares a prefix with MULTIBYTE_2
MULTIBYTE_2 = MULTIBYTE[:-1] + "é"


@pytest.mark.parametrize("live", [LONG_ASCII, FORTY, MULTIBYTE, MULTIBYTE_2, "é" * 31 + "x", "s"])
def test_derived_names_fit_63_bytes_and_parse_back_to_their_run(live: str) -> None:
    """issue 8: staging/old/undone names fit PostgreSQL's 63 bytes and name their run."""
    names = SwapNames.for_run(live, "rb-1a2b3c4d")
    undone = SwapNames.for_undo(live, "rb-99aa88bb", names.old).staging
    for name, kind, run_id in (
        (names.staging, DerivedKind.STAGING, "rb-1a2b3c4d"),
        (names.old, DerivedKind.OLD, "rb-1a2b3c4d"),
        (undone, DerivedKind.UNDONE, "rb-99aa88bb"),
    ):
        assert len(name.encode()) <= 63
        name.encode().decode()  # whole characters only
        assert parse_derived(name) == (kind, run_id)
        assert derived_from(live, name)
        assert not derived_from(live + "x", name)
    assert parse_derived(live) is None


def test_long_names_that_share_a_prefix_never_collide() -> None:
    """issue 8: two names equal in their first bytes get different derived names."""
    pairs = [(MULTIBYTE, MULTIBYTE_2), (LONG_ASCII, LONG_ASCII[:-1] + "b"), (FORTY, FORTY + "x")]
    for first, second in pairs:
        a, b = SwapNames.for_run(first, "rb-00000001"), SwapNames.for_run(second, "rb-00000001")
        assert {a.staging, a.old}.isdisjoint({b.staging, b.old})
        assert not derived_from(first, b.staging) and not derived_from(second, a.staging)


@pytest.fixture(params=[LONG_ASCII, "é" * 31 + "x"], ids=["63-byte-ascii", "63-byte-multibyte"])
async def long_named_stage(
    request: pytest.FixtureRequest, stage: Stage, pg: ThrowawayPostgres
) -> AsyncIterator[Stage]:
    """The stage's database renamed to a 63-byte name, with the swap strategy."""
    long_name: str = request.param
    admin = await asyncpg.connect(pg.superuser_dsn())
    try:
        await admin.execute(f'ALTER DATABASE {stage.database.name} RENAME TO "{long_name}"')
    finally:
        await admin.close()
    dsn = pg.superuser_dsn(long_name)
    renamed = replace(stage, database=FreshDatabase(long_name, dsn))
    try:
        yield renamed.with_environment(database_url=SecretStr(dsn), strategy=Strategy.SWAP)
    finally:
        for database in await database_names(dsn):
            if derived_from(long_name, database):
                await pg.drop_database(database)
        admin = await asyncpg.connect(pg.superuser_dsn())
        try:
            await admin.execute(f'ALTER DATABASE "{long_name}" RENAME TO {stage.database.name}')
        finally:
            await admin.close()


async def test_swap_rollback_and_undo_of_a_63_byte_name(long_named_stage: Stage) -> None:
    """issue 8: a 63-byte (ASCII or multibyte) name swaps, undoes, and leaves no orphan."""
    stage = long_named_stage
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    result = await rollback_database(stage.services, plan, requested_by="t", listener=Recorder())
    assert result.ok, (result.error, result.environment_state)
    assert await database_snapshot(stage.dsn) == at_backup
    names = await database_names(stage.dsn)
    assert stage.database.name in names and result.old_database in names
    assert parse_derived(result.old_database or "") == (DerivedKind.OLD, result.run_id)
    undo = await undo_rollback(
        stage.services, stage.environment.name, requested_by="t", listener=Recorder()
    )
    assert undo.ok, (undo.error, undo.environment_state)
    assert await database_snapshot(stage.dsn) == before
    kept = {n for n in await database_names(stage.dsn) if derived_from(stage.database.name, n)}
    assert kept == {undo.old_database}  # the rolled-back database, kept for its time
    assert parse_derived(undo.old_database or "") == (DerivedKind.UNDONE, undo.run_id)


# -- issue 8: the swap keeps the tablespace, the ICU locale and the grantors --


@pytest.fixture
async def icu_stage(stage: Stage, pg: ThrowawayPostgres) -> AsyncIterator[Stage]:
    """A database on its own tablespace, with an ICU locale, a GRANT made by a non-owner
    (who holds GRANT OPTION), seeded, backed up, and changed since."""
    tag = uuid.uuid4().hex[:6]
    owner, granter, reader = f"own_{tag}", f"granter_{tag}", f"reader_{tag}"
    space, name = f"space_{tag}", f"icu_{tag}"
    folder = pg.base_path / space
    await asyncio.to_thread(folder.mkdir)
    account = await asyncio.to_thread(pwd.getpwnam, pg.os_user)
    await asyncio.to_thread(os.chown, folder, account.pw_uid, account.pw_gid)
    admin = await asyncpg.connect(pg.superuser_dsn())
    try:
        await admin.execute(f"CREATE TABLESPACE {space} LOCATION '{folder}'")
        for role in (owner, granter, reader):
            await admin.execute(f"CREATE ROLE {role}")
        await admin.execute(
            f"CREATE DATABASE {name} OWNER {owner} TEMPLATE template0 TABLESPACE {space}"
            " LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C'"
        )
        await admin.execute(
            f"GRANT CONNECT, TEMP ON DATABASE {name} TO {granter} WITH GRANT OPTION"
        )
        await admin.execute(f"SET ROLE {granter}")
        await admin.execute(f"GRANT CONNECT ON DATABASE {name} TO {reader}")
        await admin.execute("RESET ROLE")
    finally:
        await admin.close()
    dsn = pg.superuser_dsn(name)
    await seed_demo_database(dsn, rows=300)
    await dump_database(
        DatabaseTarget(dsn, stage.services.tools),
        stage.environment.backups_dir / "pre-deployment-20241210-120000.dump",
    )
    await change_after_backup(dsn)
    try:
        yield replace(stage, database=FreshDatabase(name, dsn)).with_environment(
            database_url=SecretStr(dsn), strategy=Strategy.SWAP
        )
    finally:
        for database in await database_names(dsn):
            if database == name or derived_from(name, database):
                await pg.drop_database(database)
        admin = await asyncpg.connect(pg.superuser_dsn())
        try:
            await admin.execute(f"DROP TABLESPACE {space}")
            for role in (reader, granter, owner):
                await admin.execute(f"DROP ROLE {role}")
        finally:
            await admin.close()
        await asyncio.to_thread(folder.rmdir)


async def test_swap_keeps_tablespace_icu_locale_and_grantors(icu_stage: Stage) -> None:
    """issue 8: a database on a non-default tablespace stays there, ICU stays ICU with its
    locale, and a GRANT made by a non-owner keeps its grantor, through a swap and its undo."""
    stage = icu_stage
    name = stage.database.name
    properties = await database_properties(stage.dsn, name)
    assert properties["provider"] == "i" and properties["daticulocale"] == "de-DE"
    assert str(properties["tablespace"]).startswith("space_")
    assert any(g.startswith("granter_") for g in properties["grants"])  # type: ignore[attr-defined]
    before = await database_snapshot(stage.dsn)

    plan = await plan_rollback(
        stage.services, stage.environment.name, "pre-deployment-20241210-120000.dump"
    )
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    result = await rollback_database(stage.services, plan, requested_by="t", listener=Recorder())
    assert result.ok, (result.error, result.environment_state)
    assert result.strategy == "swap" and result.old_database, result.environment_state
    assert await database_properties(stage.dsn, name) == properties

    undo = await undo_rollback(
        stage.services, stage.environment.name, requested_by="t", listener=Recorder()
    )
    assert undo.ok, (undo.error, undo.environment_state)
    assert await database_snapshot(stage.dsn) == before
    assert await database_properties(stage.dsn, name) == properties


# -- issue 8: the data-loss preview is bounded in time --


async def test_preview_counts_small_tables_and_estimates_beyond_the_budget(
    swap_stage: Stage,
) -> None:
    """issue 8: exact counts within the size budget; estimates (marked) beyond it."""
    stage = swap_stage
    await change_after_backup(stage.dsn)
    names = SwapNames.for_run(stage.database.name, "rb-00e57173")
    await restore_into_staging(
        stage.target(), stage.backup, names, jobs=1, entries=10, progress=_no_progress
    )
    try:
        exact = {t.table: t for t in await preview_data_loss(stage.target(), names)}
        assert exact["public.feature_flags"].live_rows == 1
        assert not any(t.estimated for t in exact.values())
        admin = await asyncpg.connect(stage.dsn)
        await admin.execute("ANALYZE")
        await admin.close()
        estimated = await preview_data_loss(stage.target(), names, PreviewLimits(exact_bytes=0))
        # Every table with pages is estimated; an empty one costs nothing to count.
        assert estimated and all(t.estimated for t in estimated if t.live_rows or t.backup_rows)
        for table in estimated:  # ANALYZE read these small tables whole: exact estimates
            assert (table.live_rows, table.backup_rows) == (
                exact[table.table].live_rows,
                exact[table.table].backup_rows,
            )
    finally:
        await drop_database(stage.target(), names.staging)


async def test_preview_ends_within_its_timeout_while_a_table_is_locked(
    swap_stage: Stage,
) -> None:
    """issue 8: a count that cannot finish in time becomes an estimate; the preview does
    not wait for it."""
    stage = swap_stage
    names = SwapNames.for_run(stage.database.name, "rb-00c0ffee")
    await restore_into_staging(
        stage.target(), stage.backup, names, jobs=1, entries=10, progress=_no_progress
    )
    blocker = await asyncpg.connect(stage.dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        began = asyncio.get_running_loop().time()
        loss = await preview_data_loss(stage.target(), names, PreviewLimits(timeout_seconds=0.5))
        elapsed = asyncio.get_running_loop().time() - began
        await transaction.rollback()
    finally:
        await blocker.close()
        await drop_database(stage.target(), names.staging)
    assert elapsed < 1.5
    by_table = {t.table: t for t in loss}
    assert by_table["public.orders"].estimated
    assert not by_table["public.customers"].estimated


async def _no_progress(message: str) -> None:
    pass


async def test_lock_held_on_the_database_fails_the_rename_fast_and_changes_nothing(
    swap_stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker
) -> None:
    """Issue 7: a session holding a lock on the live database (an open transaction that
    commented on it, from another database) made the rename wait 28.6 s with the
    application stopped; under lock_timeout it fails within lock_seconds, nothing is
    renamed and the live database accepts connections again. A session holding an ACCESS
    EXCLUSIVE lock on a table inside it is ended, and the swap goes through."""
    stage = swap_stage.with_environment(
        timeouts=swap_stage.environment.timeouts.model_copy(update={"lock_seconds": 1.0})
    )
    name = stage.database.name
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    plan = await plan_rollback(stage.services, stage.environment.name, stage.backup.name)
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    holder = await asyncpg.connect(pg.superuser_dsn("postgres"))
    try:
        await holder.execute(f"BEGIN; COMMENT ON DATABASE {name} IS 'held'")
        began = asyncio.get_running_loop().time()
        result = await rollback_database(
            stage.services, plan, requested_by="t", listener=Recorder()
        )
        elapsed = asyncio.get_running_loop().time() - began
    finally:
        await holder.close()
    assert not result.ok
    assert "cut-over was refused; nothing was renamed" in (result.error or "")
    assert f"another session holds a lock on database {name}" in (result.error or "")
    assert "waited 1 s" in (result.error or "")
    cutover = next(s for s in result.steps if s.step is Step.CUTOVER)
    assert cutover.seconds < 3, cutover
    assert elapsed < 30, elapsed
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert not [n for n in await database_names(stage.dsn) if n.startswith(name[:40] + "__rb_")]
    connection = await asyncpg.connect(stage.dsn)  # connections allowed again
    await connection.close()

    plan = await plan_rollback(stage.services, stage.environment.name, stage.backup.name)
    run = await stage.services.store.create_run(
        environment=stage.environment.name,
        kind="database",
        requested_by="t",
        status=RunStatus.APPROVED,
        plan=plan.summary(),
    )
    prep = await prepare_rollback(stage.services, plan, run_id=run.id, listener=Recorder())
    assert prep.names is not None, prep.note
    table_lock = await asyncpg.connect(stage.dsn)
    await table_lock.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    try:  # the staging database prepared above is used: no row count meets the lock
        result = await execute_rollback(stage.services, plan, run_id=run.id, listener=Recorder())
    finally:
        with contextlib.suppress(Exception):
            await table_lock.close(timeout=2)
    assert result.ok, result.error
    assert result.strategy == Strategy.SWAP.value
    assert table_lock.is_closed()
    assert await database_snapshot(stage.dsn) != before
