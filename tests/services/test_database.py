"""What a failed restore shows, and what it logs (issue 8, item 8); PostgreSQL steps under
deadlines and locks, and dumps read to their end (issue 7)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import asyncpg
import pytest

from sandbox.demo_environment import database_snapshot
from services import swap
from services.backups import Backup, resolve_backup
from services.database import DatabaseTarget, dump_database, restore_in_place
from services.environments import Timeouts
from services.errors import BackupError, DatabaseError, RestoreFailed
from services.events import StepEvent
from services.pgtools import PgTools
from services.processes import error_headline
from services.workflow import plan_rollback, rollback_database
from tests.conftest import FreshDatabase
from tests.services.conftest import Stage, change_after_backup, container_states

ROW_VALUE = b"987654321"  # a value of the live data: it must not reach Slack
BROKEN_VALUE = b"98765432x"  # the same row, broken in the archive so that COPY fails


async def tampered_backup(fresh_db: FreshDatabase, tools: PgTools, folder: Path) -> Backup:
    """A valid archive whose COPY data holds a value the column type refuses."""
    connection = await asyncpg.connect(fresh_db.dsn)
    try:
        await connection.execute(
            "CREATE TABLE accounts (id int, note text);"
            f"INSERT INTO accounts VALUES ({ROW_VALUE.decode()}, 'card 4111-1111');"
        )
    finally:
        await connection.close()
    backup = await dump_database(
        DatabaseTarget(fresh_db.dsn, tools), folder / "t.dump", compression=0
    )
    data = backup.path.read_bytes()
    assert data.count(ROW_VALUE) == 1
    backup.path.write_bytes(data.replace(ROW_VALUE, BROKEN_VALUE))
    return backup


def test_error_headline_keeps_errors_and_drops_row_data() -> None:
    """issue 8: DETAIL, CONTEXT and COPY data lines never reach Slack; the result is bounded."""
    text = (
        'psql:<stdin>:57: ERROR:  duplicate key value violates unique constraint "p"\n'
        "DETAIL:  Key (email)=(ann@example.com) already exists.\n"
        "CONTEXT:  COPY customers, line 2\n"
        "2\tann@example.com\n"
        'pg_restore: error: COPY failed for table "t": ERROR:  invalid input syntax for '
        'type integer: "ann@example.com"\n'
    )
    shown = error_headline(text)
    assert "ann@example.com" not in shown
    assert 'violates unique constraint "p"' in shown and "invalid input syntax" in shown
    assert len(error_headline("ERROR: x\n" * 5 + "ERROR: " + "y" * 5000)) <= 300


async def test_failed_restore_shows_a_bounded_headline_and_logs_the_rest(
    fresh_db: FreshDatabase, tools: PgTools, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """issue 8: a COPY error shows its headline in the message, without the row; the full
    text goes to the log, without the password."""
    backup = await tampered_backup(fresh_db, tools, tmp_path)
    target = DatabaseTarget(fresh_db.dsn.replace("postgres@", "postgres:pw-secret-1@"), tools)
    caplog.set_level(logging.WARNING)
    with pytest.raises(RestoreFailed) as failed:
        await restore_in_place(target, backup)
    shown = str(failed.value)
    assert "invalid input syntax for type integer" in shown
    assert BROKEN_VALUE.decode() not in shown and "4111" not in shown
    assert len(shown) < 500
    assert BROKEN_VALUE.decode() in caplog.text  # the whole story is in the log
    assert "pw-secret-1" not in caplog.text

    names = swap.SwapNames.for_run(fresh_db.name, "rb-0badc0de")
    with pytest.raises(DatabaseError) as staged:
        await swap.restore_into_staging(target, backup, names, jobs=1, entries=10, progress=_ignore)
    shown = str(staged.value)
    assert "invalid input syntax" in shown and BROKEN_VALUE.decode() not in shown
    assert len(shown) < 500
    assert not await swap.database_exists(target, names.staging)


async def _ignore(message: str) -> None:
    pass


LOCK_SECONDS = 1.0


class Recorder:
    async def __call__(self, event: StepEvent) -> None:
        pass


@pytest.fixture
async def table_lock(stage: Stage) -> AsyncIterator[asyncpg.Connection]:
    """A session (not the application's) holding an ACCESS EXCLUSIVE lock on orders."""
    connection = await asyncpg.connect(stage.dsn)
    await connection.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    try:
        yield connection
    finally:
        if not connection.is_closed():
            await connection.close(timeout=2)


def bounded(stage: Stage, **limits: float) -> DatabaseTarget:
    return DatabaseTarget(stage.dsn, stage.services.tools, Timeouts(**limits))


async def test_in_place_safety_dump_runs_after_other_sessions_are_ended(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    """Issue 7: an idle session holding an ACCESS EXCLUSIVE lock kept the application down
    119 s: the safety pg_dump ran before the other sessions were ended."""
    backup_data = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    staged = stage.with_environment(timeouts=Timeouts(lock_seconds=LOCK_SECONDS))
    plan = await plan_rollback(staged.services, staged.environment.name, None)
    holder = await asyncpg.connect(stage.dsn)
    await holder.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    try:
        result = await rollback_database(
            staged.services, plan, requested_by="t", listener=Recorder()
        )
    finally:
        if not holder.is_closed():
            await holder.close(timeout=2)
    assert result.ok, result.error
    safety = next(s for s in result.steps if s.step.value == "safety_backup")
    assert safety.seconds < 5, safety
    assert holder.is_closed()  # ended before the dump
    assert await database_snapshot(stage.dsn) == backup_data
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_dump_waits_for_a_lock_no_longer_than_lock_seconds(
    stage: Stage, table_lock: asyncpg.Connection
) -> None:
    """Issue 7: pg_dump runs with --lock-wait-timeout: a lock it cannot get fails it fast."""
    destination = stage.environment.backups_dir / "pre-rollback-20241203-130000.dump"
    began = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        await dump_database(bounded(stage, lock_seconds=LOCK_SECONDS), destination)
    assert time.monotonic() - began < LOCK_SECONDS + 3
    assert str(caught.value).startswith(
        f"pg_dump of '{stage.database.name}' failed: another session holds a lock on a table "
        "it must read (waited 1 s): pg_dump: error:"
    )
    assert not list(stage.environment.backups_dir.glob("*pre-rollback-*"))


async def test_restore_past_its_deadline_is_killed_and_rolled_back(stage: Stage) -> None:
    """Issue 7: pg_restore and psql had no deadline; past it both are killed, and the
    transaction (before COMMIT) leaves the live data as it was."""
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    holder = await asyncpg.connect(stage.dsn)  # the wipe waits for this lock
    await holder.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    began = time.monotonic()
    try:
        with pytest.raises(RestoreFailed) as caught:
            await restore_in_place(bounded(stage, restore_seconds=1.0), stage.backup)
        assert time.monotonic() - began < 1.0 + 6
    finally:
        await holder.close(timeout=2)
    assert str(caught.value) == (
        f"Restore of {stage.backup.name} timed out after 1 s: pg_restore and psql were "
        "killed; the transaction was rolled back"
    )
    assert not caught.value.may_have_committed
    assert await database_snapshot(stage.dsn) == before


async def test_truncated_dump_is_refused_before_anything_stops(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    """Issue 7: a truncated dump passed `pg_restore --list`; in place, the pre-flight now
    reads it to its end and refuses it while the application still runs."""
    truncated = stage.environment.backups_dir / "pre-deployment-20241204-120000.dump"
    data = await asyncio.to_thread(stage.backup.path.read_bytes)
    await asyncio.to_thread(truncated.write_bytes, data[: len(data) // 2])
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    listed = await resolve_backup(stage.environment, truncated.name)
    with pytest.raises(BackupError) as caught:
        await plan_rollback(stage.services, stage.environment.name, listed.name)
    assert str(caught.value).startswith(
        f"{truncated.name} cannot be read to its end, so it cannot be restored: pg_restore: error:"
    )
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await database_snapshot(stage.dsn) == before
    assert await stage.services.store.active_run(stage.environment.name) is None
