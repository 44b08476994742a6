"""The approved bytes: a private, read-only copy of the backup, taken and hashed in one pass.

An approval is bound to a checksum; the file in the backups folder can be rewritten after
it was hashed (even with its size and modification time put back). So the plan copies the
backup into `<backups>/.rollback-bot/<sha256>.dump` while hashing the bytes it copies,
and every restore (staging or in place) reads only that copy, after checking its checksum
again. The copy is named by its checksum: two runs of the same bytes share it, and a copy
no active run refers to is removed.

API for the workflow (see services/workflow.py `approved_source`):
  take_copy(backup, folder) -> ApprovedCopy    at plan time (bind_plan), or before executing
  existing_copy(folder, sha256)                the copy of an unchanged plan, if still there
  verify(copy)                                 before each use; BackupError if it changed
  discard_copy(services, environment, sha256)  when a run ends
  sweep_copies(services)                       removes copies no active run refers to
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from services.backups import Backup
from services.bundle import Services
from services.environments import Environment
from services.errors import BackupError

log = logging.getLogger(__name__)

COPY_FOLDER = ".rollback-bot"
# A copy is made before its run is recorded: the sweep leaves young ones alone.
UNREFERENCED_GRACE_SECONDS = 600.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ApprovedCopy:
    path: Path
    sha256: str
    size_bytes: int


def copy_folder(backups_dir: Path) -> Path:
    return backups_dir / COPY_FOLDER


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copy_and_hash(source: Path, folder: Path) -> ApprovedCopy:
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    partial = folder / f".{os.getpid()}-{time.monotonic_ns()}.partial"
    try:
        # O_NOFOLLOW: the name was resolved inside the folder; a link swapped in is refused.
        with (
            open(source, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as reader,
            open(partial, "xb") as writer,
        ):
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        partial.chmod(0o400)
        final = folder / f"{digest.hexdigest()}.dump"
        os.replace(partial, final)  # the same bytes, if it existed: replacing changes nothing
        fsync_directory(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return ApprovedCopy(final, digest.hexdigest(), size)


async def take_copy(backup: Backup, backups_dir: Path) -> ApprovedCopy:
    """Copy the backup into the bot's folder, hashing the bytes copied; fsynced, read-only."""
    try:
        # A symlink chosen by name was checked to stay inside the folder; its target is
        # what is copied (the copy itself then never follows a link swapped in later).
        source = await asyncio.to_thread(backup.path.resolve, True)
        if not source.is_relative_to(await asyncio.to_thread(backups_dir.resolve)):
            raise BackupError(f"{backup.name} no longer points inside the backups folder")
        return await asyncio.to_thread(_copy_and_hash, source, copy_folder(backups_dir))
    except OSError as error:
        raise BackupError(
            f"Cannot keep a copy of {backup.name} for the rollback: {error.strerror or error}"
        ) from error


async def existing_copy(backups_dir: Path, sha256: str) -> ApprovedCopy | None:
    """The copy of these bytes, if it is still there (checked again before use)."""
    path = copy_folder(backups_dir) / f"{sha256}.dump"
    try:
        stat = await asyncio.to_thread(path.stat)
    except OSError:
        return None
    return ApprovedCopy(path, sha256, stat.st_size)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def verify(copy: ApprovedCopy) -> None:
    """The copy still holds the approved bytes, or BackupError."""
    try:
        actual = await asyncio.to_thread(file_sha256, copy.path)
    except OSError as error:
        raise BackupError(
            f"The approved copy of the backup is gone ({error.strerror or error}); "
            "request the rollback again."
        ) from error
    if actual != copy.sha256:
        raise BackupError(
            "The approved copy of the backup changed since it was approved "
            f"(checksum {actual[:12]}…, approved {copy.sha256[:12]}…); nothing was restored."
        )


def as_backup(backup: Backup, copy: ApprovedCopy) -> Backup:
    """The backup as the user named it, read from the approved copy."""
    return Backup(backup.name, copy.path, copy.size_bytes, backup.created_at, backup.identity)


def _remove(folder: Path, keep: set[str], older_than: float | None) -> list[Path]:
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for path in folder.iterdir():
        if path.suffix == ".dump" and path.stem in keep:
            continue
        with contextlib.suppress(FileNotFoundError):  # another sweep was quicker
            if older_than is not None and now - path.lstat().st_mtime < older_than:
                continue
            path.unlink()
            removed.append(path)
    return removed


async def _referenced(services: Services, environment: str) -> set[str]:
    return {
        run.backup_sha256
        for run in await services.store.active_runs()
        if run.environment == environment and run.backup_sha256
    }


async def discard_copy(services: Services, environment: Environment, sha256: str | None) -> None:
    """A run ended: its copy goes, unless another active run restores the same bytes."""
    if not sha256 or sha256 in await _referenced(services, environment.name):
        return
    path = copy_folder(environment.backups_dir) / f"{sha256}.dump"
    try:
        await asyncio.to_thread(path.unlink, True)
    except OSError:
        log.warning("could not remove %s", path, exc_info=True)


async def sweep_copies(
    services: Services, *, grace_seconds: float = UNREFERENCED_GRACE_SECONDS
) -> list[Path]:
    """Remove the copies (and partial copies) that no active run refers to."""
    removed: list[Path] = []
    for environment in services.environments.values():
        keep = await _referenced(services, environment.name)
        folder = copy_folder(environment.backups_dir)
        removed += await asyncio.to_thread(_remove, folder, keep, grace_seconds)
    return removed
