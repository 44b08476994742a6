"""What is restored is what was approved (issue 8, item 11): the plan copies the backup and
hashes it in one pass; every restore reads that copy, checked again."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiodocker
import asyncpg
import pytest

from sandbox.demo_environment import database_snapshot
from services import approved_copy
from services.approvals import BoundPlan, Decision, bind_plan, decide, request_rollback
from services.database import DatabaseTarget, dump_database
from services.environments import ApprovalPolicy, Strategy
from services.run_store import RunRecord, RunStatus
from services.swap import derived_from
from services.workflow import execute_rollback, prepare_rollback
from tests.services.conftest import Stage, change_after_backup, container_states
from tests.services.test_approvals import GROUPS

MARKER, OTHER = b"marker-AAAAAAAA", b"marker-BBBBBBBB"


async def noop(event: object) -> None:
    pass


async def record_run(stage: Stage, bound: BoundPlan, status: RunStatus) -> RunRecord:
    return await stage.services.store.create_run(
        environment=stage.environment.name,
        kind="database",
        requested_by="t",
        status=status,
        plan=bound.summary(),
        backup_sha256=bound.sha256,
    )


async def marked_backup(stage: Stage) -> Path:
    """An uncompressed backup (the newest) holding MARKER, which can be edited in place."""
    connection = await asyncpg.connect(stage.dsn)
    try:
        await connection.execute(
            f"CREATE TABLE marker (v text); INSERT INTO marker VALUES ('{MARKER.decode()}')"
        )
    finally:
        await connection.close()
    backup = await dump_database(
        DatabaseTarget(stage.dsn, stage.services.tools),
        stage.environment.backups_dir / "pre-deployment-20241205-120000.dump",
        compression=0,
    )
    return backup.path


def rewrite_in_place(path: Path) -> None:
    """Same inode, same size, the modification time put back: only the bytes differ."""
    before = path.stat()
    data = path.read_bytes()
    assert data.count(MARKER) == 1
    with path.open("r+b") as handle:  # in place: the inode stays
        handle.write(data.replace(MARKER, OTHER))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


async def marker(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.fetchval("SELECT v FROM marker"))
    finally:
        await connection.close()


async def test_a_file_rewritten_in_place_with_its_mtime_put_back_changes_the_plan(
    stage: Stage,
) -> None:
    """issue 8: inode, size and mtime equal, bytes different: the approval no longer counts."""
    stage = stage.with_environment(approval=ApprovalPolicy(approvers=("S0ONCALL",)))
    path = await marked_backup(stage)
    outcome = await request_rollback(
        stage.services, GROUPS, environment=stage.environment.name, backup=None, requested_by="A"
    )
    copy = outcome.plan.plan.approved
    assert copy is not None and copy.sha256 == outcome.run.backup_sha256
    assert copy.path.parent == stage.environment.backups_dir / ".rollback-bot"
    assert stat.S_IMODE(copy.path.stat().st_mode) == 0o400
    assert copy.path.read_bytes() == path.read_bytes()

    rewrite_in_place(path)
    changed = await decide(
        stage.services, GROUPS, run_id=outcome.run.id, user="U0BOB", decision=Decision.APPROVE
    )
    assert not changed.counted and changed.start is None
    assert "its checksum differs" in (changed.note or "")
    again = await decide(
        stage.services, GROUPS, run_id=outcome.run.id, user="U0BOB", decision=Decision.APPROVE
    )
    assert again.start is not None and again.start.sha256 != copy.sha256
    assert again.start.plan.approved is not None
    assert OTHER in again.start.plan.approved.path.read_bytes()
    await stage.services.store.update(outcome.run.id, status=RunStatus.CANCELLED)
    removed = await approved_copy.sweep_copies(stage.services, grace_seconds=0)
    assert {p.name for p in removed} == {f"{copy.sha256}.dump", f"{again.start.sha256}.dump"}


async def test_in_place_restores_the_approved_bytes_and_records_them(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    """issue 8: the file rewritten after approval changes nothing: the copy is restored, the
    run records its checksum, and the copy is removed when the run ends."""
    path = await marked_backup(stage)
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    bound = await bind_plan(stage.services, stage.environment.name, None)
    assert bound.plan.approved is not None
    rewrite_in_place(path)
    run = await record_run(stage, bound, RunStatus.APPROVED)
    result = await execute_rollback(stage.services, bound.plan, run_id=run.id, listener=noop)
    assert result.ok, result.error
    assert await database_snapshot(stage.dsn) == at_backup
    assert await marker(stage.dsn) == MARKER.decode()
    recorded = (await stage.services.store.get(run.id)).result or {}
    assert recorded["backup_sha256"] == bound.sha256
    assert not bound.plan.approved.path.exists()


async def test_a_tampered_copy_is_refused_before_anything_stops(
    stage: Stage, docker: aiodocker.Docker
) -> None:
    """issue 8: the copy is checked before use; a changed copy stops the run at once."""
    await marked_backup(stage)
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    bound = await bind_plan(stage.services, stage.environment.name, None)
    copy = bound.plan.approved
    assert copy is not None
    copy.path.chmod(0o600)
    copy.path.write_bytes(copy.path.read_bytes().replace(MARKER, OTHER))
    run = await record_run(stage, bound, RunStatus.APPROVED)
    result = await execute_rollback(stage.services, bound.plan, run_id=run.id, listener=noop)
    assert not result.ok
    assert "approved copy of the backup changed" in (result.error or "")
    assert [s.step.value for s in result.steps] == []  # nothing was stopped
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_a_staging_copy_of_other_bytes_is_rebuilt_from_the_approved_ones(
    stage: Stage, pg: object
) -> None:
    """issue 8: the staging database prepared from the first plan is not put live when the
    approved plan has other bytes; it is restored again from the approved copy."""
    stage = stage.with_environment(strategy=Strategy.SWAP)
    path = await marked_backup(stage)
    await change_after_backup(stage.dsn)
    first = await bind_plan(stage.services, stage.environment.name, None)
    run = await record_run(stage, first, RunStatus.AWAITING_APPROVAL)
    try:
        preparation = await prepare_rollback(
            stage.services, first.plan, run_id=run.id, listener=noop
        )
        assert preparation.names is not None and preparation.sha256 == first.sha256
        rewrite_in_place(path)
        second = await bind_plan(
            stage.services, stage.environment.name, None, own_run_id=run.id, known=first.summary()
        )
        assert second.sha256 != first.sha256
        await stage.services.store.update(run.id, status=RunStatus.APPROVED)
        # The run's journal says which bytes its staging copy holds: not these.
        result = await execute_rollback(stage.services, second.plan, run_id=run.id, listener=noop)
        assert result.ok, (result.error, result.environment_state)
        assert result.strategy == "swap" and result.backup_sha256 == second.sha256
        assert await marker(stage.dsn) == OTHER.decode()
    finally:
        admin = await asyncpg.connect(stage.dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            for row in await admin.fetch("SELECT datname FROM pg_database"):
                if derived_from(stage.database.name, row["datname"]):
                    await admin.execute(f'DROP DATABASE "{row["datname"]}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.mark.parametrize("grace", [0.0, 3600.0])
async def test_sweep_removes_only_copies_no_active_run_refers_to(
    stage: Stage, grace: float
) -> None:
    bound = await bind_plan(stage.services, stage.environment.name, None)
    assert bound.plan.approved is not None
    removed = await approved_copy.sweep_copies(stage.services, grace_seconds=grace)
    assert bound.plan.approved.path.exists() == (grace > 0)
    assert bool(removed) == (grace == 0)


async def test_a_symlink_inside_the_folder_chosen_by_name_is_copied_from_its_target(
    stage: Stage,
) -> None:
    """issue 8: a symlink staying inside the backups folder is usable by name; its target's
    bytes are the approved ones (the copy used to be refused by O_NOFOLLOW)."""
    link = stage.environment.backups_dir / "latest.dump"
    link.symlink_to(stage.backup.path.name)
    bound = await bind_plan(stage.services, stage.environment.name, link.name)
    assert bound.plan.backup.name == "latest.dump"
    assert bound.plan.approved is not None
    assert bound.plan.approved.path.read_bytes() == stage.backup.path.read_bytes()
