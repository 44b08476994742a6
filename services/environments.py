"""Typed configuration of one environment, as the services receive it."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from services import names
from services.errors import InvalidName

COMPOSE_LABEL = "com.docker.compose.project"
STACK_LABEL = "com.docker.stack.namespace"
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class Strategy(StrEnum):
    IN_PLACE = "in-place"
    SWAP = "swap"


class CutoverMode(StrEnum):
    """What happens to the environment's containers while the database is replaced."""

    STOP = "stop"  # the runbook's: stopped, started again after (the application boots)
    PAUSE = "pause"  # frozen (docker pause) and thawed after: no boot, requests wait
    KEEP = "keep"  # untouched: its sessions are ended at the rename and it reconnects


# A stack's tasks run on whichever nodes Swarm chose; the manager's API cannot freeze them.
STACK_PAUSE = (
    "pause freezes containers through their own engine, and a Swarm stack's tasks run on "
    "the swarm's nodes: use keep (with swap) or stop"
)


def mode_problem(strategy: Strategy, mode: CutoverMode) -> str | None:
    """Why a cut-over mode cannot go with a strategy (None: it can)."""
    if strategy is Strategy.IN_PLACE and mode is CutoverMode.KEEP:
        return (
            'keep needs strategy = "swap": in place, a running application would write '
            "while the safety backup is taken and the database is emptied and restored, and "
            "those writes would be lost; use pause (frozen during the restore) or stop"
        )
    return None


class HttpCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    expected_status: int = Field(default=200, ge=100, le=599)
    timeout_seconds: float = Field(default=5.0, gt=0)
    # The Compose service behind the endpoint: whose logs the thread gets when it fails
    # (unset: every container of the project, up to the excerpt's limit).
    service: str | None = None


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


class DockerTls(BaseModel):
    """Client certificates for a tcp:// engine: the CA that signed the engine's certificate,
    and this bot's certificate and key (as `docker --tlsverify` uses them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca: Path
    cert: Path
    key: Path


class DockerEndpoint(BaseModel):
    """A Docker engine other than the local default: `unix:///path` or `tcp://host:port`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    tls: DockerTls | None = None  # tcp:// without it only when the file says docker_tls = false

    @property
    def client_url(self) -> str:
        """The address aiodocker speaks HTTP(S) to."""
        if self.url.startswith("tcp://"):
            return ("https://" if self.tls else "http://") + self.url.removeprefix("tcp://")
        return self.url


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


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DeployedSource(StrEnum):
    """How the bot knows which commit runs: the branch tip, the newest matching tag, or
    what the application's version endpoint reports."""

    BRANCH = "branch"
    TAG = "tag"
    ENDPOINT = "endpoint"


def _valid(check: Callable[[], object]) -> None:
    """A names.* check as a pydantic validator (pydantic reports ValueError)."""
    try:
        check()
    except InvalidName as error:
        raise ValueError(str(error)) from None


class GitTarget(BaseModel):
    """The environment's code: the remote and branch whose push deploys it (services/git)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # https://…, ssh://…, user@host:path or a local path; never credentials (token_env).
    url: str
    # The bot's own bare clone, created on first use; the environments file defaults it to
    # instances/<env>/git.
    workdir: Path
    remote: str = "origin"
    branch: str = "main"
    deployed: DeployedSource = DeployedSource.BRANCH
    tag_pattern: str | None = None  # deployed = "tag": e.g. "deploy/production/*"
    version_url: str | None = None  # an endpoint answering JSON that names the running commit
    version_field: str = "commit"  # its field; dots go down into objects ("build.sha")
    version_wait_seconds: float = Field(default=300.0, ge=0)  # after a push; 0: do not wait
    version_poll_seconds: float = Field(default=5.0, gt=0)
    version_timeout_seconds: float = Field(default=5.0, gt=0)  # one request to the endpoint
    # Credentials come from the process environment only: the NAME of the variable.
    token_env: str | None = None  # HTTPS: a token sent as the password of `username`
    username: str = "x-access-token"
    ssh_key: Path | None = None  # SSH: the private key's path (public key: ssh_key + ".pub")
    ssh_passphrase_env: str | None = None
    committer_name: str = "rollback-bot"
    committer_email: str = "rollback-bot@localhost"
    timeout_seconds: float = Field(default=120.0, gt=0)  # one fetch or push, in all
    max_revert_commits: int = Field(default=50, ge=1)  # reverting back to an older commit

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        _valid(lambda: names.check_ref_name(value, "branch name"))
        return value

    @field_validator("remote")
    @classmethod
    def _remote(cls, value: str) -> str:
        _valid(lambda: names.check_ref_name(value, "remote name", "refs/remotes/"))
        if "/" in value:
            raise ValueError("The remote name must not contain '/'.")
        return value

    @field_validator("tag_pattern")
    @classmethod
    def _tag_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            # Only '*' is a wildcard; the rest must be a tag name git accepts.
            _valid(
                lambda: names.check_ref_name(value.replace("*", "x"), "tag pattern", "refs/tags/")
            )
        return value

    @field_validator("token_env", "ssh_passphrase_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.fullmatch(value):
            raise ValueError("must be the NAME of an environment variable (A-Z, 0-9, _)")
        return value

    @field_validator("username", "committer_name", "committer_email")
    @classmethod
    def _signature_text(cls, value: str) -> str:
        if not value or not value.isprintable() or any(c in value for c in "<>:"):
            raise ValueError("must be printable, without '<', '>' or ':'")
        return value

    @model_validator(mode="after")
    def _source_complete(self) -> GitTarget:
        if self.deployed is DeployedSource.TAG and not self.tag_pattern:
            raise ValueError('deployed = "tag" needs tag_pattern (e.g. "deploy/production/*")')
        if self.deployed is DeployedSource.ENDPOINT and not self.version_url:
            raise ValueError('deployed = "endpoint" needs version_url')
        if self.token_env and self.ssh_key:
            raise ValueError("give token_env (HTTPS) or ssh_key (SSH), not both")
        return self


class MigrationsKind(StrEnum):
    """The migration tools whose table says which schema version a database is at."""

    ALEMBIC = "alembic_version"
    DJANGO = "django_migrations"
    RAILS = "schema_migrations"  # Rails, golang-migrate
    FLYWAY = "flyway_schema_history"


class MigrationsTable(BaseModel):
    """Where the schema's migration version is read: a kind, and its table if not named so.

    In the file: `migrations_table = "alembic_version"`, or
    `migrations_table = { kind = "flyway_schema_history", table = "app.schema_history" }`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MigrationsKind
    table: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind_alone(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @field_validator("table")
    @classmethod
    def _identifier(cls, table: str | None) -> str | None:
        # Unquoted SQL identifiers (PostgreSQL folds them to lower case): nothing else can
        # reach the query.
        if table is not None and not _TABLE_NAME.match(table):
            raise ValueError(
                "must be a table name, optionally schema-qualified (schema.table): "
                "letters, digits and _, at most 63 each"
            )
        return table

    @property
    def table_name(self) -> str:
        return self.table or self.kind.value


class Environment(BaseModel):
    """One environment: its Compose project or Swarm stack, database, backups and health checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    # Exactly one: the containers of a Compose project, or the services of a Swarm stack.
    compose_project: str | None = None
    stack: str | None = None
    docker_endpoint: DockerEndpoint | None = None  # None: the local engine (DOCKER_HOST)
    database_url: SecretStr  # full URL, password included; never printed
    database_display: str  # the URL with the password masked, safe to show
    backups_dir: Path
    env_file: Path | None = None
    stop_timeout_seconds: float = Field(default=10.0, gt=0)
    restore_jobs: int = Field(default=2, ge=1)
    # The in-place safety backup is taken while the application is down: fast gzip.
    safety_backup_compression: int = Field(default=1, ge=0, le=9)
    strategy: Strategy = Strategy.SWAP  # falls back to in-place where there is no room
    cutover_mode: CutoverMode = CutoverMode.STOP  # keep: stop instead where it runs in place
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
    migrations_table: MigrationsTable | None = None  # provenance: the schema version
    # After a successful rollback the bot keeps checking health for this long (0: not at
    # all), every monitor_interval_seconds (services/monitoring.py).
    monitor_minutes: float = Field(default=10.0, ge=0)
    monitor_interval_seconds: float = Field(default=30.0, gt=0)
    # Values the application may print (API keys, …): never shown in a log excerpt, nor in
    # the bot's log. The database password is always among them.
    secrets: tuple[SecretStr, ...] = ()

    @model_validator(mode="after")
    def _mode_fits_strategy(self) -> Environment:
        problem = mode_problem(self.strategy, self.cutover_mode)
        if problem:
            raise ValueError(f"cutover_mode: {problem}")
        return self

    @model_validator(mode="after")
    def _one_workload(self) -> Environment:
        if (self.compose_project is None) == (self.stack is None):
            raise ValueError("name either compose_project or stack, exactly one")
        if self.stack is not None and self.cutover_mode is CutoverMode.PAUSE:
            raise ValueError(f"cutover_mode: {STACK_PAUSE}")
        return self

    @property
    def workload(self) -> str:
        """The name the runtime knows this environment's containers by (see
        services/runtimes.py): the Compose project on the local engine, as it always was;
        otherwise one that says what and where, so two hosts may both run a project `app`."""
        if self.stack is None and self.docker_endpoint is None:
            assert self.compose_project is not None
            return self.compose_project
        kind = "compose" if self.stack is None else "stack"
        return f"{kind} {self.compose_project or self.stack} on {self.engine}"

    @property
    def engine(self) -> str:
        return self.docker_endpoint.url if self.docker_endpoint else "the local engine"

    @property
    def workload_description(self) -> str:
        """What the bot stops and starts, as a responder reads it."""
        if self.stack is not None:
            what = f"Swarm stack '{self.stack}' (label {STACK_LABEL})"
        else:
            what = f"Compose project '{self.compose_project}' (label {COMPOSE_LABEL})"
        return what + (f" on {self.docker_endpoint.url}" if self.docker_endpoint else "")

    @property
    def database_name(self) -> str:
        return self.database_display.rsplit("/", 1)[-1].split("?", 1)[0]
