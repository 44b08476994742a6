"""The environment's PostgreSQL database: ping, safety dump, transactional in-place restore."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services import processes
from services.backups import PARTIAL_SUFFIX, Backup, inspect_archive
from services.environments import Timeouts
from services.errors import BackupError, DatabaseError, DeadlineExceeded, RestoreFailed
from services.pgtools import PgTools, asyncpg_url, libpq_environment, scrub, with_database
from services.processes import error_headline

log = logging.getLogger(__name__)

# Empties the database inside the restore's own transaction, so that nothing created after
# the backup survives (pg_restore --clean drops only what the dump knows) and an error
# rolls everything back to the live data.
WIPE_SQL = r"""
DO $wipe$
DECLARE r record;
BEGIN
  FOR r IN SELECT evtname FROM pg_event_trigger LOOP
    EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);
  END LOOP;
  FOR r IN SELECT pubname FROM pg_publication LOOP
    EXECUTE format('DROP PUBLICATION %I', r.pubname);
  END LOOP;
  FOR r IN SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  FOR r IN SELECT fdwname FROM pg_foreign_data_wrapper LOOP
    EXECUTE format('DROP FOREIGN DATA WRAPPER %I CASCADE', r.fdwname);
  END LOOP;
  -- The public schema as a new database has it; a dump only records changes to it.
  IF current_setting('server_version_num')::int >= 150000 THEN
    CREATE SCHEMA public AUTHORIZATION pg_database_owner;
    GRANT USAGE ON SCHEMA public TO PUBLIC;
  ELSE
    CREATE SCHEMA public;
    GRANT ALL ON SCHEMA public TO PUBLIC;
  END IF;
  COMMENT ON SCHEMA public IS 'standard public schema';
END
$wipe$;
"""

ProgressCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class DatabaseTarget:
    """A database to act on: its URL (secret) and the client programs to use."""

    url: str
    tools: PgTools
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def libpq_env(self) -> dict[str, str]:
        return libpq_environment(self.url)

    @property
    def name(self) -> str:
        return self.libpq_env["PGDATABASE"]

    def on(self, database: str) -> DatabaseTarget:
        """Another database on the same server, with the same credentials."""
        return DatabaseTarget(with_database(self.url, database), self.tools, self.timeouts)


class BoundedConnection(asyncpg.Connection):
    """Every statement runs under the connection's command_timeout; one that expires is an
    ordinary DeadlineExceeded (the server cancels it) instead of a bare TimeoutError."""

    database_name = ""
    command_seconds = 0.0

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"a statement on database '{self.database_name}'", self.command_seconds
        )

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        try:
            return await super().execute(query, *args, timeout=timeout)
        except TimeoutError:
            raise self._expired() from None

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None
    ) -> Any:
        try:
            return await super().fetch(query, *args, timeout=timeout, record_class=record_class)
        except TimeoutError:
            raise self._expired() from None

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        try:
            return await super().fetchval(query, *args, column=column, timeout=timeout)
        except TimeoutError:
            raise self._expired() from None

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None
    ) -> Any:
        try:
            return await super().fetchrow(query, *args, timeout=timeout, record_class=record_class)
        except TimeoutError:
            raise self._expired() from None

    async def close(self, *, timeout: float | None = None) -> None:
        """A server that stopped answering cannot hold the caller: the socket is dropped."""
        # On expiry asyncpg has aborted the connection already.
        with contextlib.suppress(TimeoutError):
            await super().close(timeout=timeout if timeout is not None else _CLOSE_SECONDS)


_CLOSE_SECONDS = 5.0


async def connect(target: DatabaseTarget) -> asyncpg.Connection:
    """A connection whose opening and every statement are bounded by the target's timeouts."""
    limits = target.timeouts
    try:
        connection: BoundedConnection = await asyncpg.connect(
            asyncpg_url(target.url),
            timeout=limits.connect_seconds,
            command_timeout=limits.query_seconds,
            connection_class=BoundedConnection,
            # A lock someone else holds fails the statement fast instead of stalling it.
            server_settings={"lock_timeout": str(max(1, round(limits.lock_seconds * 1000)))},
        )
        connection.database_name = target.name
        connection.command_seconds = limits.query_seconds
        return connection
    except TimeoutError:
        raise DeadlineExceeded(
            f"connecting to database '{target.name}'", limits.connect_seconds
        ) from None
    except (OSError, asyncpg.PostgresError) as error:
        raise DatabaseError(f"Cannot connect to database '{target.name}'", str(error)) from error


async def server_major(target: DatabaseTarget) -> int:
    """The server's major version (15, 16, …), for choosing compatible client tools."""
    connection = await connect(target)
    try:
        return int(await connection.fetchval("SHOW server_version_num")) // 10000
    finally:
        await connection.close()


async def ping(target: DatabaseTarget, probe: str = "SELECT 1") -> float:
    """Run the probe query; returns its latency in seconds."""
    began = time.monotonic()
    connection = await connect(target)
    try:
        await connection.fetchval(probe)
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"Probe failed on '{target.name}'", str(error)) from error
    finally:
        await connection.close()
    return time.monotonic() - began


async def wait_until_ready(target: DatabaseTarget, deadline_seconds: float) -> None:
    """Retry connecting until the server answers (after a crash or restart) or time is up."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            await ping(target)
            return
        except (DatabaseError, DeadlineExceeded):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def terminate_sessions(target: DatabaseTarget) -> int:
    """End every other session on the database: an idle transaction would stall the restore."""
    connection = await connect(target)
    try:
        ended = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    except asyncpg.PostgresError as error:
        raise DatabaseError("Cannot end the other sessions", str(error)) from error
    finally:
        await connection.close()
    return int(ended or 0)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def safety_backup_name(now: datetime | None = None) -> str:
    return f"pre-rollback-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}.dump"


async def dump_database(
    target: DatabaseTarget, destination: Path, *, compression: int | None = None
) -> Backup:
    """pg_dump (custom format) to destination: written aside, fsynced, verified, then renamed.

    `compression` (0-9, default pg_dump's 6): a safety backup taken while the application
    is down is worth a larger file if it is written sooner.
    """
    partial = destination.with_name(f".{destination.name}{PARTIAL_SUFFIX}")
    level = [] if compression is None else [f"--compress={compression}"]
    limits = target.timeouts
    try:
        result = await processes.run(
            [
                target.tools.pg_dump,
                "--format=custom",
                *level,
                "--no-sync",
                # A session holding a lock on a table fails the dump fast instead of
                # keeping the application down while it waits.
                f"--lock-wait-timeout={round(limits.lock_seconds * 1000)}",
                f"--file={partial}",
            ],
            env=target.libpq_env,
            timeout=limits.dump_seconds,
            what=f"pg_dump of '{target.name}'",
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if not result.ok:
        partial.unlink(missing_ok=True)
        log.warning("pg_dump of %s failed: %s", target.name, scrub(result.output, target.url))
        if "Query was: LOCK TABLE" in result.stderr:
            raise DatabaseError(
                f"pg_dump of '{target.name}' failed: another session holds a lock on a table "
                f"it must read (waited {limits.lock_seconds:g} s)",
                result.error_text(),
            )
        raise DatabaseError(f"pg_dump of '{target.name}' failed", result.error_text())
    try:
        await asyncio.to_thread(_fsync, partial)
        # Checked readable before it takes a backup's name: an unreadable dump is never listed.
        stat = await asyncio.to_thread(partial.stat)
        written = Backup(destination.name, partial, stat.st_size, datetime.now(UTC))
        await inspect_archive(target.tools, written, timeout=limits.dump_seconds)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    await asyncio.to_thread(partial.rename, destination)
    await asyncio.to_thread(_fsync, destination)
    return Backup(destination.name, destination, stat.st_size, written.created_at)


# psql prints this line with the transaction's id right after each BEGIN of ours.
_XID_MARK = "rollback-bot-xid "
_XID_QUERY = f"SELECT '{_XID_MARK}' || txid_current();\n".encode()

# Called with ("wipe" | "restore", transaction id) before that transaction's COMMIT is sent.
TransactionHook = Callable[[str, int], Awaitable[None]]


async def _no_hook(label: str, xid: int) -> None:
    """For callers that do not journal the restore's transactions."""


async def transaction_status(target: DatabaseTarget, xid: int) -> str | None:
    """'committed', 'aborted', 'in progress', or None (too old to know): how a transaction
    of a process that died ended, which tells whether its restore is live."""
    connection = await connect(target)
    try:
        status = await connection.fetchval("SELECT txid_status($1)", xid)
    except asyncpg.PostgresError as error:
        raise DatabaseError("Cannot read a transaction's status", str(error)) from error
    finally:
        await connection.close()
    return None if status is None else str(status)


async def verify_archive(tools: PgTools, backup: Backup, *, timeout: float) -> None:
    """Read the whole dump (every data block), as the restore will: a truncated or corrupt
    file passes `pg_restore --list`, which reads only the table of contents."""
    result = await processes.run(
        [tools.pg_restore, "--file=/dev/null", str(backup.path)],
        timeout=timeout,
        what=f"reading {backup.name} through",
    )
    if not result.ok:
        raise BackupError(
            f"{backup.name} cannot be read to its end, so it cannot be restored: "
            f"{result.error_text(500)}"
        )


async def restore_in_place(
    target: DatabaseTarget,
    backup: Backup,
    *,
    wipe_first: bool = False,
    on_transaction: TransactionHook = _no_hook,
) -> None:
    """Make the database exactly the backup, in one transaction: all of it or none of it.

    pg_restore turns the archive into SQL, which is relayed into psql between our own BEGIN
    and COMMIT (after the wipe). COMMIT is sent only once pg_restore has read the whole
    archive; on any error psql stops (ON_ERROR_STOP) or its input ends without COMMIT,
    and PostgreSQL rolls the transaction back, leaving the live data as it was.

    `on_transaction` gets each transaction's id before its COMMIT is sent: whoever finds
    the run interrupted asks the server how that transaction ended instead of guessing.
    Past the target's restore deadline both programs are killed (before COMMIT: rolled
    back).
    """
    state = _RelayState()
    limit = target.timeouts.restore_seconds
    try:
        async with asyncio.timeout(limit):
            await _restore_in_place(
                target, backup, wipe_first=wipe_first, on_transaction=on_transaction, state=state
            )
    except TimeoutError:
        raise RestoreFailed(
            f"Restore of {backup.name} timed out after {limit:g} s",
            "pg_restore and psql were killed"
            + (
                " after COMMIT was sent: the restore may have committed"
                if state.commit_sent
                else "; the transaction was rolled back"
            ),
            may_have_committed=wipe_first or state.commit_sent,
        ) from None


@dataclass
class _RelayState:
    commit_sent: bool = False


async def _restore_in_place(
    target: DatabaseTarget,
    backup: Backup,
    *,
    wipe_first: bool,
    on_transaction: TransactionHook,
    state: _RelayState,
) -> None:
    producer = await asyncio.create_subprocess_exec(
        target.tools.pg_restore,
        "--file=-",
        str(backup.path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    consumer = None
    try:
        consumer = await asyncio.create_subprocess_exec(
            target.tools.psql,
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--tuples-only",
            "--no-align",
            "--file=-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **target.libpq_env},
        )
        xids: asyncio.Queue[int] = asyncio.Queue()
        xid_task = asyncio.ensure_future(_read_xids(consumer.stdout, xids))
        psql_err_task = asyncio.ensure_future(_read_all(consumer.stderr))
        restore_err_task = asyncio.ensure_future(_read_all(producer.stderr))
        try:
            committed = await _relay(
                producer,
                consumer,
                wipe_first=wipe_first,
                xids=xids,
                on_transaction=on_transaction,
                state=state,
            )
            await consumer.wait()
        finally:
            if consumer.returncode is None:
                xid_task.cancel()  # psql is being killed: its output may never end
            await asyncio.gather(xid_task, return_exceptions=True)
        psql_err, restore_err = await psql_err_task, await restore_err_task
    except BaseException:
        if consumer is not None:
            await processes.kill(consumer)
        await processes.kill(producer, drain=producer.stdout)
        raise
    if not committed or consumer.returncode != 0:
        # The whole text (it may quote rows) goes to the log; users see the headlines.
        said = "\n".join(t for t in (restore_err.strip(), psql_err.strip()) if t)
        log.warning("restore of %s failed: %s", backup.name, scrub(said, target.url))
    if not committed:
        source = restore_err
        if consumer.returncode != 0 and psql_err.strip():
            source = psql_err
        detail = error_headline(source) or error_headline(restore_err + "\n" + psql_err)
        raise RestoreFailed(
            f"Restore of {backup.name} failed"
            + (" after the database was emptied" if wipe_first else " and was rolled back"),
            detail or "psql stopped before COMMIT (the full text is in the bot's log)",
            may_have_committed=wipe_first,
        )
    if consumer.returncode != 0:
        raise RestoreFailed(
            f"Restore of {backup.name} failed at COMMIT",
            error_headline(psql_err) or "psql failed at COMMIT (the full text is in the bot's log)",
            may_have_committed=True,
        )


# pg_restore 17+ writes `SET transaction_timeout = 0;` into every script's preamble; a
# 15 or 16 server rejects that setting, so the relay makes it conditional on the server.
_TRANSACTION_TIMEOUT = b"SET transaction_timeout = 0;\n"
_PORTABLE_TRANSACTION_TIMEOUT = (
    b"SELECT pg_catalog.set_config('transaction_timeout', '0', false)"
    b" WHERE current_setting('server_version_num')::int >= 170000;\n"
)
_HEAD_BYTES = 64 << 10  # the preamble is within the script's first few hundred bytes


def _portable_head(head: bytes) -> bytes:
    return head.replace(_TRANSACTION_TIMEOUT, _PORTABLE_TRANSACTION_TIMEOUT, 1)


async def _read_all(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await stream.read()).decode(errors="replace")


async def _read_xids(stream: asyncio.StreamReader | None, xids: asyncio.Queue[int]) -> None:
    """Drain psql's output (the script's SELECTs print too), keeping our transaction ids."""
    assert stream is not None
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        if text.startswith(_XID_MARK):
            xids.put_nowait(int(text[len(_XID_MARK) :]))


async def _transaction_id(consumer: asyncio.subprocess.Process, xids: asyncio.Queue[int]) -> int:
    """The id psql printed for the transaction just begun (psql runs its input in order)."""
    getter = asyncio.ensure_future(xids.get())
    ended = asyncio.ensure_future(consumer.wait())
    try:
        await asyncio.wait({getter, ended}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
    finally:
        getter.cancel()
        ended.cancel()
    raise BrokenPipeError("psql did not report its transaction")


async def _relay(
    producer: asyncio.subprocess.Process,
    consumer: asyncio.subprocess.Process,
    *,
    wipe_first: bool,
    xids: asyncio.Queue[int],
    on_transaction: TransactionHook,
    state: _RelayState,
) -> bool:
    """Copy pg_restore's script into psql inside BEGIN … COMMIT; True if COMMIT was sent.

    wipe_first commits the wipe on its own, which frees the old data's disk space before
    the restore writes the new (for a server without room for both at once).
    """
    source, sink = producer.stdout, consumer.stdin
    assert source is not None and sink is not None
    try:
        sink.write(b"BEGIN;\n" + _XID_QUERY + WIPE_SQL.encode() + b"\n")
        await sink.drain()
        xid = await _transaction_id(consumer, xids)
        if wipe_first:
            await on_transaction("wipe", xid)
            sink.write(b"COMMIT;\nBEGIN;\n" + _XID_QUERY)
            await sink.drain()
            xid = await _transaction_id(consumer, xids)
        head = b""
        while len(head) < _HEAD_BYTES and (chunk := await source.read(1 << 20)):
            head += chunk
        sink.write(_portable_head(head))
        await sink.drain()
        while chunk := await source.read(1 << 20):
            sink.write(chunk)
            await sink.drain()
        if await producer.wait() != 0:
            return False
        await on_transaction("restore", xid)
        state.commit_sent = True
        sink.write(b"\nCOMMIT;\n")
        await sink.drain()
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False  # psql stopped on an error; its stderr says which
    finally:
        with contextlib.suppress(OSError):
            sink.close()
        if producer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                producer.kill()
            # Drain what it wrote, or its pipe never closes and wait() never returns.
            while await source.read(1 << 20):
                pass
            await producer.wait()


async def analyze(target: DatabaseTarget) -> None:
    """Refresh planner statistics: a restored database has none."""
    connection = await connect(target)
    try:
        await connection.execute("ANALYZE")
    except asyncpg.PostgresError as error:
        raise DatabaseError("ANALYZE after the restore failed", str(error)) from error
    finally:
        await connection.close()
