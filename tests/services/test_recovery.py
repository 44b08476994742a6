"""Issue 7: the bot SIGKILLed at each step of both strategies, then recovered.

A real `rollback-bot rollback --yes` process is killed (SIGKILL, its children left running
as they would be) the moment the run store shows it reached the step; then
`rollback-bot recover` (what cron, `serve` and every command run) takes the run over. Each
case asserts what a responder cares about: the data is exactly the old data or exactly the
backup (never a mix, never empty), every container runs, the environment is free, nothing
is left behind (staging databases, partial dumps, refused connections), and the last lines
printed say so. Resume and Abort then finish the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiodocker
import asyncpg
import pytest
from pydantic import SecretStr

from sandbox.demo_environment import DatabaseSnapshot, database_snapshot
from sandbox.throwaway_postgres import ThrowawayPostgres
from services import database, swap
from services.database import dump_database
from services.run_store import RunRecord, RunStatus
from tests.bot.test_cli import cli, store_env, write_config
from tests.services.conftest import Stage, change_after_backup, container_states

Predicate = Callable[[RunRecord, Stage], Awaitable[bool]]


async def grow_and_back_up(stage: Stage, rows: int = 250_000) -> None:
    """Make the steps take long enough to be caught (a restore of ~1 s), then take the
    backup the rollback will use (the newest)."""
    connection = await asyncpg.connect(stage.dsn)
    try:
        await connection.execute(
            "INSERT INTO orders (customer_id, amount_cents, status)"
            " SELECT 1 + g % 100, g, 'paid' FROM generate_series(1, $1) g",
            rows,
        )
    finally:
        await connection.close()
    await dump_database(
        stage.target(), stage.environment.backups_dir / "pre-deployment-20241205-120000.dump"
    )


@dataclass
class Killed:
    run: RunRecord
    before: DatabaseSnapshot  # the live data when the rollback began
    backup: DatabaseSnapshot  # the data in the backup


async def kill_during(
    stage: Stage,
    pg: ThrowawayPostgres,
    config: Path,
    reached: Predicate,
    command: str = "rollback",
    *,
    argv: list[str] | None = None,
) -> RunRecord:
    """Run `command` (rollback, undo) in its own process, or a bot process given by
    `argv`, and SIGKILL it once `reached` holds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *(argv or ["-m", "bot.cli", "--config", str(config), command]),
        stage.environment.name,
        *([] if argv else ["--yes"]),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **store_env(pg), "ROLLBACK_CONFIG": str(config)},
    )
    store = stage.services.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    try:
        while True:
            run = await store.active_run(stage.environment.name)
            if run is not None and await reached(run, stage):
                process.kill()
                break
            if process.returncode is not None or loop.time() > deadline:
                assert process.stderr is not None
                err = (await process.stderr.read()).decode()
                pytest.fail(f"the rollback ended before the kill point: {err[-2000:]}")
            await asyncio.sleep(0.005)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    return await store.get(run.id)


def journal_has(**facts: object) -> Predicate:
    async def reached(run: RunRecord, stage: Stage) -> bool:
        return all(
            (key in run.journal) if value is ... else run.journal.get(key) == value
            for key, value in facts.items()
        )

    return reached


def at_step(step: str, **facts: object) -> Predicate:
    journal = journal_has(**facts)

    async def reached(run: RunRecord, stage: Stage) -> bool:
        return run.current_step == step and await journal(run, stage)

    return reached


async def restore_committed(run: RunRecord, stage: Stage) -> bool:
    """The restore's transaction committed; the process may not have journalled it yet."""
    xid = run.journal.get("restore_xid")
    if not isinstance(xid, int):
        return False
    return await database.transaction_status(stage.target(), xid) == "committed"


async def database_names(stage: Stage) -> set[str]:
    connection = await asyncpg.connect(stage.dsn)
    try:
        return {r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


async def recover(stage: Stage, pg: ThrowawayPostgres, config: Path) -> str:
    code, _out, err = await cli("--config", str(config), "recover", env=store_env(pg))
    assert code == 0, err
    print(f"\n{err.splitlines()[0]}")  # the figure: how long recovery took (with -s)
    return err


async def choose(stage: Stage, pg: ThrowawayPostgres, config: Path, verb: str) -> None:
    """An approver's Resume or Abort and restore, on the command line."""
    code, out, err = await cli(
        "--config", str(config), verb, stage.environment.name, "--yes", env=store_env(pg)
    )
    assert code == 0, out + err


async def assert_consistent(
    stage: Stage, docker: aiodocker.Docker, killed: Killed, expected: str, shown: str
) -> RunRecord:
    """Data exactly old or exactly the backup, containers up, environment free, told."""
    run = await stage.services.store.get(killed.run.id)
    assert run.status is RunStatus.INTERRUPTED, run
    recovery = (run.result or {})["recovery"]
    assert recovery["data"] == expected, recovery
    assert recovery["problems"] == []
    data = await database_snapshot(stage.dsn)
    assert data == (killed.backup if expected == "changed" else killed.before)
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await stage.services.store.active_run(stage.environment.name) is None
    # No partial dump, and no copy of the approved bytes kept for a run that is over.
    folder = stage.environment.backups_dir
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert set(leftovers) <= {".rollback-bot"}
    copies = folder / ".rollback-bot"
    assert not copies.exists() or list(copies.iterdir()) == []
    # What the operator reads: which run, what state, and the two choices.
    assert f"run {run.id} of {stage.environment.name} was interrupted" in shown
    assert f"all 2 containers of {stage.environment.name} running" in shown
    assert "health checks pass" in shown
    assert "rollback-bot resume ENV | rollback-bot abort ENV" in shown
    return run


async def prepared_stage(stage: Stage, tmp_path: Path, strategy: str) -> tuple[Path, Killed]:
    await grow_and_back_up(stage)
    backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    config = write_config(stage, tmp_path, strategy=strategy)
    return config, Killed(None, before, backup)  # type: ignore[arg-type]


IN_PLACE_CASES = [
    ("stop", journal_has(stopping=...), "unchanged"),
    ("safety backup", at_step("safety_backup", safety_backup=...), "unchanged"),
    ("restore", journal_has(restore="started", restore_xid=...), "unchanged"),
    ("restore committed", restore_committed, "changed"),
    ("start", at_step("start"), "changed"),
    ("health", at_step("health"), "changed"),
]


@pytest.mark.parametrize(
    ("step", "reached", "expected"), IN_PLACE_CASES, ids=[c[0] for c in IN_PLACE_CASES]
)
async def test_in_place_killed_at_each_step_is_recovered(
    step: str,
    reached: Predicate,
    expected: str,
    stage: Stage,
    pg: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    config, killed = await prepared_stage(stage, tmp_path, "in-place")
    killed.run = await kill_during(stage, pg, config, reached)
    shown = await recover(stage, pg, config)
    await assert_consistent(stage, docker, killed, expected, shown)
    if step == "restore":
        # Nothing took effect: Resume runs the rollback again, to exactly the backup.
        await choose(stage, pg, config, "resume")
        assert await database_snapshot(stage.dsn) == killed.backup
        assert (await stage.services.store.get(killed.run.id)).status is RunStatus.SUCCEEDED
    if step == "health":
        # The backup is live: Abort and restore puts the pre-rollback data back.
        await choose(stage, pg, config, "abort")
        assert await database_snapshot(stage.dsn) == killed.before
        assert (await stage.services.store.get(killed.run.id)).status is RunStatus.ABORTED
        assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_in_place_killed_after_a_second_rollback_started_keeps_the_first_safe(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """Issue 7, item 1: after a kill, the next rollback must not report a stopped
    environment as running: the next command recovers first, then plans."""
    config, killed = await prepared_stage(stage, tmp_path, "in-place")
    killed.run = await kill_during(stage, pg, config, journal_has(stopping=...))
    code, out, err = await cli(
        "--config", str(config), "rollback", stage.environment.name, "--yes", env=store_env(pg)
    )
    assert code == 0, out + err
    assert f"run {killed.run.id} of {stage.environment.name} was interrupted" in err
    assert "health checks pass" in out
    assert "2 stopped" in out  # the containers recovery started again, stopped by this run
    assert await database_snapshot(stage.dsn) == killed.backup


async def restoring_into_staging(run: RunRecord, stage: Stage) -> bool:
    names = swap.SwapNames.from_facts(run.journal)
    return (
        run.current_step == "prepare"
        and names is not None
        and names.staging in await database_names(stage)
    )


SWAP_CASES = [
    ("prepare", restoring_into_staging, "unchanged"),
    ("stop", journal_has(stopping=...), "unchanged"),
    ("after the rename", journal_has(cutover="done"), "changed"),
    ("start", at_step("start"), "changed"),
    ("health", at_step("health"), "changed"),
    ("old-database dump", at_step("archive_old", archive_old=...), "changed"),
]


@pytest.mark.parametrize(
    ("step", "reached", "expected"), SWAP_CASES, ids=[c[0] for c in SWAP_CASES]
)
async def test_swap_killed_at_each_step_is_recovered(
    step: str,
    reached: Predicate,
    expected: str,
    stage: Stage,
    pg: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    config, killed = await prepared_stage(stage, tmp_path, "swap")
    killed.run = await kill_during(stage, pg, config, reached)
    shown = await recover(stage, pg, config)
    run = await assert_consistent(stage, docker, killed, expected, shown)
    names = swap.SwapNames.from_facts(run.journal)
    assert names is not None
    existing = await database_names(stage)
    if step == "prepare":
        # The orphaned pg_restore ended with its database; nothing was stopped.
        assert names.staging not in existing
        assert "unfinished staging database" in shown
    if step == "stop":
        assert names.staging in existing  # kept: Resume need not restore again
        await choose(stage, pg, config, "resume")
        assert await database_snapshot(stage.dsn) == killed.backup
    if step == "after the rename":
        # The pre-rollback data lived only in the old database: it is recorded for undo.
        assert (run.result or {}).get("old_database") == names.old
        assert names.old in existing
        await choose(stage, pg, config, "abort")
        assert await database_snapshot(stage.dsn) == killed.before
        assert set((await container_states(docker, stage.project)).values()) == {"running"}
    if step == "old-database dump":
        assert (run.result or {}).get("old_database") == names.old
    if step == "health":
        await choose(stage, pg, config, "resume")
        assert await database_snapshot(stage.dsn) == killed.backup
        finished = await stage.services.store.get(run.id)
        assert finished.status is RunStatus.SUCCEEDED


async def allows_connections(pg: ThrowawayPostgres, name: str) -> bool:
    connection = await asyncpg.connect(pg.superuser_dsn("postgres"))
    try:
        return bool(
            await connection.fetchval(
                "SELECT datallowconn FROM pg_database WHERE datname = $1", name
            )
        )
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def rename_blocked(pg: ThrowawayPostgres, live: str) -> AsyncIterator[None]:
    """Inside: the rename of `live` waits, for an open transaction holds a lock on the
    database object; released 0.2 s after the body ends."""
    blocker = await asyncpg.connect(pg.superuser_dsn("postgres"))
    try:
        await blocker.execute("BEGIN")
        await blocker.execute(f"COMMENT ON DATABASE \"{live}\" IS 'held by a test'")
        yield
        await asyncio.sleep(0.2)
        await blocker.execute("ROLLBACK")
    finally:
        await blocker.close()


async def test_swap_killed_during_a_blocked_rename_allows_connections_again(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """Issue 7, item 2: killed while the rename waits for a lock, with the live database
    set to refuse connections. Recovery lets them in again; nothing was renamed."""
    config, killed = await prepared_stage(stage, tmp_path, "swap")
    live = stage.database.name

    async def refusing(run: RunRecord, stage: Stage) -> bool:
        return run.journal.get("cutover") == "started" and not await allows_connections(pg, live)

    async with rename_blocked(pg, live):
        killed.run = await kill_during(stage, pg, config, refusing)
    assert not await allows_connections(pg, live)  # what the dead process left behind
    shown = await recover(stage, pg, config)
    await assert_consistent(stage, docker, killed, "unchanged", shown)
    assert f"connections to {live} allowed again" in shown
    assert await allows_connections(pg, live)


# A bot process whose plan empties the database before restoring (the no-room mode: the
# server has no space for old and new rows at once), as `plan_rollback` decides on a full
# disk; the decision is taken here so the test needs no full disk.
NO_ROOM_ROLLBACK = """
import asyncio, dataclasses, sys
from bot.environments_file import load_environments
from bot.resources import open_services
from bot.settings import load_settings
from services.events import ignore
from services.workflow import plan_rollback, rollback_database

async def main(environment):
    settings = load_settings()
    async with open_services(settings, load_environments(settings.rollback_config)) as s:
        plan = await plan_rollback(s, environment, None)
        plan = dataclasses.replace(plan, wipe_first=True)
        await rollback_database(s, plan, requested_by="no-room test", listener=ignore)

asyncio.run(main(sys.argv[1]))
"""


async def test_no_room_mode_killed_after_the_wipe_puts_the_data_back(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """Issue 7, item 5: the wipe committed, the restore did not; the database was empty.
    Recovery restores the safety backup: exactly the pre-rollback data, never empty."""
    config, killed = await prepared_stage(stage, tmp_path, "in-place")

    async def wiped(run: RunRecord, stage: Stage) -> bool:
        xid = run.journal.get("wipe_xid")
        return (
            isinstance(xid, int)
            and "restore_xid" in run.journal
            and await database.transaction_status(stage.target(), xid) == "committed"
        )

    run = await kill_during(stage, pg, config, wiped, argv=["-c", NO_ROOM_ROLLBACK])
    killed.run = run
    shown = await recover(stage, pg, config)
    await assert_consistent(stage, docker, killed, "unchanged", shown)
    assert "emptied before the restore" in shown
    assert "put back from the safety backup pre-rollback-" in shown


@pytest.fixture
async def own_cluster() -> AsyncIterator[ThrowawayPostgres]:
    """A server of this test's own, to stop and start."""
    async with ThrowawayPostgres(fast=True) as cluster:
        yield cluster


async def test_killed_then_postgres_down_at_recovery_is_reported_unknown_then_resumed(
    stage: Stage,
    pg: ThrowawayPostgres,
    own_cluster: ThrowawayPostgres,
    docker: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    """Issue 7: the bot dies mid-restore and the environment's PostgreSQL is down when
    recovery looks: the containers run again, the run says its data is UNKNOWN (never a
    guess) and frees the environment; Resume looks again once the server is back."""
    await own_cluster.create_database("app")
    dsn = own_cluster.superuser_dsn("app")
    await database.restore_in_place(
        database.DatabaseTarget(dsn, stage.services.tools), stage.backup
    )
    staged = stage.with_environment(database_url=SecretStr(dsn))
    staged = replace(staged, database=staged.database._replace(dsn=dsn))
    config, killed = await prepared_stage(staged, tmp_path, "in-place")
    killed.run = await kill_during(
        staged, pg, config, journal_has(restore="started", restore_xid=...)
    )
    await own_cluster.stop(immediate=True)
    code, _out, shown = await cli("--config", str(config), "recover", env=store_env(pg))
    assert code == 1, shown  # recovered with a problem
    assert "UNKNOWN" in shown
    run = await stage.services.store.get(killed.run.id)
    assert run.status is RunStatus.INTERRUPTED
    assert (run.result or {})["recovery"]["data"] == "unknown"
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert await stage.services.store.active_run(stage.environment.name) is None

    await own_cluster.start()
    await choose(staged, pg, config, "resume")
    assert await database_snapshot(dsn) == killed.backup
    assert (await stage.services.store.get(run.id)).status is RunStatus.SUCCEEDED


async def test_undo_killed_after_its_swap_back_is_recovered(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """Issue 7: the undo (what Abort and restore runs after a swap) is itself killed after
    its renames: recovery records it as done, the pre-rollback data is live, the containers
    it stopped run again, and the environment is free."""
    config, killed = await prepared_stage(stage, tmp_path, "swap")
    code, out, err = await cli(
        "--config", str(config), "rollback", stage.environment.name, "--yes", env=store_env(pg)
    )
    assert code == 0, out + err
    assert await database_snapshot(stage.dsn) == killed.backup
    # For the undo, "changed" means its own target is live: the pre-rollback data.
    killed.run = await kill_during(stage, pg, config, journal_has(swap_back="done"), command="undo")
    assert killed.run.kind == "undo"
    killed.backup, killed.before = killed.before, killed.backup
    shown = await recover(stage, pg, config)
    await assert_consistent(stage, docker, killed, "changed", shown)
    assert "the undo's swap had happened" in shown
