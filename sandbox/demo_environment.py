"""The demo's Compose-style environment (busybox containers, a seeded database), reused by tests."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiodocker
import aiohttp
import asyncpg
from aiodocker.exceptions import DockerError

DEMO_IMAGE_TAG = "rollback-bot-demo:latest"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
WEB_PORT = 8080
HEALTH_BODY = b"ok\n"

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
DEMO_LABEL = "rollback-sandbox.demo"
_CONTEXT_LABEL = "rollback-sandbox.demo-image.context-sha256"

_DOCKERFILE = b"""\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
"""
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PORT_RETRIES = 5


class DemoEnvironmentError(RuntimeError):
    """The demo image or Compose project could not be built or started."""


# -- image -----------------------------------------------------------------------------


def find_busybox(candidates: Sequence[Path] = BUSYBOX_CANDIDATES) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DemoEnvironmentError(
        "a static busybox binary is needed for the demo image and was not found at "
        + " or ".join(str(c) for c in candidates)
        + ": install it with `apt-get install busybox-static`"
    )


def _build_context(busybox: bytes) -> bytes:
    """An uncompressed, byte-for-byte reproducible tar of the build context."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", _DOCKERFILE, 0o644)
        add("busybox", busybox, 0o755)
        add("www", None, 0o755)
        add("www/health", HEALTH_BODY, 0o644)
    return buffer.getvalue()


async def build_demo_image(docker: aiodocker.Docker, tag: str = DEMO_IMAGE_TAG) -> str:
    """Build (or reuse, when its build context is unchanged) the busybox demo image; return tag."""
    busybox = await asyncio.to_thread(find_busybox().read_bytes)
    context = _build_context(busybox)
    digest = hashlib.sha256(context).hexdigest()
    try:
        existing = await docker.images.inspect(tag)
    except DockerError as exc:
        if exc.status != 404:
            raise
    else:
        labels = (existing.get("Config") or {}).get("Labels") or {}
        if labels.get(_CONTEXT_LABEL) == digest:
            return tag
    try:
        await docker.images.build(
            fileobj=io.BytesIO(gzip.compress(context, compresslevel=1, mtime=0)),
            encoding="gzip",
            tag=tag,
            labels={_CONTEXT_LABEL: digest, DEMO_LABEL: "true"},
        )
    except DockerError as exc:
        raise DemoEnvironmentError(f"building the demo image {tag} failed: {exc}") from exc
    return tag


# -- Compose-style project -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: Literal["web", "worker"]
    command: tuple[str, ...] | None = None  # overrides the kind's default command


@dataclass(frozen=True)
class ComposeProject:
    project: str
    services: tuple[ServiceSpec, ...]
    container_names: dict[str, str] = field(default_factory=dict)
    """service -> container name (``{project}-{service}-1``)"""
    container_ids: dict[str, str] = field(default_factory=dict)
    web_urls: dict[str, str] = field(default_factory=dict)
    """web service -> ``http://127.0.0.1:PORT/health``"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _container_config(
    project: str, service: ServiceSpec, image: str, host_port: int | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Image": image,
        "Labels": {
            PROJECT_LABEL: project,
            SERVICE_LABEL: service.name,
            NUMBER_LABEL: "1",
            ONEOFF_LABEL: "False",
            DEMO_LABEL: "true",
        },
        # tini as PID 1 forwards SIGTERM, so `docker stop` is quick.
        "HostConfig": {"Init": True},
    }
    if service.kind == "web":
        config["Cmd"] = ["/bin/busybox", "httpd", "-f", "-p", str(WEB_PORT), "-h", "/www"]
        config["ExposedPorts"] = {f"{WEB_PORT}/tcp": {}}
        # A fixed host port (not an ephemeral one) survives stop/start of the container.
        config["HostConfig"]["PortBindings"] = {
            f"{WEB_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]
        }
    else:
        config["Cmd"] = ["/bin/busybox", "sleep", "2147483647"]
    if service.command:
        config["Cmd"] = list(service.command)
    return config


async def _create_and_start(
    docker: aiodocker.Docker, project: str, service: ServiceSpec, image: str
) -> tuple[str, str, int | None]:
    name = f"{project}-{service.name}-1"
    for _ in range(_PORT_RETRIES):
        host_port = _free_port() if service.kind == "web" else None
        container = await docker.containers.create(
            _container_config(project, service, image, host_port), name=name
        )
        try:
            await container.start()
        except DockerError as exc:
            port_taken = "already allocated" in exc.message or "address already in use" in (
                exc.message.lower()
            )
            if service.kind == "web" and port_taken:
                await container.delete(force=True)
                continue
            raise
        return name, container.id, host_port
    raise DemoEnvironmentError(f"no free host port for {name} after {_PORT_RETRIES} attempts")


async def create_compose_project(
    docker: aiodocker.Docker,
    project: str,
    services: list[ServiceSpec],
    image: str,
    *,
    ready_timeout: float | None = 15.0,
) -> ComposeProject:
    """Create and start ``{project}-{service}-1`` containers labelled as Docker Compose does.

    With `ready_timeout` (seconds), also wait until every web health URL answers 200.
    """
    if not _PROJECT_NAME.match(project):
        raise ValueError(f"invalid Compose project name {project!r}: use [a-z0-9_-]")
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate service names in {names}")
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {
                s.name: group.create_task(_create_and_start(docker, project, s, image))
                for s in services
            }
    except BaseException:
        await remove_compose_project(docker, project)
        raise
    result = ComposeProject(project=project, services=tuple(services))
    for service in services:
        name, container_id, host_port = tasks[service.name].result()
        result.container_names[service.name] = name
        result.container_ids[service.name] = container_id
        if host_port is not None:
            result.web_urls[service.name] = f"http://127.0.0.1:{host_port}/health"
    if ready_timeout is not None and result.web_urls:
        try:
            await wait_for_web(list(result.web_urls.values()), timeout=ready_timeout)
        except BaseException:
            await remove_compose_project(docker, project)
            raise
    return result


async def wait_for_web(urls: list[str], *, timeout: float) -> None:
    """Poll each URL until it answers 200; raise DemoEnvironmentError at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for url in urls:
            last = "no answer"
            while True:
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                        last = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                if loop.time() >= deadline:
                    raise DemoEnvironmentError(
                        f"{url} did not answer 200 within {timeout:.0f} s (last: {last})"
                    )
                await asyncio.sleep(0.05)


async def remove_compose_project(docker: aiodocker.Docker, project: str) -> None:
    """Force-remove every container labelled with this Compose project (idempotent)."""
    containers = await docker.containers.list(
        all=True, filters=json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
    )

    async def remove(container: Any) -> None:
        try:
            await container.delete(force=True, v=True)
        except DockerError as exc:
            # 404: already gone; 409: removal already in progress elsewhere.
            if exc.status not in (404, 409):
                raise

    await asyncio.gather(*(remove(c) for c in containers))


# -- demo database ---------------------------------------------------------------------

_SCHEMA_SQL = """
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    status text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    note text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE VIEW customer_totals AS
    SELECT c.id, c.email, count(o.id) AS order_count,
           coalesce(sum(o.amount_cents), 0) AS total_cents
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
    GROUP BY c.id, c.email;
"""

_SEED_SQL = [
    """
    INSERT INTO customers (id, email, name, created_at)
    SELECT i, 'customer' || i || '@example.com', 'Customer ' || i,
           timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
    FROM generate_series(1, $1::bigint) AS i
    """,
    """
    INSERT INTO orders (id, customer_id, amount_cents, status, note, created_at)
    SELECT i, (i * 7) % $1::bigint + 1, (i * 7919) % 100000,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[i % 4 + 1], md5(i::text),
           timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
    FROM generate_series(1, $1::bigint) AS i
    """,
    "SELECT setval('customers_id_seq', greatest($1::bigint, 1), $1::bigint > 0)",
    "SELECT setval('orders_id_seq', greatest($1::bigint, 1), $1::bigint > 0)",
]


async def seed_demo_database(dsn: str, *, rows: int) -> None:
    """Create the demo app schema in an empty database: `rows` customers and `rows` orders.

    The data is a pure function of `rows`, so two seeded databases have equal checksums.
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_SCHEMA_SQL)
            for sql in _SEED_SQL:
                await conn.execute(sql, rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


_USER_SCHEMAS = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"


async def table_checksums(dsn: str) -> dict[str, str]:
    """``{"schema.table": "<rows>:<md5>"}`` for every table and materialized view in user schemas.

    The digest is order-independent (sums of per-row md5 halves), so it streams through
    big tables without sorting or building one huge string.
    """
    conn = await asyncpg.connect(dsn)
    try:
        relations = await conn.fetch(
            f"""
            SELECT n.nspname || '.' || c.relname AS name,
                   format('%I.%I', n.nspname, c.relname) AS quoted
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND {_USER_SCHEMAS}
            ORDER BY 1
            """
        )
        result: dict[str, str] = {}
        for relation in relations:
            row = await conn.fetchrow(
                f"""
                SELECT count(*) AS n,
                       coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0) AS a,
                       coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0) AS b
                FROM (SELECT md5(ROW(r.*)::text) AS h FROM {relation["quoted"]} AS r) AS s
                """
            )
            assert row is not None
            digest = hashlib.md5(
                f"{row['n']}:{row['a']}:{row['b']}".encode(), usedforsecurity=False
            ).hexdigest()
            result[relation["name"]] = f"{row['n']}:{digest}"
        return result
    finally:
        await conn.close()


async def schema_fingerprint(dsn: str, *, include_owners: bool = True) -> dict[str, str]:
    """``{"<kind> <qualified name>": definition}`` for user schemas: tables and columns,
    views, indexes, constraints, sequences (with their current values), functions,
    triggers and extensions; equal dicts mean the same schema.
    """
    conn = await asyncpg.connect(dsn)
    try:
        result: dict[str, str] = {}
        owner = "pg_get_userbyid(c.relowner)" if include_owners else "''"
        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || c.relname AS name, c.relkind::text, {owner} AS owner,
                   string_agg(
                       a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
                       || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text
                               ELSE '' END,
                       ', ' ORDER BY a.attnum) AS columns,
                   CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END
                       AS viewdef
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attribute a
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMAS}
            GROUP BY n.nspname, c.relname, c.relkind, c.oid, c.relowner
            """
        ):
            kind = {"r": "table", "p": "table", "v": "view", "m": "matview", "f": "foreign"}
            text = f"({row['columns'] or ''})"
            if row["viewdef"] is not None:
                text += f" AS {row['viewdef'].strip()}"
            if row["owner"]:
                text += f" OWNER {row['owner']}"
            result[f"{kind[row['relkind']]} {row['name']}"] = text

        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_namespace n ON n.oid = ic.relnamespace
            WHERE {_USER_SCHEMAS}
            """
        ):
            result[f"index {row['name']}"] = row["def"]

        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || c.relname || '.' || con.conname AS name,
                   pg_get_constraintdef(con.oid, true) AS def
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS}
            """
        ):
            result[f"constraint {row['name']}"] = row["def"]

        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || c.relname AS name,
                   format('%I.%I', n.nspname, c.relname) AS quoted, {owner} AS owner,
                   format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement,
                   s.seqmin, s.seqmax, s.seqcycle
            FROM pg_sequence s
            JOIN pg_class c ON c.oid = s.seqrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS}
            """
        ):
            state = await conn.fetchrow(f"SELECT last_value, is_called FROM {row['quoted']}")
            assert state is not None
            text = (
                f"{row['type']} START {row['seqstart']} INCREMENT {row['seqincrement']}"
                f" MIN {row['seqmin']} MAX {row['seqmax']} CYCLE {row['seqcycle']}"
                f" LAST_VALUE {state['last_value']} IS_CALLED {state['is_called']}"
            )
            if row["owner"]:
                text += f" OWNER {row['owner']}"
            result[f"sequence {row['name']}"] = text

        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || p.proname || '('
                       || pg_get_function_identity_arguments(p.oid) || ')' AS name,
                   pg_get_functiondef(p.oid) AS def
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.prokind IN ('f', 'p', 'w') AND {_USER_SCHEMAS}
              AND NOT EXISTS (SELECT FROM pg_depend dep
                              WHERE dep.objid = p.oid AND dep.deptype = 'e')
            """
        ):
            result[f"function {row['name']}"] = row["def"]

        for row in await conn.fetch(
            f"""
            SELECT n.nspname || '.' || c.relname || '.' || t.tgname AS name,
                   pg_get_triggerdef(t.oid, true) AS def
            FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT t.tgisinternal AND {_USER_SCHEMAS}
            """
        ):
            result[f"trigger {row['name']}"] = row["def"]

        for row in await conn.fetch(
            f"SELECT n.nspname AS name FROM pg_namespace n WHERE {_USER_SCHEMAS}"
        ):
            result[f"schema {row['name']}"] = ""

        for row in await conn.fetch("SELECT extname, extversion FROM pg_extension"):
            result[f"extension {row['extname']}"] = row["extversion"]
        return dict(sorted(result.items()))
    finally:
        await conn.close()


@dataclass(frozen=True)
class DatabaseSnapshot:
    """Schema and data of a database, comparable with ``==``."""

    checksums: dict[str, str]
    schema: dict[str, str]


async def database_snapshot(dsn: str, *, include_owners: bool = True) -> DatabaseSnapshot:
    return DatabaseSnapshot(
        checksums=await table_checksums(dsn),
        schema=await schema_fingerprint(dsn, include_owners=include_owners),
    )


__all__ = [
    "DEMO_IMAGE_TAG",
    "PROJECT_LABEL",
    "SERVICE_LABEL",
    "ComposeProject",
    "DatabaseSnapshot",
    "DemoEnvironmentError",
    "ServiceSpec",
    "build_demo_image",
    "create_compose_project",
    "database_snapshot",
    "find_busybox",
    "remove_compose_project",
    "schema_fingerprint",
    "seed_demo_database",
    "table_checksums",
    "wait_for_web",
]
