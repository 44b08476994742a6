"""Where a backup came from: a sidecar `<name>.dump.json` beside each dump the bot writes.

It records when and by whom, why (the kind), the environment and database, the commit
deployed then (`Services.deployed_commit`), the schema migration version (the
environment's `migrations_table`), the dump's sha256 and size, and the tools. Backups
without a sidecar keep working everywhere; a malformed one is reported, never trusted.

  ask_deployed_commit(services, environment)   the hook, bounded; before containers stop
  capture(services, environment, source)   what is true now (schema, commit): before a dump
  seal(backup, captured, kind=…, created_by=…)   hashes the dump, writes the sidecar
  record_quietly(services, environment, backup, …)   for the dumps a rollback writes: never
      raises, returns a note saying why there is no sidecar
  load_sidecar(path) / read_provenance(path)   reading, tolerant
  list_with_provenance(environment)        the catalogue with each backup's provenance
  schema_mismatch(backup, other)           a warning when schema versions differ
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services import backups as catalogue
from services.approved_copy import file_sha256, fsync_directory
from services.backups import SIDECAR_SUFFIX, Backup
from services.bundle import Services
from services.database import DatabaseTarget
from services.environments import Environment, MigrationsKind
from services.errors import ProvenanceError, RollbackError
from services.pgtools import tools_major
from services.schema_version import SchemaVersion, read_schema_version

log = logging.getLogger(__name__)

FORMAT = 1
MAX_SIDECAR_BYTES = 64 << 10
COMMIT_SECONDS = 30.0  # asking the deployed commit, at least (git: its own limits + 5 s)
# A listing hashes backups, newest first, up to this many bytes in all (about 1 s).
VERIFY_BYTES = 1 << 30
_COMMIT = re.compile(r"[0-9a-f]{7,64}")

Text = Annotated[str, Field(max_length=1000)]


class BackupKind(StrEnum):
    MANUAL = "manual"  # `rollback-bot backup ENV [label]`
    PRE_DEPLOYMENT = "pre-deployment"  # the same, labelled pre-deployment…
    PRE_MIGRATION = "pre-migration"
    SAFETY = "safety"  # in place: the database before the restore
    OLD_DATABASE = "old-database"  # swap: the database renamed aside, dumped

    @classmethod
    def for_label(cls, label: str) -> BackupKind:
        for kind in (cls.PRE_DEPLOYMENT, cls.PRE_MIGRATION):
            if label.startswith(kind.value):
                return kind
        return cls.MANUAL


class Provenance(BaseModel):
    """The sidecar's content (JSON); unknown keys of a later format are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: int = FORMAT
    backup: Text  # the dump's file name when it was written
    kind: BackupKind
    created_at: datetime
    created_by: Text  # a Slack user ID or `user@host (command line)`
    environment: Text
    database: Text
    deployed_commit: str | None = Field(default=None, pattern=f"^{_COMMIT.pattern}$")
    schema_version: Text | None = None
    migrations_table: Text | None = None  # where schema_version was read
    migrations_kind: MigrationsKind | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    run_id: Text | None = None  # the rollback that wrote it
    label: Text | None = None
    tools: dict[str, Text] = Field(default_factory=dict)
    notes: tuple[Text, ...] = ()  # what could not be recorded, and why


def sidecar_path(backup_path: Path) -> Path:
    """x.dump -> x.dump.json (never a backup: see backups.is_sidecar_name)."""
    return backup_path.with_name(backup_path.name + SIDECAR_SUFFIX)


# -- Writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """What is true of the environment when a dump is taken."""

    environment: str
    database: str
    deployed_commit: str | None
    schema: SchemaVersion | None
    tools: dict[str, str]
    notes: tuple[str, ...]


def _bot_version() -> str:
    try:
        return metadata.version("rollback-bot")
    except metadata.PackageNotFoundError:
        return "unknown"


def _said(error: BaseException) -> str:
    """An error in words; a foreign one by its type only (its text may carry a URL)."""
    return str(error) if isinstance(error, RollbackError) else type(error).__name__


@dataclass(frozen=True)
class CommitAnswer:
    """The deployed commit, or None with the reason in `notes`."""

    sha: str | None
    notes: tuple[str, ...] = ()


def _commit_seconds(environment: Environment) -> float:
    """The git service bounds its own fetch and endpoint read; this is the net under it."""
    git = environment.git
    if git is None:
        return COMMIT_SECONDS
    return max(COMMIT_SECONDS, git.timeout_seconds + git.version_timeout_seconds + 5)


async def ask_deployed_commit(services: Services, environment: Environment) -> CommitAnswer:
    """`Services.deployed_commit`, bounded, never raising. Started before containers stop
    where a dump is taken while they are down (a version endpoint would not answer then)."""
    if services.deployed_commit is None:
        return CommitAnswer(None, ("deployed commit unknown: no way to know it is configured",))
    limit = _commit_seconds(environment)
    try:
        async with asyncio.timeout(limit):
            sha = await services.deployed_commit(environment)
    except TimeoutError:
        return CommitAnswer(None, (f"deployed commit unknown: no answer in {limit:g} s",))
    except Exception as error:
        log.warning("deployed commit of %s unknown", environment.name, exc_info=True)
        return CommitAnswer(None, (f"deployed commit unknown: {_said(error)}",))
    if sha is not None and not _COMMIT.fullmatch(sha):
        return CommitAnswer(None, ("deployed commit unknown: the answer was not a commit id",))
    return CommitAnswer(sha)


async def capture(
    services: Services,
    environment: Environment,
    source: DatabaseTarget,
    *,
    commit: CommitAnswer | None = None,
) -> Captured:
    """The schema version of `source` (the database dumped), the deployed commit (`commit`
    if asked already), the tools. Whatever cannot be known is None, with a note."""
    notes: list[str] = []
    schema = None
    if environment.migrations_table is not None:
        try:
            schema = await read_schema_version(source, environment.migrations_table)
        except RollbackError as error:
            notes.append(f"schema version not read: {error}")
        else:
            if schema.version is None:
                notes.append(f"schema version unknown: {schema.note}")
    commit = commit or await ask_deployed_commit(services, environment)
    tools = {"rollback-bot": _bot_version()}
    with contextlib.suppress(RollbackError):
        tools["pg_dump"] = str(await tools_major(source.tools))
    notes += commit.notes
    return Captured(environment.name, source.name, commit.sha, schema, tools, tuple(notes))


def write_sidecar(backup_path: Path, provenance: Provenance) -> Path:
    """Atomically: a temporary file, fsynced, renamed over the sidecar, the folder fsynced."""
    path = sidecar_path(backup_path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")
    data = (provenance.model_dump_json(indent=2) + "\n").encode()
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(temporary, flags, 0o644), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


async def seal(
    backup: Backup,
    captured: Captured,
    *,
    kind: BackupKind,
    created_by: str,
    run_id: str | None = None,
    label: str | None = None,
    created_at: datetime | None = None,
) -> Provenance:
    """Hash the finished dump and write its sidecar; ProvenanceError if that fails."""
    try:
        digest = await asyncio.to_thread(file_sha256, backup.path)
        size = (await asyncio.to_thread(backup.path.stat)).st_size
        schema = captured.schema
        provenance = Provenance(
            backup=backup.name,
            kind=kind,
            created_at=created_at or datetime.now(UTC),
            created_by=created_by[:1000],
            environment=captured.environment,
            database=captured.database,
            deployed_commit=captured.deployed_commit,
            schema_version=schema.version if schema else None,
            migrations_table=schema.table if schema else None,
            migrations_kind=schema.kind if schema else None,
            sha256=digest,
            size_bytes=size,
            run_id=run_id,
            label=label,
            tools=captured.tools,
            notes=captured.notes,
        )
        await asyncio.to_thread(write_sidecar, backup.path, provenance)
    except (OSError, ValidationError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ProvenanceError(
            f"The provenance of {backup.name} could not be written: {reason}"
        ) from error
    return provenance


async def _requester(services: Services, run_id: str | None) -> str:
    if run_id is None:
        return "rollback-bot"
    return (await services.store.get(run_id)).requested_by


async def record_quietly(
    services: Services,
    environment: Environment,
    backup: Backup,
    *,
    kind: BackupKind,
    source: DatabaseTarget,
    run_id: str | None = None,
    commit: Awaitable[CommitAnswer] | None = None,
) -> str:
    """The sidecar of a dump a rollback wrote, by the run's requester. It must not fail the
    rollback: '' when written, else a short note (the reason is logged). `commit`: the
    answer asked earlier (ask_deployed_commit), else it is asked now."""
    try:
        answer = await commit if commit is not None else None
        captured = await capture(services, environment, source, commit=answer)
        created_by = await _requester(services, run_id)
        await seal(backup, captured, kind=kind, created_by=created_by, run_id=run_id)
    except Exception as error:
        log.warning("no provenance sidecar for %s: %s", backup.name, _said(error))
        return f"no provenance sidecar ({_said(error)})"
    return ""


# -- Reading ------------------------------------------------------------------------------


class SidecarStatus(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    PRESENT = "present"


@dataclass(frozen=True)
class Sidecar:
    status: SidecarStatus
    provenance: Provenance | None = None
    problem: str = ""  # why a malformed one is not trusted


def _malformed(problem: str) -> Sidecar:
    return Sidecar(SidecarStatus.MALFORMED, problem=problem)


def load_sidecar(backup_path: Path) -> Sidecar:
    """The sidecar beside `backup_path`: missing, malformed (and why), or its provenance.
    A link, a fifo or anything but a small regular file is malformed, never followed."""
    path = sidecar_path(backup_path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return Sidecar(SidecarStatus.MISSING)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return _malformed("a symbolic link, not a file the bot wrote")
        return _malformed(f"cannot be read: {error.strerror or error}")
    try:
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return _malformed("not a regular file")
            if info.st_size > MAX_SIDECAR_BYTES:
                return _malformed(f"too large ({info.st_size:,} bytes)")
            raw = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as error:
        return _malformed(f"cannot be read: {error.strerror or error}")
    try:
        return Sidecar(SidecarStatus.PRESENT, Provenance.model_validate_json(raw))
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return _malformed(f"{where}: {first['msg']}" if where else first["msg"])


def read_provenance(backup_path: Path) -> Provenance | None:
    """The backup's provenance; None when its sidecar is missing or malformed."""
    return load_sidecar(backup_path).provenance


class Check(StrEnum):
    VERIFIED = "verified"  # the file's sha256 is the recorded one
    CHANGED = "changed"  # its size or sha256 is not the recorded one
    UNCHECKED = "unchecked"  # its size is the recorded one; not hashed (listing's budget)
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Listed:
    """A backup of the catalogue with what its sidecar says, and whether the bytes match."""

    backup: Backup
    sidecar: Sidecar
    check: Check | None = None  # None without a provenance

    @property
    def provenance(self) -> Provenance | None:
        return self.sidecar.provenance

    @property
    def problem(self) -> str | None:
        """Why its sidecar is not trusted, if it has a malformed one."""
        if self.sidecar.status is SidecarStatus.MALFORMED:
            return f"provenance sidecar malformed: {self.sidecar.problem}"
        return None

    @property
    def commit(self) -> str:
        known = self.provenance
        return known.deployed_commit[:12] if known and known.deployed_commit else "?"

    @property
    def schema(self) -> str | None:
        """The schema version, '?' if it was not known; None where none is configured."""
        known = self.provenance
        if known is None or known.migrations_kind is None:
            return None
        return known.schema_version or "?"

    @property
    def verdict(self) -> str:
        return _CHECK_WORDS[self.check or Check.UNCHECKED]

    @property
    def suspect(self) -> bool:
        """Malformed, or bytes that are not the recorded ones: shown as a warning."""
        return self.problem is not None or self.check in (Check.CHANGED, Check.UNREADABLE)

    def facts(self) -> list[str]:
        """Its provenance in short phrases (text from files: escape it where shown)."""
        if self.problem is not None:
            return [self.problem]
        known = self.provenance
        if known is None:
            return []
        run = f", run {known.run_id}" if known.run_id else ""
        facts = [f"{known.kind.value} by {known.created_by}{run}", f"commit {self.commit}"]
        if self.schema is not None:
            facts.append(f"schema {self.schema}")
        return [*facts, self.verdict]


def as_listed(item: Backup | Listed) -> Listed:
    """A plain Backup (no sidecar read) as a listed one."""
    return item if isinstance(item, Listed) else Listed(item, Sidecar(SidecarStatus.MISSING))


_CHECK_WORDS = {
    Check.VERIFIED: "sha256 verified",
    Check.CHANGED: "CHANGED since it was taken (sha256 differs)",
    Check.UNCHECKED: "sha256 not checked (size matches)",
    Check.UNREADABLE: "unreadable",
}


def _check(backup: Backup, provenance: Provenance, budget: int) -> tuple[Check, int]:
    """The check and the hashing budget left."""
    if backup.size_bytes != provenance.size_bytes:
        return Check.CHANGED, budget
    if backup.size_bytes > budget:
        return Check.UNCHECKED, budget
    try:
        same = file_sha256(backup.path) == provenance.sha256
    except OSError:
        return Check.UNREADABLE, budget
    return (Check.VERIFIED if same else Check.CHANGED), budget - backup.size_bytes


def _describe(backups: list[Backup], verify_bytes: int) -> list[Listed]:
    listed: list[Listed] = []
    budget = verify_bytes
    for backup in backups:
        sidecar = load_sidecar(backup.path)
        check = None
        if sidecar.provenance is not None:
            check, budget = _check(backup, sidecar.provenance, budget)
        listed.append(Listed(backup, sidecar, check))
    return listed


async def list_with_provenance(
    environment: Environment, *, verify_bytes: int = VERIFY_BYTES
) -> list[Listed]:
    """The catalogue's backups (newest first), each with its sidecar; the newest are hashed
    against their recorded sha256 up to `verify_bytes` in all."""
    found = await catalogue.list_backups(environment)
    return await asyncio.to_thread(_describe, found, verify_bytes)


# -- Pairing a backup with code ----------------------------------------------------------


def schema_mismatch(
    backup: Provenance | None,
    other: Provenance | SchemaVersion | str | None,
    *,
    other_label: str = "the code it is paired with",
) -> str | None:
    """A warning when the backup's schema version and the other's are both known and
    differ; None when they agree or either is unknown.

    `other`: another backup's provenance (e.g. one taken at the target commit), the live
    database's `SchemaVersion` (the code deployed now), or a version string.
    """
    mine = backup.schema_version if backup is not None else None
    if isinstance(other, Provenance):
        theirs = other.schema_version
    elif isinstance(other, SchemaVersion):
        theirs = other.version
    else:
        theirs = other
    if backup is None or mine is None or theirs is None or mine == theirs:
        return None
    return (
        f"schema mismatch: {backup.backup} is at schema version {mine}, {other_label} at "
        f"{theirs}; the application may fail on this data"
    )
