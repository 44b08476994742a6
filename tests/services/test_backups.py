"""The backups catalogue: the default backup and named backups (issue 8)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from pydantic import SecretStr

from services import database
from services.backups import is_own_dump, list_backups, resolve_backup
from services.environments import Environment
from services.errors import BackupError, NoBackups, RollbackError
from tests import hostile
from tests.hostile import HOSTILE

OLD = "pre-deployment-20240101-000000.dump"


def environment(folder: Path) -> Environment:
    url = "postgresql://app@127.0.0.1:1/app"
    return Environment(
        name="production",
        compose_project="production",
        database_url=SecretStr(url),
        database_display=url,
        backups_dir=folder,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A backups folder with one ordinary backup, and a file outside it."""
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / OLD).write_bytes(b"PGDMP old")
    (tmp_path / "outside.dump").write_bytes(b"PGDMP outside")
    return backups.resolve()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime: what "touched" would change."""
    return {
        str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"), key=str)
    }


async def test_default_is_never_a_symlink_out_of_the_folder(folder: Path) -> None:
    """issue 8: a newer symlink to a file outside was planned and restored."""
    (folder / "newest-20300101-000000.dump").symlink_to(folder.parent / "outside.dump")
    (folder / "inside-link-20250101-000000.dump").symlink_to(folder / OLD)
    chosen = await resolve_backup(environment(folder), None)
    assert chosen.name == OLD
    listed = [b.name for b in await list_backups(environment(folder))]
    assert "newest-20300101-000000.dump" not in listed  # leaves the folder: not listed
    assert "inside-link-20250101-000000.dump" in listed  # inside: listed, by name only
    with pytest.raises(BackupError, match="outside the backups folder"):
        await resolve_backup(environment(folder), "newest-20300101-000000.dump")
    linked = await resolve_backup(environment(folder), "inside-link-20250101-000000.dump")
    assert linked.symlink and "a symlink: used only when named" in linked.notes()


async def test_default_is_never_the_bots_own_dump(folder: Path) -> None:
    """issue 8: after a rollback, a bare `/rollback prod` restored the pre-rollback dump."""
    own = database.safety_backup_name(datetime.now(UTC) - timedelta(minutes=1))
    assert is_own_dump(own)
    (folder / own).write_bytes(b"PGDMP safety")
    env = environment(folder)
    assert (await resolve_backup(env, None)).name == OLD
    named = await resolve_backup(env, own)
    assert named.own and named.notes() == ["the bot's own safety dump: used only when named"]
    assert [b.own for b in await list_backups(env)] == [True, False]


async def test_future_dated_backups_are_flagged_and_never_the_default(folder: Path) -> None:
    """issue 8: a future stamp or mtime showed as "0 s ago" and won the default forever."""
    stamped = folder / "pre-deployment-20991231-235959.dump"
    stamped.write_bytes(b"PGDMP future stamp")
    touched = folder / "no-stamp.dump"
    touched.write_bytes(b"PGDMP future mtime")
    ahead = time.time() + 3600
    os.utime(touched, (ahead, ahead))
    env = environment(folder)
    assert (await resolve_backup(env, None)).name == OLD
    for name in (stamped.name, touched.name):
        backup = await resolve_backup(env, name)
        assert backup.future_dated()
        assert backup.notes()[0].startswith("dated in the future")
    assert not (await resolve_backup(env, OLD)).future_dated()


async def test_no_backup_to_default_to_says_why(folder: Path) -> None:
    (folder / OLD).unlink()
    (folder / database.safety_backup_name()).write_bytes(b"PGDMP")
    with pytest.raises(NoBackups, match=r"1 other.*name one to use it"):
        await resolve_backup(environment(folder), None)
    (folder / database.safety_backup_name()).unlink()
    with pytest.raises(NoBackups, match=r"No backups \(\*\.dump\)"):
        await resolve_backup(environment(folder), None)


async def test_a_file_with_a_hostile_name_on_disk_is_listed_but_never_the_default(
    folder: Path,
) -> None:
    """issue 8: a name a person cannot type (a newline in it) is not chosen for them."""
    (folder / "x\nRollback SUCCEEDED-20250101-000000.dump").write_bytes(b"PGDMP")
    env = environment(folder)
    assert len(await list_backups(env)) == 2
    assert (await resolve_backup(env, None)).name == OLD


async def test_a_name_the_file_system_refuses_is_a_clear_error(folder: Path) -> None:
    """issue 8: 256+ bytes crashed with `OSError: File name too long`."""
    for requested in ("a" * 256, "é" * 200 + ".dump", "x" * 5000):
        with pytest.raises(BackupError, match="too long"):
            await resolve_backup(environment(folder), requested)


@settings(HOSTILE, max_examples=150)
@given(requested=hostile.anything)
async def test_hostile_names_never_resolve_outside_or_raise_anything_else(
    folder: Path, requested: str
) -> None:
    """issue 8: every hostile name is refused with a RollbackError, nothing is changed."""
    (folder / "link-out.dump").unlink(missing_ok=True)
    (folder / "link-out.dump").symlink_to(folder.parent / "outside.dump")
    before = snapshot(folder.parent)
    touched = False
    try:
        backup = await resolve_backup(environment(folder), requested)
    except RollbackError as error:
        assert "\n" not in str(error)
    else:  # an ordinary name that exists: only ever the one backup in the folder
        touched = backup.path.parent != folder
    touched = touched or snapshot(folder.parent) != before
    hostile.tried(touched)
    assert not touched
