"""A named backup taken now: the runbook's `backup-database.sh production pre-deployment-…`.

`<label>-YYYYMMDD-HHMMSS.dump` in the environment's backups folder: written aside, fsynced,
checked readable (`pg_restore --list`), renamed into place; then its provenance sidecar
with the sha256. The dump is written by `database.dump_database`, with the client tools
chosen for the server as a rollback chooses them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from services import database, names, provenance
from services.backups import Backup
from services.bundle import Services
from services.errors import BackupError, ProvenanceError
from services.pgtools import ToolChoice, choose_tools
from services.provenance import BackupKind, Provenance
from services.workflow import target_for

DEFAULT_LABEL = "manual"


@dataclass(frozen=True)
class TakenBackup:
    backup: Backup
    provenance: Provenance
    tools: ToolChoice
    seconds: float


async def take_backup(
    services: Services, environment_name: str, *, label: str | None, requested_by: str
) -> TakenBackup:
    """Dump the environment's database now. InvalidName for a bad label (nothing written),
    ProvenanceError if the dump was written but its sidecar could not be."""
    label = names.backup_label(label if label is not None else DEFAULT_LABEL)
    environment = services.environment(environment_name)
    began = time.monotonic()
    folder = environment.backups_dir
    if not await asyncio.to_thread(folder.is_dir):
        raise BackupError(f"The backups folder {folder} of {environment.name} is not a folder.")
    live = target_for(services, environment)
    tools = await choose_tools(
        services.tool_candidates,
        server_major=await database.server_major(live),
        archive=None,
        timeout=environment.timeouts.preflight_seconds,
    )
    target = target_for(services, environment, tools.tools)
    now = datetime.now(UTC)
    destination = folder / f"{label}-{now:%Y%m%d-%H%M%S}.dump"
    if await asyncio.to_thread(destination.exists):
        raise BackupError(f"{destination.name} already exists; try again in a second.")
    # The schema version and the commit just before the dump's snapshot is taken.
    captured = await provenance.capture(services, environment, target)
    backup = await database.dump_database(target, destination)
    try:
        recorded = await provenance.seal(
            backup,
            captured,
            kind=BackupKind.for_label(label),
            created_by=requested_by,
            label=label,
            created_at=now,
        )
    except ProvenanceError as error:
        raise ProvenanceError(
            f"{error} The dump {backup.path} itself is complete and readable, without provenance."
        ) from error
    return TakenBackup(backup, recorded, tools, time.monotonic() - began)
