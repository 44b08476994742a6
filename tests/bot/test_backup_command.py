"""`rollback-bot backup ENV [label]` and the provenance `backups` shows (issue 9): a real
process, a real database, real files."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.throwaway_postgres import ThrowawayPostgres
from services import backups as catalogue
from services.errors import BackupError
from services.provenance import read_provenance, sidecar_path
from tests import hostile
from tests.bot.test_cli import (
    assert_one_clean_line,
    cli,
    files,
    hostile_config,
    spawn,
    store_env,
    write_config,
)
from tests.git_repos import BOB, Upstream
from tests.hostile import HOSTILE
from tests.services.conftest import Stage
from tests.services.test_provenance import sha256


def config_with_migrations(stage: Stage, folder: Path, **timeouts: float) -> Path:
    config = write_config(stage, folder)
    text = config.read_text().replace(
        'strategy = "in-place"\n', 'strategy = "in-place"\nmigrations_table = "alembic_version"\n'
    )
    if timeouts:
        section = f"[environments.{stage.environment.name}.timeouts]\n"
        text += section + "".join(f"{key} = {value}\n" for key, value in timeouts.items())
    config.write_text(text)
    return config


async def test_backup_writes_a_readable_dump_with_its_provenance_and_backups_shows_it(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    connection = await asyncpg.connect(stage.dsn)
    await connection.execute(
        "CREATE TABLE alembic_version (version_num varchar(32));"
        "INSERT INTO alembic_version VALUES ('3f2a')"
    )
    await connection.close()
    config = config_with_migrations(stage, tmp_path)
    env = stage.environment.name

    code, out, err = await cli(
        "--config", str(config), "backup", env, "pre-deployment", env=store_env(pg)
    )

    assert code == 0, err
    (path,) = [
        p
        for p in stage.environment.backups_dir.glob("pre-deployment-*.dump")
        if p != stage.backup.path
    ]
    assert re.fullmatch(r"pre-deployment-\d{8}-\d{6}\.dump", path.name)
    assert f"written: {path}" in out and "readable (pg_restore --list)" in out
    known = read_provenance(path)
    assert known is not None
    assert (known.kind, known.label, known.schema_version) == (
        "pre-deployment",
        "pre-deployment",
        "3f2a",
    )
    assert known.sha256 == sha256(path) and known.sha256 in out
    assert known.created_by.endswith("(command line)") and known.deployed_commit is None
    # Only the dump and its sidecar were added: no temporary file is left behind.
    assert sorted(p.name for p in stage.environment.backups_dir.iterdir()) == sorted(
        [stage.backup.name, path.name, sidecar_path(path).name]
    )

    code, out, _ = await cli("--config", str(config), "backups", env)
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith(path.name)]
    assert "[pre-deployment by " in line
    assert "commit ? · schema 3f2a · sha256 verified]" in line
    (plain,) = [line for line in out.splitlines() if line.startswith(stage.backup.name)]
    assert "[" not in plain  # no sidecar: listed as before


async def test_backup_records_the_commit_the_environment_runs(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    """With a git target, the sidecar names the deployed commit (here: the branch tip)."""
    upstream = Upstream(tmp_path / "upstream")
    upstream.commit({"app.py": "v1\n"}, "first")
    deployed = upstream.commit({"app.py": "v2\n"}, "second", BOB)
    config = write_config(stage, tmp_path)
    env = stage.environment.name
    config.write_text(
        config.read_text()
        + f'[environments.{env}.git]\nurl = "{upstream.url}"\n'
        + f'workdir = "{tmp_path / "clone"}"\n'
    )

    code, out, err = await cli("--config", str(config), "backup", env, env=store_env(pg))

    assert code == 0, err
    (path,) = stage.environment.backups_dir.glob("manual-*.dump")
    known = read_provenance(path)
    assert known is not None and known.deployed_commit == deployed
    code, out, _ = await cli("--config", str(config), "backups", env)
    assert f"commit {deployed[:7]}" in out


@settings(HOSTILE, max_examples=6)
@given(
    label=st.one_of(
        st.sampled_from(["../x", "a/b", ".hidden", "pre-rollback-20241203-120000", "x y"]),
        hostile.refused.filter(lambda n: "\x00" not in n and not n.startswith("-")),
    )
)
async def test_hostile_labels_are_refused_with_nothing_written(label: str, tmp_path: Path) -> None:
    config = hostile_config(tmp_path)
    before = files(tmp_path)
    code, out, err = await cli("--config", str(config), "backup", "production", label)
    touched = files(tmp_path) != before
    hostile.tried(touched)
    assert not touched
    assert_one_clean_line(code, out, err)
    assert "backup label" in err


async def test_a_backup_killed_mid_dump_leaves_nothing_the_catalogue_lists(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    # A lock on a table holds pg_dump after it has created its file: killed while writing.
    holder = await asyncpg.connect(stage.dsn)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    config = config_with_migrations(stage, tmp_path, lock_seconds=60)
    folder = stage.environment.backups_dir
    process = await spawn(
        "--config",
        str(config),
        "backup",
        stage.environment.name,
        "killed",
        env=store_env(pg),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await until(
            lambda: _pg_dumps(stage.dsn, "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'")
        )
        assert list(folder.glob(".killed-*.dump.partial"))  # its file, being written
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        await transaction.rollback()
        await holder.close()
    # The orphaned pg_dump finishes its file and exits; nothing renames it.
    await until(lambda: _pg_dumps(stage.dsn, "true", count=0))
    listed = await catalogue.list_backups(stage.environment)
    assert [b.name for b in listed] == [stage.backup.name]
    assert not list(folder.glob("killed*")) and not list(folder.glob("*.json"))
    (partial,) = folder.glob(".killed-*.dump.partial")
    with pytest.raises(BackupError, match="unfinished dump"):
        await catalogue.resolve_backup(stage.environment, partial.name)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def _pg_dumps(dsn: str, where: str, *, count: int | None = None) -> bool:
    """Are there pg_dump sessions (the bot's pg tools name themselves rollback-bot) on the
    database matching `where` (`count` of them)?"""
    connection = await asyncpg.connect(dsn)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rollback-bot'"
            f" AND datname = current_database() AND {where}"
        )
    finally:
        await connection.close()
    return bool(found) if count is None else found == count
