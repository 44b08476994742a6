"""The demo environment as the page's side panel shows it: containers, rows, backups."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
from aiodocker.exceptions import DockerError

from sandbox.demo_environment import PROJECT_LABEL, SERVICE_LABEL
from services.run_store import RunStatus, RunStore

JsonDict = dict[str, Any]
TIMEOUT = 3.0  # seconds for one look at Docker or PostgreSQL

# Exact row counts of every user table in one round trip.
_ROWS = """
SELECT n.nspname AS schema, c.relname AS name,
       (xpath('/row/c/text()', query_to_xml(
           format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, ''
       )))[1]::text::bigint AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2
LIMIT 50
"""


@dataclass
class EnvironmentPanel:
    """Reads the environment a demo rolls back, for people watching the page.

    ``busy`` says when a rollback is working on the database: the panel then keeps its last
    row counts rather than open a session the rollback would have to end.
    """

    docker: aiodocker.Docker
    compose_project: str
    database_url: str
    backups_dir: Path
    busy: Callable[[], Awaitable[bool]] | None = None

    def __post_init__(self) -> None:
        self._tables: list[JsonDict] = []

    async def read(self) -> JsonDict:
        containers, tables = await asyncio.gather(self._containers(), self._rows())
        return {
            "project": self.compose_project,
            "containers": containers,
            "tables": tables["tables"],
            "tables_note": tables["note"],
            "backups": await asyncio.to_thread(self._backups),
        }

    async def _containers(self) -> list[JsonDict]:
        filters = f'{{"label": ["{PROJECT_LABEL}={self.compose_project}"]}}'
        try:
            async with asyncio.timeout(TIMEOUT):
                found = await self.docker.containers.list(all=True, filters=filters)
        except (DockerError, TimeoutError) as error:
            return [{"name": "(Docker did not answer)", "service": "", "state": str(error)}]
        shown = []
        for container in found:
            # What the list call returned: no request per container.
            names = _field(container, "Names") or ["?"]
            shown.append(
                {
                    "name": str(names[0]).lstrip("/"),
                    "service": (_field(container, "Labels") or {}).get(SERVICE_LABEL, ""),
                    "state": _field(container, "State") or "",
                    "status": _field(container, "Status") or "",
                }
            )
        return sorted(shown, key=lambda c: str(c["name"]))

    async def _rows(self) -> JsonDict:
        if self.busy is not None and await self.busy():
            note = "a rollback is working on the database; rows as they were before it"
            return {"tables": self._tables, "note": note}
        try:
            async with asyncio.timeout(TIMEOUT):
                connection = await asyncpg.connect(self.database_url)
                try:
                    records = await connection.fetch(_ROWS)
                finally:
                    with contextlib.suppress(Exception):
                        await connection.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            return {
                "tables": self._tables,
                "note": f"database not readable: {type(error).__name__}",
            }
        self._tables = [{"name": f"{r['schema']}.{r['name']}", "rows": r["rows"]} for r in records]
        return {"tables": self._tables, "note": ""}

    def _backups(self) -> list[JsonDict]:
        try:
            files = sorted(p for p in self.backups_dir.iterdir() if p.is_file())
        except OSError:
            return []
        return [{"name": p.name, "bytes": p.stat().st_size} for p in files]


def rollback_running(store: RunStore, environment: str) -> Callable[[], Awaitable[bool]]:
    """For `busy`: whether a rollback of the environment is working on its database."""

    async def running() -> bool:
        run = await store.active_run(environment)
        return run is not None and run.status in (RunStatus.APPROVED, RunStatus.RUNNING)

    return running


def _field(container: aiodocker.containers.DockerContainer, key: str) -> Any:
    return container[key] if key in container else None  # noqa: SIM401 (it has no get)
