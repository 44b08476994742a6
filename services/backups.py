"""The backups catalogue: what dumps an environment has, and resolving a user's choice safely."""

from __future__ import annotations

import asyncio
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services import names, processes
from services.environments import Environment
from services.errors import BackupError, InvalidName, NoBackups
from services.pgtools import PgTools

_STAMP = re.compile(r"(\d{8})-(\d{6})")
# The form of `database.safety_backup_name`: the bot's own safety and pre-rollback dumps.
_OWN_DUMP = re.compile(r"^pre-rollback-\d{8}-\d{6}\.dump$")
# Beside a dump `x.dump`, its provenance `x.dump.json` (services/provenance.py); a dump being
# written is `.x.dump.partial` until it is complete. Neither is ever a backup.
SIDECAR_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
# A stamp or mtime this far ahead of the clock is "in the future" (a wrong clock or a
# local-time stamp), not "0 s ago".
FUTURE_TOLERANCE = timedelta(minutes=5)


def is_sidecar_name(name: str) -> bool:
    return name.endswith(".dump" + SIDECAR_SUFFIX)


def is_own_dump(name: str) -> bool:
    """A dump the bot itself wrote (safety or pre-rollback), never the default backup."""
    return _OWN_DUMP.match(name) is not None


@dataclass(frozen=True)
class Backup:
    name: str
    path: Path
    size_bytes: int
    created_at: datetime  # from the name's YYYYMMDD-HHMMSS stamp (UTC), else the file's mtime
    # inode, size, modification and change times: the same file, unchanged, while it stays
    # equal (a rewrite changes ctime even when mtime is set back)
    identity: str = ""
    modified_at: datetime | None = None
    symlink: bool = False  # a link inside the folder to a file inside it: by name only
    own: bool = False  # the bot's safety or pre-rollback dump: by name only

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.created_at).total_seconds()

    def future_dated(self, now: datetime | None = None) -> bool:
        """The name's stamp or the file's mtime is ahead of the clock."""
        limit = (now or datetime.now(UTC)) + FUTURE_TOLERANCE
        return self.created_at > limit or (
            self.modified_at is not None and self.modified_at > limit
        )

    def notes(self, now: datetime | None = None) -> list[str]:
        """What a person should know before choosing it, in words (list and plan)."""
        notes = []
        if self.future_dated(now):
            notes.append("dated in the future: check the clock or the name's time zone")
        if self.own:
            notes.append("the bot's own safety dump: used only when named")
        if self.symlink:
            notes.append("a symlink: used only when named")
        return notes

    def default_candidate(self, now: datetime | None = None) -> bool:
        """One a person or a deployment took, with a name a person can type, dated sanely."""
        if self.symlink or self.own or self.future_dated(now):
            return False
        try:
            names.backup_file_name(self.name)
        except InvalidName:
            return False
        return True


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


def _describe(path: Path, *, symlink: bool = False) -> Backup:
    info = path.stat()
    identity = f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
    return Backup(
        path.name,
        path,
        info.st_size,
        _created_at(path, info.st_mtime),
        identity,
        modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
        symlink=symlink,
        own=is_own_dump(path.name),
    )


def _entry(root: Path, path: Path) -> Backup | None:
    """A regular file, or a symlink to a regular file inside `root`; anything else is None."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            target = path.resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return None
            return _describe(path, symlink=True)
        return _describe(path) if stat.S_ISREG(mode) else None
    except (OSError, RuntimeError, ValueError):  # vanished, unreadable, a link loop
        return None


def _scan(folder: Path) -> list[Backup]:
    try:
        if not folder.is_dir():
            return []
        root = folder.resolve()
        entries = [_entry(root, p) for p in folder.glob("*.dump")]
    except OSError:
        return []
    found = [b for b in entries if b is not None]
    return sorted(found, key=lambda b: (b.created_at, b.name), reverse=True)


async def list_backups(environment: Environment) -> list[Backup]:
    """The *.dump files in the environment's backups folder (never a link out), newest first."""
    return await asyncio.to_thread(_scan, environment.backups_dir)


def _named(folder: Path, file_name: str, requested: str) -> Backup:
    """The file `file_name` directly in `folder`; a symlink must stay inside it."""
    shown = names.visible(requested)
    if is_sidecar_name(file_name):
        raise BackupError(f"'{shown}' is a backup's provenance sidecar, not a backup.")
    if file_name.endswith(PARTIAL_SUFFIX):
        raise BackupError(f"'{shown}' is an unfinished dump, not a backup.")
    try:
        root = folder.resolve()
        path = root / file_name
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) and not path.resolve().is_relative_to(root):
            raise BackupError(f"'{shown}' is outside the backups folder {folder}; refused.")
        if not path.is_file():
            raise BackupError(f"'{shown}' is not a file.")
        return _describe(path, symlink=stat.S_ISLNK(mode))
    except FileNotFoundError:
        raise BackupError(f"Backup '{shown}' not found in {folder}.") from None
    except (OSError, RuntimeError) as error:  # permissions, a link loop
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise BackupError(f"Backup '{shown}' cannot be read: {reason}.") from None


async def resolve_backup(
    environment: Environment, requested: str | None, *, now: datetime | None = None
) -> Backup:
    """The default backup, or the named one, which must lie inside the backups folder.

    The default is the newest one a person or a deployment took: never a symlink, never the
    bot's own dumps, never a future-dated one; those stay selectable by name.
    """
    folder = environment.backups_dir
    if requested is None:
        backups = await list_backups(environment)
        eligible = [b for b in backups if b.default_candidate(now)]
        if not eligible:
            raise NoBackups(environment.name, str(folder), skipped=len(backups))
        return eligible[0]
    file_name = names.backup_file_name(requested, folder.name)
    return await asyncio.to_thread(_named, folder, file_name, requested)


async def inspect_archive(
    tools: PgTools, backup: Backup, *, timeout: float = 60.0
) -> ArchiveContents:
    """Read the dump's table of contents; a file pg_restore cannot read is refused."""
    result = await processes.run(
        [tools.pg_restore, "--list", str(backup.path)],
        timeout=timeout,
        what=f"reading the table of contents of {backup.name}",
    )
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
