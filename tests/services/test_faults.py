"""Issue 7: faults other than a killed bot, each ending consistent, running and told."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiodocker

from sandbox.demo_environment import database_snapshot
from services.events import ignore
from services.workflow import plan_rollback, rollback_database
from tests.services.conftest import Stage, change_after_backup, container_states


@contextlib.contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A folder on a tmpfs of `size_bytes`: a disk that fills up."""
    folder.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)], check=True
    )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_disk_full_while_writing_the_safety_backup(
    stage: Stage, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """The backups folder fills up during the safety dump (after the stop): nothing is
    restored, the containers start again, no partial file is left, and the run says why."""
    await change_after_backup(stage.dsn)
    before = await database_snapshot(stage.dsn)
    backup = stage.backup
    # Room for the backup and the bot's copy of the approved bytes, not for a safety dump.
    size = 2 * backup.size_bytes + 8192
    with small_disk(tmp_path / "full", (size + 4095) // 4096 * 4096) as folder:
        shutil.copy(backup.path, folder / backup.name)
        staged = stage.with_environment(backups_dir=folder)
        plan = await plan_rollback(staged.services, staged.environment.name, backup.name)
        result = await rollback_database(
            staged.services, plan, requested_by="disk-full test", listener=ignore
        )
        leftovers = sorted(p.name for p in folder.iterdir() if p.name != backup.name)
    assert not result.ok
    assert result.error is not None and "No space left on device" in result.error
    assert [(s.step.value, s.ok) for s in result.steps][:2] == [
        ("stop", True),
        ("safety_backup", False),
    ]
    assert "restore" not in [s.step.value for s in result.steps]
    assert await database_snapshot(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    assert "all 2 containers running" in result.environment_state
    assert not any(name.endswith(".partial") for name in leftovers), leftovers
    assert await stage.services.store.active_run(stage.environment.name) is None
