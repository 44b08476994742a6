"""The environments file (TOML): parsed, validated, and resolved into typed environments.

Defaults follow the runbook's layout: `instances/<env>/.env` and `instances/<env>/backups/`,
relative to the file's folder, so a team that used the shell scripts points the bot at the
same folders.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bot.docker_endpoints import check_endpoint
from services import names
from services.environments import (
    STACK_PAUSE,
    ApprovalPolicy,
    Contacts,
    CutoverMode,
    Environment,
    GitTarget,
    HealthConfig,
    MigrationsTable,
    Strategy,
    Timeouts,
    mode_problem,
)
from services.errors import ConfigError, InvalidName
from services.git import remote_url
from services.pgtools import has_password, mask_password, same_database, url_problems


class EnvironmentEntry(BaseModel):
    """One `[environments.<name>]` table as written in the file."""

    model_config = ConfigDict(extra="forbid")

    # Exactly one of the two; neither: the Compose project named like the environment.
    compose_project: str | None = None
    stack: str | None = None  # a Swarm stack: its services' com.docker.stack.namespace
    docker_endpoint: str | None = None  # unix:///path or tcp://host:port; default: local
    docker_tls_ca: Path | None = None
    docker_tls_cert: Path | None = None
    docker_tls_key: Path | None = None
    docker_tls: bool | None = None  # tcp:// without TLS only when this says false
    database_url: str | None = None
    database_password_env: str | None = None
    database_url_env: str | None = None
    backups_dir: Path | None = None
    env_file: Path | None = None
    stop_timeout_seconds: float = Field(default=10.0, gt=0)
    restore_jobs: int = Field(default=2, ge=1)
    safety_backup_compression: int = Field(default=1, ge=0, le=9)
    strategy: Strategy = Strategy.SWAP
    cutover_mode: CutoverMode = CutoverMode.STOP
    keep_old_database_hours: float = Field(default=24.0, ge=0)
    preview_exact_mb: float = Field(default=256.0, ge=0)
    preview_timeout_seconds: float = Field(default=15.0, gt=0)
    health: HealthConfig = HealthConfig()
    timeouts: Timeouts = Timeouts()
    approval: ApprovalPolicy = ApprovalPolicy()
    contacts: Contacts = Contacts()
    git: GitEntry | None = None
    migrations_table: MigrationsTable | None = None
    monitor_minutes: float = Field(default=10.0, ge=0)
    monitor_interval_seconds: float = Field(default=30.0, gt=0)
    # Names of variables (the process's, or the instance .env's) holding values the
    # application may print: scrubbed from log excerpts and the bot's own log.
    secrets_env: tuple[str, ...] = ()


class GitEntry(GitTarget):
    """`[environments.<name>.git]` as written: workdir may be left out."""

    workdir: Path | None = None  # type: ignore[assignment]


class EnvironmentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances_dir: Path = Path("instances")
    environments: dict[str, EnvironmentEntry] = Field(min_length=1)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _read_env_file(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _database_url(
    name: str, entry: EnvironmentEntry, env_file_values: Mapping[str, str], problems: list[str]
) -> str | None:
    """The environment's URL with its password, from the file, the process or the .env file."""

    def lookup(variable: str) -> str | None:
        return os.environ.get(variable) or env_file_values.get(variable)

    key = f"environments.{name}"
    if entry.database_url_env:
        url = lookup(entry.database_url_env)
        if not url:
            problems.append(f"{key}.database_url_env: variable {entry.database_url_env} is not set")
            return None
        # The variable holds the whole URL, its password included.
        unfit = url_problems(url)
        problems += [f"{key}.database_url_env ({entry.database_url_env}): {p}" for p in unfit]
        return None if unfit else url
    if entry.database_url:
        unfit = url_problems(entry.database_url)
        if has_password(entry.database_url):
            unfit.append(
                "must not contain a password (neither user:password@ nor ?password=); "
                "name the variable that holds it in database_password_env"
            )
        problems += [f"{key}.database_url: {p}" for p in unfit]
        if unfit:
            return None
        parts = urlsplit(entry.database_url)
        if not entry.database_password_env:
            return entry.database_url
        password = lookup(entry.database_password_env)
        if password is None:
            problems.append(
                f"{key}.database_password_env: variable {entry.database_password_env} is not set"
            )
            return None
        user = parts.username or "postgres"
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        return parts._replace(netloc=netloc).geturl()
    # The runbook's instance .env: the variables of the official postgres image.
    database = env_file_values.get("POSTGRES_DB")
    if not database:
        problems.append(
            f"{key}.database_url: not set, and no POSTGRES_DB in the environment's .env file"
        )
        return None
    user = env_file_values.get("POSTGRES_USER", "postgres")
    password = env_file_values.get("POSTGRES_PASSWORD", "")
    host = env_file_values.get("POSTGRES_HOST", "127.0.0.1")
    port = env_file_values.get("POSTGRES_PORT", "5432")
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{quote(user, safe='')}{secret}@{host}:{port}/{database}"


def _git_target(
    name: str, entry: GitEntry, base: Path, instances: Path, problems: list[str]
) -> GitTarget:
    """Paths resolved against the file's folder (workdir: instances/<env>/git by default);
    the URL checked, and the credentials' variables set in the process environment."""
    key = f"environments.{name}.git"
    url = entry.url
    if remote_url.is_local_path(url):
        url = str(base / url)
    unfit = remote_url.url_problems(entry.url, sends_token=bool(entry.token_env))
    problems += [f"{key}.url: {p}" for p in unfit]
    if entry.version_url is not None:
        version = urlsplit(entry.version_url)
        if version.scheme not in ("http", "https") or not version.hostname:
            problems.append(f"{key}.version_url: must be an http:// or https:// URL")
        elif "@" in version.netloc:
            problems.append(f"{key}.version_url: must not contain a user name or password")
    # The same rule as credentials_from_environment: a token is never empty.
    if entry.token_env is not None and not os.environ.get(entry.token_env):
        problems.append(f"{key}.token_env: variable {entry.token_env} is not set")
    if entry.ssh_passphrase_env is not None and entry.ssh_passphrase_env not in os.environ:
        problems.append(f"{key}.ssh_passphrase_env: variable {entry.ssh_passphrase_env} is not set")
    if entry.ssh_key is not None and not (base / entry.ssh_key).is_file():
        problems.append(f"{key}.ssh_key: {base / entry.ssh_key} is not a file")
    workdir = base / entry.workdir if entry.workdir else instances / name / "git"
    fields = entry.model_dump(exclude={"url", "workdir", "ssh_key"})
    return GitTarget(
        **fields,
        url=url,
        workdir=workdir,
        ssh_key=base / entry.ssh_key if entry.ssh_key else None,
    )


def _monitoring_problems_and_secrets(
    name: str, entry: EnvironmentEntry, env_file_values: Mapping[str, str], problems: list[str]
) -> tuple[SecretStr, ...]:
    """The window must hold at least one check; each named secret must be set."""
    key = f"environments.{name}"
    if entry.monitor_minutes and entry.monitor_interval_seconds > entry.monitor_minutes * 60:
        problems.append(
            f"{key}.monitor_interval_seconds: {entry.monitor_interval_seconds:g} is longer than "
            f"the monitoring window (monitor_minutes = {entry.monitor_minutes:g}): no check "
            "would run in it"
        )
    secrets = []
    for variable in entry.secrets_env:
        value = os.environ.get(variable) or env_file_values.get(variable)
        if not value:
            problems.append(f"{key}.secrets_env: variable {variable} is not set")
        else:
            secrets.append(SecretStr(value))
    return tuple(secrets)


# Docker Compose's project names; stack names as `docker stack deploy` takes them.
_COMPOSE_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _workload(name: str, entry: EnvironmentEntry, problems: list[str]) -> str | None:
    """The Compose project or the stack: exactly one, and a name Docker would accept."""
    key = f"environments.{name}"
    if entry.compose_project is not None and entry.stack is not None:
        problems.append(
            f"{key}: names both compose_project and stack; an environment is one or the other"
        )
        return None
    if entry.stack is not None:
        if entry.cutover_mode is CutoverMode.PAUSE:
            problems.append(f"{key}.cutover_mode: {STACK_PAUSE}")
            return None
        if not _STACK.match(entry.stack):
            problems.append(
                f"{key}.stack: {entry.stack[:64]!r} is not a stack name "
                "(letters, digits, _ . -, starting with a letter or digit)"
            )
            return None
        return entry.stack
    project = entry.compose_project or name
    if not _COMPOSE_PROJECT.match(project):
        problems.append(
            f"{key}.compose_project: {project[:64]!r} is not a Compose project name "
            "(lowercase letters, digits, _ and -, starting with a letter or digit)"
        )
        return None
    return project


def load_environments(path: Path) -> dict[str, Environment]:
    """Read and check the whole file; every problem is reported, one line each."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: environments file not found (set ROLLBACK_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot be read: {error}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    try:
        parsed = EnvironmentsFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(
            [
                f"{path}: {_location(e['loc'])}: "
                + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
                for e in error.errors()
            ]
        ) from None

    base = path.resolve().parent
    instances = base / parsed.instances_dir
    problems: list[str] = []
    environments: dict[str, Environment] = {}
    for name, entry in parsed.environments.items():
        if not name.replace("-", "").replace("_", "").isalnum():
            problems.append(f"environments.{name}: name must be letters, digits, - or _")
            continue
        try:
            names.check_environment_name(name)
        except InvalidName as error:
            problems.append(f"environments.{name[:40]}…: {error}")
            continue
        env_file = base / entry.env_file if entry.env_file else instances / name / ".env"
        backups_dir = (
            base / entry.backups_dir if entry.backups_dir else instances / name / "backups"
        )
        policy = entry.approval
        if (
            policy.escalate_after_minutes is not None
            and policy.escalate_after_minutes >= policy.expiry_minutes
        ):
            problems.append(
                f"environments.{name}.approval.escalate_after_minutes: "
                f"{policy.escalate_after_minutes:g} is not less than expiry_minutes "
                f"({policy.expiry_minutes:g}): the request would expire before it escalates"
            )
        mode = mode_problem(entry.strategy, entry.cutover_mode)
        if mode:
            problems.append(f"environments.{name}.cutover_mode: {mode}")
        workload = _workload(name, entry, problems)
        endpoint = check_endpoint(
            f"environments.{name}",
            entry.docker_endpoint,
            {
                "docker_tls_ca": entry.docker_tls_ca,
                "docker_tls_cert": entry.docker_tls_cert,
                "docker_tls_key": entry.docker_tls_key,
            },
            entry.docker_tls,
            base,
            problems,
        )
        env_file_values = _read_env_file(env_file)
        url = _database_url(name, entry, env_file_values, problems)
        secrets = _monitoring_problems_and_secrets(name, entry, env_file_values, problems)
        if url is None or mode or workload is None:
            continue
        environments[name] = Environment(
            name=name,
            compose_project=workload if entry.stack is None else None,
            stack=entry.stack,
            docker_endpoint=endpoint,
            database_url=SecretStr(url),
            database_display=mask_password(url),
            backups_dir=backups_dir,
            env_file=env_file if env_file.exists() else None,
            stop_timeout_seconds=entry.stop_timeout_seconds,
            restore_jobs=entry.restore_jobs,
            safety_backup_compression=entry.safety_backup_compression,
            strategy=entry.strategy,
            cutover_mode=entry.cutover_mode,
            keep_old_database_hours=entry.keep_old_database_hours,
            preview_exact_mb=entry.preview_exact_mb,
            preview_timeout_seconds=entry.preview_timeout_seconds,
            health=entry.health,
            timeouts=entry.timeouts,
            approval=entry.approval,
            contacts=entry.contacts,
            git=_git_target(name, entry.git, base, instances, problems) if entry.git else None,
            migrations_table=entry.migrations_table,
            monitor_minutes=entry.monitor_minutes,
            monitor_interval_seconds=entry.monitor_interval_seconds,
            secrets=secrets,
        )
    for name, environment in environments.items():
        if not environment.backups_dir.is_dir():
            problems.append(
                f"environments.{name}.backups_dir: {environment.backups_dir} is not a folder"
            )
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return environments


def store_problems(store_url: str | None, environments: Mapping[str, Environment]) -> list[str]:
    """The bot's own store (DATABASE_URL) on an environment's database: a rollback of that
    environment would wipe the runs, approvals and audit log with it."""
    if not store_url:
        return []
    return [
        f"DATABASE_URL: the bot's run store is the database of environment {name} "
        f"({environment.database_display}); a rollback of it would wipe the store. "
        "Give the bot a database of its own."
        for name, environment in environments.items()
        if same_database(store_url, environment.database_url.get_secret_value())
    ]
