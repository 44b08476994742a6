"""The swap strategy: restore into a staging database while the application runs, then
rename the live database aside and the staging one into its place (both in one transaction).

The old database, renamed, is the safety copy: undoing is two more renames.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import asyncpg

from services import database, processes
from services.backups import Backup
from services.database import DatabaseTarget
from services.errors import DatabaseError, DeadlineExceeded
from services.pgtools import scrub
from services.processes import error_headline

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]

# GUCs whose stored value is a list: each item must be passed as its own literal.
_LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
}


def _split_guc_list(value: str) -> list[str]:
    """Items of a stored list setting (`public, "$user"`), double quotes removed, as
    pg_dump's SplitGUCList does, so each can be passed back as a literal."""
    items: list[str] = []
    current, quoted, i = "", False, 0
    while i < len(value):
        char = value[i]
        if char == '"':
            if quoted and value[i + 1 : i + 2] == '"':
                current += '"'
                i += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    items.append(current.strip())
    return [item for item in items if item]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# PostgreSQL cuts identifiers at 63 bytes (NAMEDATALEN - 1), silently.
MAX_IDENTIFIER_BYTES = 63
_TAG = "__rb_"
# The run id's tag: run ids are `rb-<hex>`, stored with `_` (a plain identifier).
_DERIVED = re.compile(r"__rb_(staging|old|undone)_([A-Za-z0-9_]+)$")


class DerivedKind(StrEnum):
    STAGING = "staging"  # the backup restored while the application runs
    OLD = "old"  # the pre-rollback database, kept after the cut-over
    UNDONE = "undone"  # the rolled-back database, set aside by an undo


def _fit_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-8 bytes, cut between characters."""
    return text.encode()[:limit].decode(errors="ignore")


def derived_name(live: str, kind: DerivedKind, run_id: str) -> str:
    """`<live, cut>_<hash of live>__rb_<kind>_<run>`, at most 63 bytes by construction.

    The hash of the whole live name keeps two names that share their first bytes apart.
    """
    suffix = f"{_TAG}{kind.value}_{run_id.replace('-', '_')}"
    digest = hashlib.sha256(live.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    if room < 1:
        raise ValueError(f"run id {run_id!r} is too long for a database name")
    return f"{_fit_bytes(live, room)}_{digest}{suffix}"


def parse_derived(name: str) -> tuple[DerivedKind, str] | None:
    """(kind, run id) of a database name the bot derived, or None for any other name."""
    match = _DERIVED.search(name)
    if match is None:
        return None
    kind, tag = match.groups()
    return DerivedKind(kind), tag.replace("_", "-")


def derived_from(live: str, name: str) -> bool:
    """Whether `name` was derived from the live database `live` (also by the bot's earlier
    scheme, `<live[:40]>__rb_…`, so that the orphans it left are still found)."""
    match = _DERIVED.search(name)
    parsed = parse_derived(name)
    if match is None or parsed is None:
        return False
    try:
        ours = derived_name(live, *parsed)
    except ValueError:  # a run id no run of ours has
        return False
    return name in (ours, live[:40] + match.group(0))


@dataclass(frozen=True)
class SwapNames:
    live: str
    staging: str
    old: str

    @classmethod
    def for_run(cls, live: str, run_id: str) -> SwapNames:
        return cls(
            live,
            derived_name(live, DerivedKind.STAGING, run_id),
            derived_name(live, DerivedKind.OLD, run_id),
        )

    @classmethod
    def for_undo(cls, live: str, run_id: str, old: str) -> SwapNames:
        """An undo: the rolled-back database is set aside, `old` comes back."""
        return cls(live, derived_name(live, DerivedKind.UNDONE, run_id), old)

    def facts(self) -> dict[str, str]:
        """The names as the run's journal keeps them."""
        return {"live_database": self.live, "staging": self.staging, "old_database": self.old}

    @classmethod
    def from_facts(cls, facts: dict[str, object]) -> SwapNames | None:
        live, staging, old = (facts.get(k) for k in ("live_database", "staging", "old_database"))
        if isinstance(live, str) and isinstance(staging, str) and isinstance(old, str):
            return cls(live, staging, old)
        return None


@dataclass(frozen=True)
class Room:
    ok: bool
    reason: str
    live_bytes: int
    free_bytes: int | None


@dataclass(frozen=True)
class TableLoss:
    table: str
    live_rows: int
    backup_rows: int
    estimated: bool = False  # either side is the planner's estimate, not a count

    @property
    def removed(self) -> int:
        return self.live_rows - self.backup_rows


async def maintenance(target: DatabaseTarget) -> asyncpg.Connection:
    """A connection to the server's `postgres` database: renames need one outside both."""
    return await database.connect(target.on("postgres"))


async def check_room(target: DatabaseTarget, headroom: float = 1.2) -> Room:
    """Whether the server's disk can hold a second copy of the database.

    The free space is read where the data directory is visible from here (the same
    host); otherwise it is unknown and the swap is tried (a full disk fails the staging
    restore only, never the live database).
    """
    connection = await maintenance(target)
    try:
        live = int(await connection.fetchval("SELECT pg_database_size($1)", target.name))
        allowed = await connection.fetchval(
            "SELECT r.rolsuper OR (r.rolcreatedb AND pg_has_role(d.datdba, 'MEMBER'))"
            " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = $1",
            target.name,
        )
        try:
            data_directory = await connection.fetchval("SELECT current_setting('data_directory')")
        except asyncpg.InsufficientPrivilegeError:
            data_directory = None
    finally:
        await connection.close()
    if not allowed:
        reason = "the database user may not create and rename databases (needs CREATEDB + owner)"
        return Room(False, reason, live, None)
    need = int(live * headroom) + (64 << 20)
    visible = bool(data_directory) and await asyncio.to_thread(Path(data_directory).exists)
    if visible:
        free = (await asyncio.to_thread(shutil.disk_usage, data_directory)).free
        if free < need:
            return Room(
                False,
                f"the server has {free / 1e9:.2f} GB free, a second copy needs {need / 1e9:.2f} GB",
                live,
                free,
            )
        return Room(True, f"{free / 1e9:.1f} GB free for a {live / 1e9:.2f} GB copy", live, free)
    return Room(True, "server free space not visible from here; trying the swap", live, None)


async def drop_database(target: DatabaseTarget, name: str) -> None:
    connection = await maintenance(target)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"Cannot drop database {name}", str(error)) from error
    finally:
        await connection.close()


def _locale_columns(version: int) -> str:
    """The locale provider and its locale, as this server version names them."""
    columns = []
    if version >= 15:
        columns.append("d.datlocprovider::text AS provider")
        columns.append(("d.datlocale" if version >= 17 else "d.daticulocale") + " AS locale")
    if version >= 16:
        columns.append("d.daticurules AS icu_rules")
    return "".join(", " + c for c in columns)


async def _create_like(connection: asyncpg.Connection, live: str, staging: str) -> None:
    """An empty database with the live one's owner, encoding, locale (provider, collation,
    ICU locale and rules), tablespace and connection limit."""
    version = connection.get_server_version().major
    row = await connection.fetchrow(
        "SELECT pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding,"
        " d.datcollate, d.datctype, d.datconnlimit, t.spcname AS tablespace"
        f"{_locale_columns(version)} FROM pg_database d"
        " JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1",
        live,
    )
    if row is None:
        raise DatabaseError(f"Database {live} does not exist")
    options = [
        f"OWNER {_ident(row['owner'])}",
        f"ENCODING {_literal(row['encoding'])}",
        f"LC_COLLATE {_literal(row['datcollate'])}",
        f"LC_CTYPE {_literal(row['datctype'])}",
        f"CONNECTION LIMIT {int(row['datconnlimit'])}",
    ]
    if row["tablespace"] != "pg_default":
        options.append(f"TABLESPACE {_ident(row['tablespace'])}")
    provider, locale = row.get("provider"), row.get("locale")
    if provider == "i":
        options.append(f"LOCALE_PROVIDER icu ICU_LOCALE {_literal(locale or '')}")
        if row.get("icu_rules"):
            options.append(f"ICU_RULES {_literal(row['icu_rules'])}")
    elif provider == "b":
        options.append(f"LOCALE_PROVIDER builtin BUILTIN_LOCALE {_literal(locale or '')}")
    elif provider == "c":
        options.append("LOCALE_PROVIDER libc")
    await connection.execute(
        f"CREATE DATABASE {_ident(staging)} WITH TEMPLATE template0 " + " ".join(options)
    )


_GRANTS = (
    "SELECT pg_get_userbyid(a.grantor) AS grantor, a.grantee,"
    " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee_name,"
    " a.privilege_type, a.is_grantable"
    " FROM pg_database d, aclexplode(d.datacl) WITH ORDINALITY a WHERE d.datname = $1"
    " ORDER BY a.ordinality"
)


async def _copy_grants(connection: asyncpg.Connection, live: str, staging: str) -> None:
    """The live database's GRANTs, each made by its own grantor: the owner's first, then
    those a grantee with GRANT OPTION made (as that role), in their original order."""
    owner = await connection.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", live
    )
    target = _ident(staging)
    await connection.execute(f"REVOKE ALL ON DATABASE {target} FROM PUBLIC")
    await connection.execute(f"REVOKE ALL ON DATABASE {target} FROM {_ident(owner)}")
    grants = await connection.fetch(_GRANTS, live)
    for grant in sorted(grants, key=lambda g: g["grantor"] != owner):  # stable: keeps order
        grantee = "PUBLIC" if grant["grantee"] == 0 else _ident(grant["grantee_name"])
        option = " WITH GRANT OPTION" if grant["is_grantable"] else ""
        statement = f"GRANT {grant['privilege_type']} ON DATABASE {target} TO {grantee}{option}"
        if grant["grantor"] == owner:
            await connection.execute(statement)
            continue
        # GRANTED BY must name the current user: the grant is made as its grantor.
        await connection.execute(f"SET ROLE {_ident(grant['grantor'])}")
        try:
            await connection.execute(statement)
        finally:
            await connection.execute("RESET ROLE")
    before = {tuple(g) for g in grants}
    after = {tuple(g) for g in await connection.fetch(_GRANTS, staging)}
    if before != after:
        raise DatabaseError(
            "The staging database's privileges could not be made equal to the live one's",
            f"{len(before ^ after)} grant(s) differ (grantor or grant option)",
        )


async def copy_database_properties(connection: asyncpg.Connection, live: str, staging: str) -> None:
    """GRANTs (with their grantors), `ALTER DATABASE … SET` settings and the comment: a
    dump without the database entry does not carry them, and the swap must not lose them."""
    source = await connection.fetchrow(
        "SELECT oid, datacl IS NULL AS default_acl,"
        " shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1",
        live,
    )
    assert source is not None
    target = _ident(staging)
    try:
        if not source["default_acl"]:
            await _copy_grants(connection, live, staging)
    except asyncpg.PostgresError as error:
        raise DatabaseError("Cannot copy the live database's privileges", str(error)) from error
    statements: list[str] = []
    settings = await connection.fetch(
        "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END AS role,"
        " setconfig FROM pg_db_role_setting WHERE setdatabase = $1",
        source["oid"],
    )
    for setting in settings:
        scope = f"ROLE {_ident(setting['role'])} IN " if setting["role"] else ""
        for item in setting["setconfig"]:
            name, _, value = item.partition("=")
            if name in _LIST_SETTINGS:
                values = ", ".join(_literal(v) for v in _split_guc_list(value))
            else:
                values = _literal(value)
            statements.append(f"ALTER {scope}DATABASE {target} SET {_ident(name)} TO {values}")
    if source["comment"] is not None:
        statements.append(f"COMMENT ON DATABASE {target} IS {_literal(source['comment'])}")
    for statement in statements:
        await connection.execute(statement)


async def restore_into_staging(
    target: DatabaseTarget,
    backup: Backup,
    names: SwapNames,
    *,
    jobs: int,
    entries: int,
    progress: Progress,
) -> None:
    """Create the staging database like the live one and restore the backup into it."""
    connection = await maintenance(target)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_ident(names.staging)} WITH (FORCE)")
        await _create_like(connection, names.live, names.staging)
    except asyncpg.PostgresError as error:
        raise DatabaseError("Cannot create the staging database", str(error)) from error
    finally:
        await connection.close()
    env = {**target.libpq_env, "PGDATABASE": names.staging}
    argv = [
        target.tools.pg_restore,
        f"--dbname={names.staging}",
        f"--jobs={jobs}",
        "--exit-on-error",
        "--verbose",  # one line per item: the progress shown while approvers read
        str(backup.path),
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    errors: deque[str] = deque(maxlen=200)  # the last lines that are not progress
    done = 0
    last_report = 0.0
    limit = target.timeouts.restore_seconds
    try:
        assert process.stderr is not None
        async with asyncio.timeout(limit):
            while line := await process.stderr.readline():
                text = line.decode(errors="replace").rstrip()
                if text.startswith("pg_restore: processing item") or text.startswith(
                    "pg_restore: finished item"
                ):
                    done += 1
                    now = time.monotonic()
                    if now - last_report >= 1.0:
                        last_report = now
                        share = min(100, round(100 * done / max(entries, 1)))
                        await progress(f"restoring into the staging database: {share}%")
                elif not text.startswith("pg_restore: "):
                    errors.append(text)  # a server message's DETAIL/CONTEXT lines, COPY data
                elif "error" in text.lower():
                    errors.append(text)
            returncode = await process.wait()
    except BaseException as error:
        await processes.kill(process)
        await asyncio.shield(drop_database(target, names.staging))
        if isinstance(error, TimeoutError):
            raise DeadlineExceeded(
                f"restoring {backup.name} into the staging database",
                limit,
                "pg_restore was killed",
            ) from None
        raise
    if returncode != 0:
        await drop_database(target, names.staging)
        said = "\n".join(errors)
        log.warning("restore into %s failed: %s", names.staging, scrub(said, target.url))
        raise DatabaseError(
            f"Restore of {backup.name} into the staging database failed",
            error_headline(said) or f"pg_restore exited with {returncode}",
        )
    try:
        await progress("refreshing planner statistics on the staging database")
        await database.analyze(target.on(names.staging))
        connection = await maintenance(target)
        try:
            await copy_database_properties(connection, names.live, names.staging)
        finally:
            await connection.close()
    except BaseException:
        await asyncio.shield(drop_database(target, names.staging))
        raise


@dataclass(frozen=True)
class PreviewLimits:
    """How much the data-loss preview may read: tables are counted exactly, smallest first,
    while their total size stays under `exact_bytes`; the others are estimated from the
    planner's statistics. The whole preview ends within `timeout_seconds`."""

    exact_bytes: int = 256 << 20
    timeout_seconds: float = 15.0


@dataclass(frozen=True)
class RowCount:
    rows: int
    estimated: bool


# Sizes from the catalogue (relpages), which takes no lock: a table locked by a migration
# must not hold up the preview.
_TABLE_SIZES = r"""
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       current_setting('block_size')::bigint * CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(k.relpages), 0)
                  FROM pg_partition_tree(c.oid) t JOIN pg_class k ON k.oid = t.relid)
            ELSE c.relpages END AS bytes,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(greatest(k.reltuples, 0)), 0)
                  FROM pg_partition_tree(c.oid) t JOIN pg_class k ON k.oid = t.relid)
            ELSE c.reltuples END AS reltuples,
       coalesce(s.n_live_tup, 0) AS live_tuples
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname <> 'information_schema'
"""


async def _row_counts(target: DatabaseTarget, limits: PreviewLimits) -> dict[str, RowCount]:
    """Rows per table: exact for the small tables within the budget and the time left,
    `pg_class.reltuples` (or the statistics' live tuples, never analyzed) for the rest."""
    deadline = time.monotonic() + limits.timeout_seconds
    connection = await database.connect(target)
    try:
        await connection.execute(f"SET statement_timeout = {int(limits.timeout_seconds * 1000)}")
        await connection.execute("SET lock_timeout = 2000")
        tables = await connection.fetch(_TABLE_SIZES)
        counts: dict[str, RowCount] = {}
        budget = limits.exact_bytes
        for table in sorted(tables, key=lambda t: (t["bytes"], t["name"])):
            estimate = float(table["reltuples"])
            estimated = RowCount(
                int(estimate) if estimate >= 0 else int(table["live_tuples"]), True
            )
            left = deadline - time.monotonic()
            if table["bytes"] > budget or left <= 0.05:
                counts[table["name"]] = estimated
                continue
            budget -= table["bytes"]
            await connection.execute(f"SET statement_timeout = {max(int(left * 1000), 1)}")
            try:
                rows = await connection.fetchval(f"SELECT count(*) FROM {table['name']}")
                counts[table["name"]] = RowCount(int(rows), False)
            except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError):
                counts[table["name"]] = estimated  # out of time: the rest is estimated
        return counts
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"Cannot count the rows of {target.name}", str(error)) from error
    finally:
        await connection.close()


async def preview_data_loss(
    target: DatabaseTarget, names: SwapNames, limits: PreviewLimits = PreviewLimits()
) -> list[TableLoss]:
    """Per table: rows in the live database against rows in the backup (staging)."""
    live, staged = await asyncio.gather(
        _row_counts(target, limits), _row_counts(target.on(names.staging), limits)
    )
    missing = RowCount(0, False)
    return [
        TableLoss(
            table,
            live.get(table, missing).rows,
            staged.get(table, missing).rows,
            live.get(table, missing).estimated or staged.get(table, missing).estimated,
        )
        for table in sorted(set(live) | set(staged))
    ]


async def _end_sessions(connection: asyncpg.Connection, databases: list[str]) -> int:
    """Terminate the sessions on these databases and wait until they are gone."""
    await connection.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()",
        databases,
    )
    deadline = time.monotonic() + 1.5
    while True:
        left = int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1::text[])"
                " AND pid <> pg_backend_pid()",
                databases,
            )
        )
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.02)


async def _rename_pair(
    connection: asyncpg.Connection, first: tuple[str, str], second: tuple[str, str]
) -> None:
    async with connection.transaction():
        await connection.execute(f"ALTER DATABASE {_ident(first[0])} RENAME TO {_ident(first[1])}")
        await connection.execute(
            f"ALTER DATABASE {_ident(second[0])} RENAME TO {_ident(second[1])}"
        )


async def _swap_names(
    target: DatabaseTarget, *, live: str, incoming: str, aside: str, refused: str
) -> float:
    """Refuse new connections to `live`, end the sessions on both, and in one transaction
    rename `live` to `aside` and `incoming` to `live`. Returns the seconds it took.

    On failure nothing is renamed and `live` accepts connections again.
    """
    connection = await maintenance(target)
    began = time.monotonic()
    try:
        await _bound_locks(connection, target.timeouts.lock_seconds)
        await connection.execute(f"ALTER DATABASE {_ident(live)} WITH ALLOW_CONNECTIONS false")
        try:
            for attempt in range(3):
                await _end_sessions(connection, [live, incoming])
                try:
                    await _rename_pair(connection, (live, aside), (incoming, live))
                    break
                except asyncpg.ObjectInUseError:
                    if attempt == 2:
                        raise
        except BaseException:
            await connection.execute(f"ALTER DATABASE {_ident(live)} WITH ALLOW_CONNECTIONS true")
            raise
        seconds = time.monotonic() - began
        # Applications connect by the live name; the one set aside is open for its dump.
        await connection.execute(f"ALTER DATABASE {_ident(aside)} WITH ALLOW_CONNECTIONS true")
        return seconds
    except asyncpg.LockNotAvailableError as error:
        raise DatabaseError(
            refused,
            f"another session holds a lock on database {live} or {incoming} "
            f"(waited {target.timeouts.lock_seconds:g} s; see pg_locks); "
            f"{live} accepts connections again",
        ) from error
    except asyncpg.PostgresError as error:
        raise DatabaseError(refused, str(error)) from error
    finally:
        await connection.close()


async def _bound_locks(connection: asyncpg.Connection, seconds: float) -> None:
    """The rename waits for no lock longer than `seconds`: with the application stopped, a
    session holding a lock on the database fails the cut-over fast instead of stalling it."""
    milliseconds = max(1, round(seconds * 1000))
    await connection.execute(f"SET lock_timeout = {milliseconds}")
    await connection.execute(f"SET statement_timeout = {milliseconds * 4}")


async def cut_over(target: DatabaseTarget, names: SwapNames) -> float:
    """The rolled-back database goes live; the pre-rollback one is kept as `names.old`."""
    return await _swap_names(
        target,
        live=names.live,
        incoming=names.staging,
        aside=names.old,
        refused="The cut-over was refused; nothing was renamed",
    )


async def swap_back(target: DatabaseTarget, names: SwapNames, aside: str) -> float:
    """Undo: the current live database goes to `aside`, the old one back to the live name."""
    return await _swap_names(
        target,
        live=names.live,
        incoming=names.old,
        aside=aside,
        refused="The undo swap was refused; nothing was renamed",
    )


async def derived_databases(target: DatabaseTarget) -> list[tuple[str, DerivedKind, str]]:
    """(database, kind, run id) of every database the bot derived from this one."""
    connection = await maintenance(target)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE strpos(datname, $1) > 0", _TAG
        )
    finally:
        await connection.close()
    found = []
    for row in rows:
        parsed = parse_derived(row["datname"])
        if parsed is not None and derived_from(target.name, row["datname"]):
            found.append((row["datname"], *parsed))
    return sorted(found)


async def staging_databases(target: DatabaseTarget) -> list[tuple[str, str]]:
    """(database, run id) of every staging database of this environment's database."""
    return [
        (name, run_id)
        for name, kind, run_id in await derived_databases(target)
        if kind is DerivedKind.STAGING
    ]


async def allow_connections(target: DatabaseTarget, name: str) -> bool:
    """Let connections to `name` in again if a cut-over left them refused; True if it had."""
    connection = await maintenance(target)
    try:
        allowed = await connection.fetchval(
            "SELECT datallowconn FROM pg_database WHERE datname = $1", name
        )
        if allowed is False:
            await connection.execute(f"ALTER DATABASE {_ident(name)} WITH ALLOW_CONNECTIONS true")
            return True
        return False
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"Cannot allow connections to {name}", str(error)) from error
    finally:
        await connection.close()


async def database_exists(target: DatabaseTarget, name: str) -> bool:
    connection = await maintenance(target)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()
