"""The backups catalogue: what dumps an environment has, and resolving a user's choice safely."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services import processes
from services.environments import Environment
from services.errors import BackupError, NoBackups
from services.pgtools import PgTools

_STAMP = re.compile(r"(\d{8})-(\d{6})")


@dataclass(frozen=True)
class Backup:
    name: str
    path: Path
    size_bytes: int
    created_at: datetime  # from the name's YYYYMMDD-HHMMSS stamp (UTC), else the file's mtime
    # inode, size, modification and change times: the same file, unchanged, while it stays
    # equal (a rewrite changes ctime even when mtime is set back)
    identity: str = ""

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.created_at).total_seconds()


@dataclass(frozen=True)
class ArchiveContents:
    """What `pg_restore --list` says is inside a dump."""

    database: str
    entries: int
    tables: tuple[str, ...]  # schema.table with data in the dump


def _created_at(path: Path, mtime: float) -> datetime:
    match = _STAMP.search(path.name)
    if match:
        try:
            stamp = datetime.strptime("".join(match.groups()), "%Y%m%d%H%M%S")
            return stamp.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(mtime, UTC)


def _describe(path: Path) -> Backup:
    stat = path.stat()
    identity = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    return Backup(path.name, path, stat.st_size, _created_at(path, stat.st_mtime), identity)


def _scan(folder: Path) -> list[Backup]:
    if not folder.is_dir():
        return []
    found = [_describe(p) for p in folder.glob("*.dump") if p.is_file()]
    return sorted(found, key=lambda b: (b.created_at, b.name), reverse=True)


async def list_backups(environment: Environment) -> list[Backup]:
    """Every *.dump in the environment's backups folder, newest first."""
    return await asyncio.to_thread(_scan, environment.backups_dir)


def _inside(folder: Path, requested: str) -> Path:
    root = folder.resolve()
    given = Path(requested)
    if given.is_absolute():
        candidates = [given]
    else:
        # Accept the runbook's `backups/<name>.dump` form as well as the bare name.
        candidates = [root / given]
        if given.parts and given.parts[0] == folder.name:
            candidates.append(root.parent / given)
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved.is_relative_to(root) and resolved.exists():
            return resolved
    for candidate in candidates:
        if not candidate.resolve().is_relative_to(root):
            raise BackupError(f"'{requested}' is outside the backups folder {folder}; refused.")
    raise BackupError(f"Backup '{requested}' not found in {folder}.")


async def resolve_backup(environment: Environment, requested: str | None) -> Backup:
    """The newest backup, or the named one, which must lie inside the backups folder."""
    if requested is None:
        backups = await list_backups(environment)
        if not backups:
            raise NoBackups(environment.name, str(environment.backups_dir))
        return backups[0]
    if not requested.strip() or "\x00" in requested:
        raise BackupError("An empty backup name was given.")
    path = await asyncio.to_thread(_inside, environment.backups_dir, requested.strip())
    if not path.is_file():
        raise BackupError(f"'{requested}' is not a file.")
    return await asyncio.to_thread(_describe, path)


async def inspect_archive(tools: PgTools, backup: Backup) -> ArchiveContents:
    """Read the dump's table of contents; a file pg_restore cannot read is refused."""
    result = await processes.run([tools.pg_restore, "--list", str(backup.path)])
    if not result.ok:
        raise BackupError(
            f"{backup.name} is not a readable pg_dump archive: {result.error_text(500)}"
        )
    database = ""
    tables: list[str] = []
    entries = 0
    for line in result.stdout.splitlines():
        if line.startswith(";     dbname:"):
            database = line.split(":", 1)[1].strip()
        elif line and not line.startswith(";"):
            entries += 1
            fields = line.split()
            # "<id>; <oid> <oid> TABLE DATA <schema> <name> <owner>"
            if len(fields) >= 7 and fields[3:5] == ["TABLE", "DATA"]:
                tables.append(f"{fields[5]}.{fields[6]}")
    return ArchiveContents(database, entries, tuple(tables))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def checksum(backup: Backup) -> str:
    """SHA-256 of the dump, binding an approval to the exact file approved."""
    return await asyncio.to_thread(_sha256, backup.path)
