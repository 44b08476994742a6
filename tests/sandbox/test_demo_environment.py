from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import asyncpg
import pytest

from sandbox.demo_environment import (
    PROJECT_LABEL,
    DemoEnvironmentError,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    database_snapshot,
    find_busybox,
    remove_compose_project,
    schema_fingerprint,
    seed_demo_database,
    table_checksums,
)
from sandbox.throwaway_postgres import ThrowawayPostgres
from tests.conftest import FreshDatabase, MakeComposeProject


async def _project_containers(docker: aiodocker.Docker, project: str) -> list[dict[str, Any]]:
    containers = await docker.containers.list(
        all=True, filters=json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
    )
    return [await c.show() for c in containers]


async def _get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as response,
    ):
        return response.status, await response.text()


# -- image -----------------------------------------------------------------------------


async def test_demo_image_is_built_from_scratch_with_busybox(
    docker: aiodocker.Docker, demo_image: str
) -> None:
    image = await docker.images.inspect(demo_image)
    assert image["Size"] < 10_000_000  # just busybox and one file
    assert image["Config"]["Labels"]["rollback-sandbox.demo"] == "true"

    again = await build_demo_image(docker, demo_image)  # unchanged context: no rebuild
    assert again == demo_image
    assert (await docker.images.inspect(demo_image))["Id"] == image["Id"]


def test_missing_busybox_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(DemoEnvironmentError, match="apt-get install busybox-static"):
        find_busybox([tmp_path / "busybox"])


# -- Compose-style project -------------------------------------------------------------


async def test_project_with_web_and_workers(
    docker: aiodocker.Docker, make_compose_project: MakeComposeProject
) -> None:
    project = await make_compose_project(
        [
            ServiceSpec("web", "web"),
            ServiceSpec("worker", "worker"),
            ServiceSpec("mailer", "worker"),
        ]
    )
    name = project.project
    assert project.container_names == {
        "web": f"{name}-web-1",
        "worker": f"{name}-worker-1",
        "mailer": f"{name}-mailer-1",
    }
    assert list(project.web_urls) == ["web"]

    details = {c["Name"].lstrip("/"): c for c in await _project_containers(docker, name)}
    assert set(details) == set(project.container_names.values())
    for service, container_name in project.container_names.items():
        info = details[container_name]
        labels = info["Config"]["Labels"]
        assert labels["com.docker.compose.project"] == name
        assert labels["com.docker.compose.service"] == service
        assert labels["com.docker.compose.container-number"] == "1"
        assert labels["com.docker.compose.oneoff"] == "False"
        assert info["HostConfig"]["Init"] is True
        assert info["State"]["Running"] is True
        assert info["Id"] == project.container_ids[service]

    binding = details[f"{name}-web-1"]["HostConfig"]["PortBindings"]["8080/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    url = project.web_urls["web"]
    assert url == f"http://127.0.0.1:{binding['HostPort']}/health"
    assert await _get(url) == (200, "ok\n")

    # The rollback stops and starts containers: tini makes the stop quick, the URL stays.
    web = await docker.containers.get(project.container_ids["web"])
    started = time.monotonic()
    await web.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await _get(url)
    await web.start()
    for _ in range(100):
        try:
            assert await _get(url) == (200, "ok\n")
            break
        except aiohttp.ClientError:
            continue
    else:
        pytest.fail(f"{url} did not come back after start")

    await remove_compose_project(docker, name)
    assert await _project_containers(docker, name) == []
    await remove_compose_project(docker, name)  # idempotent


async def test_invalid_project_name_is_refused(docker: aiodocker.Docker, demo_image: str) -> None:
    with pytest.raises(ValueError, match="invalid Compose project name"):
        await create_compose_project(docker, "Bad Name", [ServiceSpec("w", "worker")], demo_image)


# -- demo database and checksums -------------------------------------------------------


async def test_seeded_databases_compare_equal_until_a_row_changes(
    pg: ThrowawayPostgres, fresh_db: FreshDatabase
) -> None:
    other = f"{fresh_db.name}_b"
    await pg.create_database(other)
    try:
        other_dsn = pg.superuser_dsn(other)
        await seed_demo_database(fresh_db.dsn, rows=50)
        await seed_demo_database(other_dsn, rows=50)

        checksums = await table_checksums(fresh_db.dsn)
        assert set(checksums) == {"public.customers", "public.orders"}
        assert checksums["public.orders"].startswith("50:")
        assert await database_snapshot(fresh_db.dsn) == await database_snapshot(other_dsn)

        schema = await schema_fingerprint(fresh_db.dsn)
        for key in (
            "table public.customers",
            "table public.orders",
            "view public.customer_totals",
            "index public.orders_customer_id_idx",
            "constraint public.orders.orders_customer_id_fkey",
            "sequence public.orders_id_seq",
        ):
            assert key in schema, key
        assert "LAST_VALUE 50 IS_CALLED True" in schema["sequence public.orders_id_seq"]

        conn = await asyncpg.connect(other_dsn)
        try:
            await conn.execute("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 7")
            changed = await table_checksums(other_dsn)
            assert changed["public.orders"] != checksums["public.orders"]
            assert changed["public.customers"] == checksums["public.customers"]
            assert await schema_fingerprint(other_dsn) == schema

            await conn.execute("SELECT nextval('customers_id_seq')")
            assert await schema_fingerprint(other_dsn) != schema
        finally:
            await conn.close()
    finally:
        await pg.drop_database(other)


async def test_checksums_cover_every_user_schema(fresh_db: FreshDatabase) -> None:
    await seed_demo_database(fresh_db.dsn, rows=0)
    conn = await asyncpg.connect(fresh_db.dsn)
    try:
        await conn.execute(
            'CREATE SCHEMA "Audit"; CREATE TABLE "Audit".events (r int, note text);'
            "INSERT INTO \"Audit\".events VALUES (1, 'a'), (2, NULL)"
        )
        before = await table_checksums(fresh_db.dsn)
        assert before["public.customers"].startswith("0:")
        assert before["Audit.events"].startswith("2:")
        await conn.execute("""UPDATE "Audit".events SET note = 'b' WHERE r = 2""")
        assert (await table_checksums(fresh_db.dsn))["Audit.events"] != before["Audit.events"]
        assert "schema Audit" in await schema_fingerprint(fresh_db.dsn)
    finally:
        await conn.close()
