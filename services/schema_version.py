"""Which schema migration a database is at, read from its migration tool's table.

One read-only query per kind of table (configured per environment, `migrations_table`):

- alembic_version: its `version_num` (several heads of a branched history joined by `+`);
- django_migrations: the last applied `app.name`, by `applied` then `id`;
- schema_migrations (Rails, golang-migrate): the highest `version`, compared as numbers;
- flyway_schema_history: the `version` of the last successful versioned migration, by
  `installed_rank` (repeatable migrations have none).

A database without the table has no version (None, with a note), which is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services import database
from services.database import DatabaseTarget
from services.environments import MigrationsKind, MigrationsTable

# `{table}` is PostgreSQL's own rendering of the table's regclass: quoted where needed.
_QUERIES = {
    MigrationsKind.ALEMBIC: (
        "SELECT string_agg(version_num::text, '+' ORDER BY version_num) FROM {table}"
    ),
    MigrationsKind.DJANGO: (
        "SELECT app || '.' || name FROM {table} ORDER BY applied DESC, id DESC LIMIT 1"
    ),
    MigrationsKind.RAILS: (
        "SELECT version::text FROM {table} "
        "ORDER BY length(version::text) DESC, version::text DESC LIMIT 1"
    ),
    MigrationsKind.FLYWAY: (
        "SELECT version FROM {table} WHERE success AND version IS NOT NULL "
        "ORDER BY installed_rank DESC LIMIT 1"
    ),
}
MAX_VERSION_CHARS = 200


@dataclass(frozen=True)
class SchemaVersion:
    version: str | None
    table: str  # as PostgreSQL names it, or as configured when it is not there
    kind: MigrationsKind
    note: str = ""  # why there is no version

    def describe(self) -> str:
        return self.version if self.version is not None else f"unknown ({self.note})"


async def read_schema_version(target: DatabaseTarget, config: MigrationsTable) -> SchemaVersion:
    """The schema version of `target`'s database; DatabaseError if it cannot be reached."""
    kind, configured = config.kind, config.table_name
    connection = await database.connect(target)
    try:
        async with connection.transaction(readonly=True):
            table = await connection.fetchval("SELECT to_regclass($1)::text", configured)
            if table is None:
                return SchemaVersion(None, configured, kind, f"no table {configured}")
            value = await connection.fetchval(_QUERIES[kind].format(table=table))
    except asyncpg.PostgresError as error:  # a table of another shape, no privilege
        headline = str(error).splitlines()[0][:MAX_VERSION_CHARS]
        return SchemaVersion(None, configured, kind, f"{configured} could not be read: {headline}")
    finally:
        await connection.close()
    if value is None:
        return SchemaVersion(None, table, kind, f"no migration recorded in {table}")
    return SchemaVersion(str(value)[:MAX_VERSION_CHARS], table, kind)
