"""What an approval of a database rollback is bound to: the plan and its backup's bytes.

A plan is bound to the checksum of the backup it restores (a copy in the bot's folder,
services/approved_copy.py); its hash is what approvers approve, so a changed backup changes
the hash and earlier approvals stop counting. (Code and full rollbacks add the commits and
the branch tip: services/code_rollback.py, services/full_rollback.py.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from services import approved_copy
from services.bundle import Services
from services.workflow import RollbackPlan, plan_rollback


def plan_hash(
    environment: str, backup: str, sha256: str, strategy: str, cutover_mode: str = "stop"
) -> str:
    """What an approval is bound to. The cut-over mode changes what the application sees,
    so it counts; `stop` adds nothing, so hashes (and approvals) from before it stay valid."""
    parts = [environment, backup, sha256, strategy]
    if cutover_mode != "stop":
        parts.append(cutover_mode)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BoundPlan:
    """A plan with the checksum of its backup: what approvers approve."""

    plan: RollbackPlan
    sha256: str
    requested_backup: str | None  # None: "the newest", so a newer backup changes the plan

    @property
    def hash(self) -> str:
        return plan_hash(
            self.plan.environment.name,
            self.plan.backup.name,
            self.sha256,
            self.plan.strategy.value,
            self.plan.cutover_mode.value,
        )

    def columns(self) -> dict[str, str | None]:
        """The run's backup and strategy columns."""
        return {
            "backup_name": self.plan.backup.name,
            "backup_sha256": self.sha256,
            "strategy": self.plan.strategy.value,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.plan.summary(),
            "backup_sha256": self.sha256,
            "backup_identity": self.plan.backup.identity,
            "plan_hash": self.hash,
            "requested_backup": self.requested_backup,
            "backup_age_seconds": round(self.plan.backup_age_seconds),
            "planned_at": self.plan.planned_at.isoformat(),
        }


async def bind_plan(
    services: Services,
    environment: str,
    requested_backup: str | None,
    *,
    own_run_id: str | None = None,
    known: dict[str, Any] | None = None,
) -> BoundPlan:
    """The plan bound to the bytes it restores: the backup is copied into the bot's folder
    and hashed in one pass (services/approved_copy.py); every restore reads that copy.

    `known`: the run's recorded plan, if any. The same unchanged file (inode, size,
    modification and change times: a rewrite changes the last even when the others are put
    back) keeps its recorded checksum and copy, instead of seconds of I/O on every click.
    """
    plan = await plan_rollback(services, environment, requested_backup, own_run_id=own_run_id)
    recorded = known or {}
    folder = plan.environment.backups_dir
    copy = None
    if (
        plan.backup.identity
        and recorded.get("backup") == plan.backup.name
        and recorded.get("backup_identity") == plan.backup.identity
        and recorded.get("backup_sha256")
    ):
        copy = await approved_copy.existing_copy(folder, str(recorded["backup_sha256"]))
    if copy is None:
        copy = await approved_copy.take_copy(plan.backup, folder)
    return BoundPlan(replace(plan, approved=copy), copy.sha256, requested_backup)


def describe_change(before: dict[str, Any], after: BoundPlan) -> str:
    """Why a plan is no longer the one approved, in one sentence."""
    reasons = []
    if before.get("backup") != after.plan.backup.name:
        reasons.append(f"backup {before.get('backup')} was replaced by {after.plan.backup.name}")
    elif before.get("backup_sha256") != after.sha256:
        reasons.append(f"the file {after.plan.backup.name} changed (its checksum differs)")
    if before.get("strategy") != after.plan.strategy.value:
        reasons.append(f"strategy {before.get('strategy')} became {after.plan.strategy.value}")
    mode = after.plan.cutover_mode.value
    if before.get("cutover_mode", "stop") != mode:
        reasons.append(f"cut-over mode {before.get('cutover_mode', 'stop')} became {mode}")
    return "; ".join(reasons) or "the plan changed"
