"""Typed configuration of one environment, as the services receive it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Strategy(StrEnum):
    IN_PLACE = "in-place"
    SWAP = "swap"


class HttpCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    expected_status: int = Field(default=200, ge=100, le=599)
    timeout_seconds: float = Field(default=5.0, gt=0)


class HealthConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    http: tuple[HttpCheck, ...] = ()
    sql_probe: str = "SELECT 1"
    check_containers: bool = True
    deadline_seconds: float = Field(default=60.0, gt=0)
    interval_seconds: float = Field(default=1.0, gt=0)


class Timeouts(BaseModel):
    """How long each kind of wait may last before it is an ordinary, reported failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    docker_seconds: float = Field(default=30.0, gt=0)  # one Docker engine call (stop: + grace)
    connect_seconds: float = Field(default=10.0, gt=0)  # opening a PostgreSQL connection
    query_seconds: float = Field(default=300.0, gt=0)  # one SQL statement (ANALYZE, counts)
    # lock_timeout of the rename and pg_dump's --lock-wait-timeout: a session holding a
    # lock makes the step fail fast instead of keeping the application down.
    lock_seconds: float = Field(default=5.0, gt=0)
    dump_seconds: float = Field(default=3600.0, gt=0)  # pg_dump (safety backup, old database)
    restore_seconds: float = Field(default=3600.0, gt=0)  # pg_restore (in place, staging)
    preflight_seconds: float = Field(default=600.0, gt=0)  # the whole pre-flight


class ApprovalPolicy(BaseModel):
    """Who may request and approve; Slack user IDs (U…) and user group IDs (S…)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requesters: tuple[str, ...] = ()  # empty: anyone in the workspace may request
    approvers: tuple[str, ...] = ()  # empty: anyone but the requester may approve
    required_approvals: int = Field(default=1, ge=0)
    allow_self_approval: bool = False
    expiry_minutes: float = Field(default=30.0, gt=0)
    escalate_after_minutes: float | None = Field(default=None, gt=0)


class Contacts(BaseModel):
    """Emergency contacts: notified when a rollback is requested and when it ends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[str, ...] = ()
    usergroups: tuple[str, ...] = ()
    escalation_users: tuple[str, ...] = ()
    escalation_usergroups: tuple[str, ...] = ()
    channel: str | None = None


class GitTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: Path
    remote: str = "origin"
    branch: str = "main"


class Environment(BaseModel):
    """One environment: its Compose project, database, backups and health checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    compose_project: str
    database_url: SecretStr  # full URL, password included; never printed
    database_display: str  # the URL with the password masked, safe to show
    backups_dir: Path
    env_file: Path | None = None
    stop_timeout_seconds: float = Field(default=10.0, gt=0)
    restore_jobs: int = Field(default=2, ge=1)
    # The in-place safety backup is taken while the application is down: fast gzip.
    safety_backup_compression: int = Field(default=1, ge=0, le=9)
    strategy: Strategy = Strategy.SWAP  # falls back to in-place where there is no room
    keep_old_database_hours: float = Field(default=24.0, ge=0)  # swap: instant undo window
    # swap: the data-loss preview counts tables exactly up to this many MB in all, and
    # estimates the rest; it ends within the timeout whatever the database's size.
    preview_exact_mb: float = Field(default=256.0, ge=0)
    preview_timeout_seconds: float = Field(default=15.0, gt=0)
    health: HealthConfig = HealthConfig()
    timeouts: Timeouts = Timeouts()
    approval: ApprovalPolicy = ApprovalPolicy()
    contacts: Contacts = Contacts()
    git: GitTarget | None = None

    @property
    def database_name(self) -> str:
        return self.database_display.rsplit("/", 1)[-1].split("?", 1)[0]
