"""Backups that know where they came from (issue 9): sidecars beside the dumps the bot
writes, schema versions read from real migration tables, tolerant reading."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from sandbox.demo import execute_sql
from services import backups as catalogue
from services.backup_now import take_backup
from services.database import DatabaseTarget
from services.environments import Environment, MigrationsTable, Strategy
from services.errors import BackupError, GitError, ProvenanceError
from services.events import Step, StepEvent
from services.pgtools import PgTools
from services.provenance import (
    Check,
    CommitAnswer,
    Provenance,
    SidecarStatus,
    ask_deployed_commit,
    list_with_provenance,
    load_sidecar,
    read_provenance,
    schema_mismatch,
    sidecar_path,
)
from services.schema_version import SchemaVersion, read_schema_version
from services.swap import derived_from
from services.workflow import plan_rollback, rollback_database
from tests.conftest import FreshDatabase, Stage
from tests.services.test_backups import environment

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Steps:
    def __init__(self) -> None:
        self.finished: dict[Step, str] = {}

    async def __call__(self, event: StepEvent) -> None:
        if event.kind.value == "step_finished":
            self.finished[event.step] = event.message


@dataclass
class Migrated:
    stage: Stage
    steps: Steps  # the listener to run it with
    asked: list[set[Step]]  # the steps finished each time the deployed commit was asked


@pytest.fixture
async def migrated(stage: Stage) -> AsyncIterator[Migrated]:
    """The stage after a deployment that migrated (alembic) and a hook that says its commit,
    noting which steps had finished when it was asked."""
    await execute_sql(
        stage.dsn,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
        "INSERT INTO alembic_version VALUES ('ae1027a6acf');",
    )
    steps, asked = Steps(), []

    async def deployed_commit(environment: Environment) -> str:
        asked.append(set(steps.finished))
        return COMMIT

    staged = stage.with_environment(migrations_table=MigrationsTable(kind="alembic_version"))
    services = replace(staged.services, deployed_commit=deployed_commit)
    yield Migrated(replace(staged, services=services), steps, asked)
    for name in await _databases(stage):  # a swap's old database
        if derived_from(stage.database.name, name):
            await execute_sql(stage.dsn, f'DROP DATABASE "{name}"')


async def _databases(stage: Stage) -> list[str]:
    connection = await asyncpg.connect(stage.dsn)
    try:
        return [r[0] for r in await connection.fetch("SELECT datname FROM pg_database")]
    finally:
        await connection.close()


async def test_in_place_safety_backup_records_its_sha256_commit_and_schema(
    migrated: Migrated,
) -> None:
    stage = migrated.stage
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    result = await rollback_database(
        stage.services, plan, requested_by="U0ALICE", listener=migrated.steps
    )
    assert result.ok, result.error
    assert result.safety_backup is not None
    known = read_provenance(result.safety_backup.path)
    assert known is not None
    assert (known.kind.value, known.created_by, known.run_id) == (
        "safety",
        "U0ALICE",
        result.run_id,
    )
    assert known.sha256 == sha256(result.safety_backup.path)
    assert known.size_bytes == result.safety_backup.path.stat().st_size
    assert (known.deployed_commit, known.schema_version) == (COMMIT, "ae1027a6acf")
    assert known.migrations_table == "alembic_version"
    # Asked before the stop ended, alongside it: a version endpoint answers only then.
    assert migrated.asked == [set()]
    # The restored backup predates the migration: its data has no such table.
    assert await _schema(stage) is None


async def _schema(stage: Stage) -> str | None:
    config = stage.environment.migrations_table
    assert config is not None
    return (
        await read_schema_version(DatabaseTarget(stage.dsn, stage.services.tools), config)
    ).version


async def test_swap_old_database_dump_records_the_old_schema(migrated: Migrated) -> None:
    stage = migrated.stage.with_environment(strategy=Strategy.SWAP)
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    assert plan.strategy is Strategy.SWAP, plan.strategy_note
    steps = Steps()
    result = await rollback_database(stage.services, plan, requested_by="tester", listener=steps)
    assert result.ok, result.error
    assert result.safety_backup is not None and result.old_database
    known = read_provenance(result.safety_backup.path)
    assert known is not None, steps.finished[Step.ARCHIVE_OLD]
    assert known.kind.value == "old-database"
    assert known.sha256 == sha256(result.safety_backup.path)
    assert (known.schema_version, known.deployed_commit) == ("ae1027a6acf", COMMIT)
    assert known.database == result.old_database


async def test_a_sidecar_that_cannot_be_written_is_a_note_not_a_failure(stage: Stage) -> None:
    plan = await plan_rollback(stage.services, stage.environment.name, None)
    sidecar_path(plan.safety_backup).mkdir()  # os.replace cannot put a file there
    steps = Steps()
    result = await rollback_database(stage.services, plan, requested_by="tester", listener=steps)
    assert result.ok, result.error
    assert "no provenance sidecar" in steps.finished[Step.SAFETY_BACKUP]
    assert result.safety_backup is not None and result.safety_backup.path.is_file()


async def test_a_deployed_commit_that_cannot_be_known_is_a_note(stage: Stage) -> None:
    async def unreachable(environment: Environment) -> str:
        raise GitError("the remote does not answer")

    async def garbage(environment: Environment) -> str:
        return "main; rm -rf /"

    for hook, note in (
        (None, "no way to know it is configured"),
        (unreachable, "the remote does not answer"),
        (garbage, "the answer was not a commit id"),
    ):
        services = replace(stage.services, deployed_commit=hook)
        answer = await ask_deployed_commit(services, stage.environment)
        assert answer == CommitAnswer(None, (f"deployed commit unknown: {note}",))


MIGRATION_TABLES = """
CREATE SCHEMA app;
CREATE TABLE app.alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO app.alembic_version VALUES ('b2c4'), ('a1f3');
CREATE TABLE django_migrations (
  id bigserial PRIMARY KEY, app varchar(255), name varchar(255), applied timestamptz);
INSERT INTO django_migrations (app, name, applied) VALUES
  ('shop', '0006_carts', '2024-03-01'), ('shop', '0007_orders', '2024-03-01'),
  ('auth', '0012_alter_user', '2024-01-02');  -- same time: the later id is the later one
CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('9'), ('20240301120000'), ('20231231235959');
CREATE TABLE flyway_schema_history (
  installed_rank int PRIMARY KEY, version varchar(50), description varchar(200),
  type varchar(20), script varchar(1000), checksum int, installed_by varchar(100),
  installed_on timestamp DEFAULT now(), execution_time int, success boolean);
INSERT INTO flyway_schema_history VALUES
  (1, '1', 'init', 'SQL', 'V1__init.sql', 1, 'app', now(), 5, true),
  (2, '2.1', 'orders', 'SQL', 'V2_1__orders.sql', 2, 'app', now(), 5, true),
  (3, NULL, 'views', 'SQL', 'R__views.sql', 3, 'app', now(), 5, true),
  (4, '3', 'broken', 'SQL', 'V3__broken.sql', 4, 'app', now(), 5, false);
CREATE TABLE odd (x int);
"""


async def test_each_kind_of_migrations_table_is_read_from_real_tables(
    fresh_db: FreshDatabase, tools: PgTools
) -> None:
    await execute_sql(fresh_db.dsn, MIGRATION_TABLES)
    target = DatabaseTarget(fresh_db.dsn, tools)

    async def read(kind: str, table: str | None = None) -> SchemaVersion:
        return await read_schema_version(target, MigrationsTable(kind=kind, table=table))

    alembic = await read("alembic_version", "App.Alembic_Version")  # folded, like SQL
    assert (alembic.version, alembic.table) == ("a1f3+b2c4", "app.alembic_version")
    assert (await read("django_migrations")).version == "shop.0007_orders"
    assert (await read("schema_migrations")).version == "20240301120000"
    assert (await read("flyway_schema_history")).version == "2.1"  # 3 failed, R has none
    absent = await read("alembic_version")  # not in the search path
    assert (absent.version, absent.note) == (None, "no table alembic_version")
    assert (await read("alembic_version", "nowhere.alembic_version")).version is None
    odd = await read("flyway_schema_history", "odd")
    assert odd.version is None and "could not be read" in odd.note


def _provenance(path: Path, **changes: object) -> Provenance:
    fields: dict[str, object] = {
        "backup": path.name,
        "kind": "manual",
        "created_at": "2024-12-03T12:00:00+00:00",
        "created_by": "ops@host (command line)",
        "environment": "production",
        "database": "app",
        "sha256": sha256(path),
        "size_bytes": path.stat().st_size,
    }
    return Provenance.model_validate({**fields, **changes})


async def test_missing_and_malformed_sidecars_are_told_apart_and_never_listed(
    tmp_path: Path,
) -> None:
    names = [
        "a-20241203-120000.dump",
        "b-20241202-120000.dump",
        "c-20241201-120000.dump",
        "d-20241130-120000.dump",
        "e-20241129-120000.dump",
        "f-20241128-120000.dump",
    ]
    paths = [tmp_path / name for name in names]
    for index, path in enumerate(paths):
        path.write_bytes(b"PGDMP" + bytes([index]) * 100)
    good, _none, garbage, bad_sha, link, changed = paths
    sidecar_path(good).write_text(_provenance(good).model_dump_json())
    sidecar_path(garbage).write_bytes(b"\xff{not json")
    fields = _provenance(bad_sha).model_dump(mode="json")
    sidecar_path(bad_sha).write_text(json.dumps({**fields, "sha256": "nope"}))
    os.symlink(sidecar_path(good), sidecar_path(link))
    sidecar_path(changed).write_text(_provenance(changed).model_dump_json())
    changed.write_bytes(b"PGDMP" + b"\x09" * 100)  # same size, other bytes

    listed = await list_with_provenance(environment(tmp_path))
    assert [item.backup.name for item in listed] == names  # no sidecar is a backup
    by_name = {item.backup.name: item for item in listed}
    assert by_name[good.name].check is Check.VERIFIED
    assert by_name[changed.name].check is Check.CHANGED and by_name[changed.name].suspect
    assert by_name[_none.name].sidecar.status is SidecarStatus.MISSING
    assert by_name[_none.name].facts() == []
    for path, problem in (
        (garbage, "Invalid JSON"),
        (bad_sha, "sha256: String should match pattern"),
        (link, "a symbolic link"),
    ):
        assert by_name[path.name].sidecar.status is SidecarStatus.MALFORMED
        assert problem in (by_name[path.name].problem or "")
        assert read_provenance(path) is None
    # Past the hashing budget the size is still compared.
    unhashed = {
        i.backup.name: i.check
        for i in await list_with_provenance(environment(tmp_path), verify_bytes=0)
    }
    assert (unhashed[good.name], unhashed[changed.name]) == (Check.UNCHECKED, Check.UNCHECKED)
    # A sidecar or an unfinished dump named as the backup is refused, not restored.
    (tmp_path / ".g.dump.partial").write_bytes(b"PGDMP")
    for name in (sidecar_path(good).name, ".g.dump.partial"):
        with pytest.raises(BackupError, match=r"sidecar|unfinished"):
            await catalogue.resolve_backup(environment(tmp_path), name)
    assert load_sidecar(tmp_path / "nothing.dump").status is SidecarStatus.MISSING
    assert json.loads(sidecar_path(good).read_text())["sha256"] == sha256(good)


def test_schema_mismatch_warns_only_when_both_versions_are_known_and_differ(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP")
    backup = _provenance(dump, schema_version="0041", migrations_kind="alembic_version")
    live = SchemaVersion("0042", "alembic_version", MigrationsTable(kind="alembic_version").kind)
    warning = schema_mismatch(backup, live, other_label="the code deployed now")
    assert warning == (
        "schema mismatch: x.dump is at schema version 0041, the code deployed now at 0042; "
        "the application may fail on this data"
    )
    assert schema_mismatch(backup, "0041") is None
    assert schema_mismatch(backup, _provenance(dump)) is None  # the other's is unknown
    assert schema_mismatch(None, "0042") is None


async def test_the_backup_command_fails_clearly_when_its_sidecar_cannot_be_written(
    stage: Stage,
) -> None:
    folder = stage.environment.backups_dir
    now = datetime.now(UTC)
    for second in range(-2, 60):  # whichever second the dump is named after
        name = f"manual-{now + timedelta(seconds=second):%Y%m%d-%H%M%S}.dump"
        sidecar_path(folder / name).mkdir()
    with pytest.raises(ProvenanceError, match="complete and readable, without provenance"):
        await take_backup(stage.services, stage.environment.name, label=None, requested_by="ops")
    (dump,) = [p for p in folder.glob("manual-*.dump") if p.is_file()]
    assert read_provenance(dump) is None
    assert [b.name for b in await catalogue.list_backups(stage.environment)] == [
        dump.name,
        stage.backup.name,
    ]
