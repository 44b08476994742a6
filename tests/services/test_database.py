"""What a failed restore shows, and what it logs (issue 8, item 8)."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import pytest

from services import swap
from services.backups import Backup
from services.database import DatabaseTarget, dump_database, restore_in_place
from services.errors import DatabaseError, RestoreFailed
from services.pgtools import PgTools
from services.processes import error_headline
from tests.conftest import FreshDatabase

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
