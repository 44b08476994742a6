"""The command line as an operator uses it: a real process, real files, real exit codes."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.cli import main
from sandbox.demo_environment import table_checksums
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.approvals import request_rollback
from services.environments import Environment
from services.permissions import NoGroups
from services.swap import derived_from
from tests import hostile
from tests.hostile import HOSTILE
from tests.services.conftest import Stage, change_after_backup, container_states


async def spawn(
    *args: str, env: dict[str, str] | None = None, **streams: Any
) -> asyncio.subprocess.Process:
    """A `rollback-bot` process (resolved from the cwd: the worktree under test)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, env={**os.environ, **(env or {})}, **streams
    )


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await spawn(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def environment_toml(
    env: Environment,
    strategy: str = "in-place",
    *,
    name: str | None = None,
    keys: str = "",
    cutover_mode: str | None = None,
) -> str:
    """The environment as the file writes it (`name`: under another name; `keys`: more
    keys of its own table, such as docker_endpoint)."""
    name = name or env.name
    http = "\n".join(
        f'[[environments.{name}.health.http]]\nname = "{c.name}"\nurl = "{c.url}"\n'
        for c in env.health.http
    )
    workload = (
        f'stack = "{env.stack}"' if env.stack else f'compose_project = "{env.compose_project}"'
    )
    mode = f'cutover_mode = "{cutover_mode}"' if cutover_mode else ""  # default: stop
    return f"""
[environments.{name}]
{workload}
database_url = "{env.database_url.get_secret_value()}"
backups_dir = "{env.backups_dir}"
stop_timeout_seconds = 5
strategy = "{strategy}"
{mode}
{keys}

[environments.{name}.health]
deadline_seconds = 20
interval_seconds = 0.2

{http}
"""


def write_config(
    stage: Stage,
    folder: Path,
    strategy: str = "in-place",
    *,
    more: str = "",
    cutover_mode: str | None = None,
    keys: str = "",
) -> Path:
    """`keys`: more keys of the environment's own table; `more`: more tables."""
    path = folder / "rollback.toml"
    text = environment_toml(stage.environment, strategy, keys=keys, cutover_mode=cutover_mode)
    path.write_text(text + more + "\n")
    return path


def store_env(pg: ThrowawayPostgres) -> dict[str, str]:
    return {"DATABASE_URL": pg.superuser_dsn("rollback_bot_store")}


async def test_rollback_with_yes_prints_each_step_and_the_state(
    stage: Stage,
    pg: ThrowawayPostgres,
    tmp_path: Path,
    docker: aiodocker.Docker,
    store_pool: object,
) -> None:
    config = write_config(stage, tmp_path)
    expected = await table_checksums(stage.dsn)
    await change_after_backup(stage.dsn)

    code, out, err = await cli(
        "--config", str(config), "rollback", stage.environment.name, "--yes", env=store_env(pg)
    )

    assert code == 0, err
    assert f"Rollback plan for {stage.environment.name}" in out
    assert stage.backup.name in out
    for label in ("Stop containers", "Safety backup", "Restore database", "Start containers"):
        assert f"✓ {label}" in out
    assert "Rollback SUCCEEDED" in out
    assert "pre-rollback-" in out
    assert await table_checksums(stage.dsn) == expected
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_dry_run_prints_the_plan_and_touches_nothing(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    config = write_config(stage, tmp_path)
    await change_after_backup(stage.dsn)
    before = await table_checksums(stage.dsn)

    code, out, _ = await cli(
        "--config",
        str(config),
        "rollback",
        stage.environment.name,
        "--dry-run",
        env=store_env(pg),
    )

    assert code == 0
    assert "Dry run: nothing was changed." in out
    assert await table_checksums(stage.dsn) == before
    assert sorted(p.name for p in stage.environment.backups_dir.iterdir()) == [stage.backup.name]


async def test_without_yes_and_without_a_terminal_nothing_happens(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    config = write_config(stage, tmp_path)
    code, _, err = await cli(
        "--config", str(config), "rollback", stage.environment.name, env=store_env(pg)
    )
    assert code == 2
    assert "pass --yes" in err


async def test_bad_input_is_one_line_and_exit_code_2(
    stage: Stage,
    pg: ThrowawayPostgres,
    tmp_path: Path,
    docker: aiodocker.Docker,
    store_pool: object,
) -> None:
    config = write_config(stage, tmp_path)
    env = store_env(pg)
    code, out, err = await cli("--config", str(config), "rollback", "nowhere", "--yes", env=env)
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"error: Unknown environment 'nowhere'. Known environments: {stage.environment.name}."
    )
    code, _, err = await cli(
        "--config",
        str(config),
        "rollback",
        stage.environment.name,
        "../../etc/passwd",
        "--yes",
        env=env,
    )
    assert code == 2
    assert "outside the backups folder" in err
    assert len(err.strip().splitlines()) == 1
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_backups_lists_newest_first_with_size_and_age(stage: Stage, tmp_path: Path) -> None:
    older = stage.environment.backups_dir / "pre-deployment-20240101-000000.dump"
    older.write_bytes(stage.backup.path.read_bytes())
    config = write_config(stage, tmp_path)
    code, out, _ = await cli("--config", str(config), "backups", stage.environment.name)
    assert code == 0
    lines = out.splitlines()
    names = [
        line.split()[0] for line in lines if line.endswith(("min", "h", "s")) or "days" in line
    ]
    assert names == [stage.backup.name, older.name]
    assert "KB" in out or "MB" in out


async def test_check_config_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "rollback.toml"
    bad.write_text(
        """
[environments.production]
database_url = "postgresql://app:secret@db/app"
stop_timeout_seconds = -1
colour = "blue"

[environments.production.health]
http = [{ name = "web" }]
"""
    )
    code, out, err = await cli("--config", str(bad), "check-config")
    assert code == 2 and out == ""
    problems = err.strip().splitlines()
    assert f"error: {bad}: environments.production.stop_timeout_seconds: " in problems[0]
    assert any("environments.production.health.http[0].url: Field required" in p for p in problems)
    assert any("environments.production.colour: unknown key" in p for p in problems)
    assert "secret" not in err

    bad.write_text('[environments.production]\ndatabase_url = "postgresql://app:secret@db/app"\n')
    code, _, err = await cli("--config", str(bad), "check-config")
    assert code == 2
    assert "must not contain a password" in err and "secret" not in err


async def test_check_config_accepts_the_runbook_layout(tmp_path: Path) -> None:
    instance = tmp_path / "instances" / "production"
    (instance / "backups").mkdir(parents=True)
    (instance / ".env").write_text("POSTGRES_DB=shop\nPOSTGRES_USER=shop\nPOSTGRES_PASSWORD=pw\n")
    config = tmp_path / "rollback.toml"
    config.write_text("[environments.production]\n")
    code, out, err = await cli("--config", str(config), "check-config")
    assert code == 0, err
    assert (
        "production: project production, database postgresql://shop:***@127.0.0.1:5432/shop" in out
    )
    assert "pw" not in out


async def test_check_config_describes_the_code_target_without_its_token(tmp_path: Path) -> None:
    """Issue 9: the git target in words; the token's variable named, its value nowhere."""
    (tmp_path / "backups").mkdir()
    config = tmp_path / "rollback.toml"
    config.write_text(
        '[environments.production]\ndatabase_url = "postgresql://app@db/app"\n'
        'backups_dir = "backups"\n[environments.production.git]\n'
        'url = "https://git.example.com/acme/app.git"\ntoken_env = "APP_GIT_TOKEN"\n'
        'deployed = "tag"\ntag_pattern = "deploy/production/*"\n'
    )
    code, out, err = await cli(
        "--config", str(config), "check-config", env={"APP_GIT_TOKEN": "tok-3f9a-secret"}
    )
    assert code == 0, err
    assert (
        "    code: branch main of https://git.example.com/acme/app.git, deployed: the newest tag "
        "deploy/production/*, token from APP_GIT_TOKEN, clone in "
        f"{tmp_path / 'instances/production/git'}\n"
    ) in out
    assert "tok-3f9a-secret" not in out + err

    code, out, err = await cli("--config", str(config), "check-config", env={"APP_GIT_TOKEN": ""})
    assert code == 2 and "git.token_env: variable APP_GIT_TOKEN is not set" in err


async def test_swap_rollback_then_undo_from_the_command_line(
    stage: Stage,
    pg: ThrowawayPostgres,
    tmp_path: Path,
    docker: aiodocker.Docker,
    store_pool: object,
) -> None:
    config = write_config(stage, tmp_path, strategy="swap")
    at_backup = await table_checksums(stage.dsn)
    await change_after_backup(stage.dsn)
    before = await table_checksums(stage.dsn)
    env = store_env(pg)

    code, out, err = await cli(
        "--config", str(config), "undo", stage.environment.name, "--yes", env=env
    )
    assert code == 1
    assert f"Nothing to undo for {stage.environment.name}" in err

    code, out, err = await cli(
        "--config", str(config), "rollback", stage.environment.name, "--yes", env=env
    )
    assert code == 0, err
    assert "✓ Swap the databases" in out and "old database  kept as" in out
    assert await table_checksums(stage.dsn) == at_backup

    code, out, err = await cli(
        "--config", str(config), "undo", stage.environment.name, "--yes", env=env
    )
    assert code == 0, err
    assert "✓ Swap the old database back" in out
    assert await table_checksums(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}
    for name in await _databases(pg):
        if derived_from(stage.database.name, name):
            await pg.drop_database(name)


async def _databases(pg: ThrowawayPostgres) -> list[str]:
    connection = await asyncpg.connect(pg.superuser_dsn())
    try:
        return [r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")]
    finally:
        await connection.close()


# -- issue 8: exit codes, bad arguments, hostile names, environments files with mistakes --


async def test_version_and_bad_arguments_are_one_line_without_a_traceback(
    tmp_path: Path,
) -> None:
    """issue 8: `history --limit -1` gave a traceback; no `--version`."""
    code, out, _ = await cli("--version")
    assert (code, out.strip()) == (0, f"rollback-bot {metadata.version('rollback-bot')}")
    for argv, words in (
        (["history", "production", "--limit", "-1"], "--limit: must be from 1 to 1,000"),
        (["history", "production", "--limit", "abc"], "--limit: not a whole number: 'abc'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: command"),
        (["rollback"], "required: environment"),
        (["rollback", "production", "--no-such-flag"], "unrecognized arguments"),
        (["demo", "--rows", "0"], "--rows: must be from 1"),
    ):
        code, out, err = await cli(*argv)
        assert (code, out) == (2, ""), (argv, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err


def hostile_config(folder: Path) -> Path:
    backups = folder / "backups"
    backups.mkdir(exist_ok=True)
    (backups / "pre-deployment-20240101-000000.dump").write_bytes(b"PGDMP")
    config = folder / "rollback.toml"
    config.write_text(
        f'[environments.production]\ndatabase_url = "postgresql://app@127.0.0.1:1/app"\n'
        f'backups_dir = "{backups}"\n'
    )
    return config


def files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_mtime_ns) for p in folder.rglob("*"))


def assert_one_clean_line(code: int, out: str, err: str) -> None:
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and not hostile.raw_control(err.rstrip("\n")), err
    assert "\nRollback SUCCEEDED" not in err


@settings(HOSTILE, max_examples=8)
@given(name=hostile.refused.filter(lambda n: "\x00" not in n))  # argv cannot carry a NUL
async def test_hostile_backup_names_through_the_cli_process(
    name: str, pg: ThrowawayPostgres, tmp_path: Path, store_pool: object
) -> None:
    """issue 8: one line, exit 2, nothing changed (a real `rollback-bot` process)."""
    config = hostile_config(tmp_path)
    before = files(tmp_path)
    code, out, err = await cli(
        "--config", str(config), "rollback", "production", name, "--yes", env=store_env(pg)
    )
    touched = files(tmp_path) != before
    hostile.tried(touched)
    assert not touched
    assert_one_clean_line(code, out, err)
    assert "backup" in err.lower()


@settings(HOSTILE, max_examples=150)
@given(name=hostile.anything.filter(lambda n: n.strip(" ") and "\x00" not in n))
def test_hostile_environment_names_through_the_cli(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 8: `backups <name>` and friends: one escaped line, exit 2."""
    config = hostile_config(tmp_path)
    code = main(["--config", str(config), "backups", name])
    out, err = capsys.readouterr()
    hostile.tried(touched=False)
    assert_one_clean_line(code, out, err)
    assert "environment" in err.lower()


# Mistakes in an environments file, each in its own environment: (TOML lines, the key
# the error must name, whether the schema check reports it (before the others)).
MISTAKES = {
    "unknown key": ('colour = "blue"', "colour: unknown key", True),
    "wrong type": ('stop_timeout_seconds = "soon"', "stop_timeout_seconds", True),
    "negative": ("keep_old_database_hours = -1", "keep_old_database_hours", True),
    "zero jobs": ("restore_jobs = 0", "restore_jobs", True),
    "compression": ("safety_backup_compression = 12", "safety_backup_compression", True),
    "strategy": ('strategy = "yolo"', "strategy", True),
    "approvals": ("approval.required_approvals = -1", "approval.required_approvals", True),
    "policy key": ('approval.approvers = "S0ONCALL"', "approval.approvers", True),
    "health url": ('health.http = [{ name = "web" }]', "health.http[0].url", True),
    "password": (
        'database_url = "postgresql://app:s3cret-pw@h/app"',
        "database_url: must not contain a password",
        False,
    ),
    "scheme": ('database_url = "mysql://h/app"', "database_url: must start with", False),
    "variable": ('database_url_env = "NO_SUCH_VARIABLE_8"', "database_url_env", False),
    "folder": ('backups_dir = "nowhere"', "backups_dir", False),
}


@settings(HOSTILE, max_examples=60)
@given(
    mistakes=st.lists(st.sampled_from(sorted(MISTAKES)), min_size=1, max_size=5, unique=True),
    bad_name=st.sampled_from(["", "bad name!", "a\nb", "x" * 300]),
)
def test_every_mistake_in_the_environments_file_is_one_line_naming_its_key(
    mistakes: list[str], bad_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 8: `check-config`: exit 2, one line per problem naming the key, no secret."""
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    sections = []
    for index, mistake in enumerate(mistakes):
        line = MISTAKES[mistake][0]
        url = "" if line.startswith("database_url") else 'database_url = "postgresql://a@h/app"\n'
        folder = "" if line.startswith("backups_dir") else f'backups_dir = "{backups}"\n'
        sections.append(f"[environments.env{index}]\n{url}{folder}{line}\n")
    if bad_name:
        escaped = bad_name.replace("\n", "\\n")
        sections.append(f'[environments."{escaped}"]\ndatabase_url = "postgresql://a@h/app"\n')
    config = tmp_path / "rollback.toml"
    config.write_text("\n".join(sections))

    code = main(["--config", str(config), "check-config"])
    out, err = capsys.readouterr()
    hostile.tried(touched=False)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert all(line.startswith(f"error: {config}: ") for line in lines), err
    assert "Traceback" not in err and "s3cret" not in err
    assert not any(hostile.raw_control(line) for line in lines)
    schema = [i for i, m in enumerate(mistakes) if MISTAKES[m][2]]
    expected = schema or range(len(mistakes))
    for index in expected:
        key = f"environments.env{index}.{MISTAKES[mistakes[index]][1]}"
        assert any(key in line for line in lines), (key, err)
    if not schema and bad_name:
        assert any("name must be letters" in line or "too long" in line for line in lines), err


async def test_not_confirmed_exits_3_and_changes_nothing(
    stage: Stage,
    pg: ThrowawayPostgres,
    tmp_path: Path,
    docker: aiodocker.Docker,
    store_pool: object,
) -> None:
    """issue 8: "not confirmed" exited 1, like a failed rollback."""
    config = write_config(stage, tmp_path)
    before = await table_checksums(stage.dsn)
    controller, terminal = pty.openpty()
    try:
        process = await spawn(
            "--config",
            str(config),
            "rollback",
            stage.environment.name,
            env=store_env(pg),
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        os.write(controller, b"not-the-name\n")
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 3, err
    assert "Not confirmed; nothing was changed." in out.decode()
    assert await table_checksums(stage.dsn) == before
    assert set((await container_states(docker, stage.project)).values()) == {"running"}


async def test_check_config_refuses_a_password_in_the_query_and_the_store_on_an_environment(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """issue 8: `?password=` is refused without being echoed; the bot's own store on an
    environment's database (which a rollback would wipe) is refused by check-config."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[environments.production]\ndatabase_url = "postgresql://app@db/app?password=hunter2"\n'
    )
    code, out, err = await cli("--config", str(bad), "check-config")
    assert code == 2 and out == ""
    assert "must not contain a password" in err and "hunter2" not in err

    config = write_config(stage, tmp_path)
    code, out, err = await cli("--config", str(config), "check-config", env=store_env(pg))
    assert code == 0, err
    same = stage.dsn.replace("127.0.0.1", "localhost")
    code, out, err = await cli("--config", str(config), "check-config", env={"DATABASE_URL": same})
    assert code == 2 and out == ""
    assert f"the database of environment {stage.environment.name}" in err


async def test_check_config_refuses_an_escalation_that_can_never_fire(tmp_path: Path) -> None:
    """issue 8: escalating after the request expired would never happen."""
    (tmp_path / "backups").mkdir()
    config = tmp_path / "rollback.toml"
    config.write_text(
        '[environments.production]\ndatabase_url = "postgresql://app@db/app"\n'
        'backups_dir = "backups"\n'
        "[environments.production.approval]\nexpiry_minutes = 30\nescalate_after_minutes = 30\n"
    )
    code, out, err = await cli("--config", str(config), "check-config")
    assert code == 2 and out == ""
    assert "environments.production.approval.escalate_after_minutes: 30 is not less than" in err
    assert "expire before it escalates" in err


async def test_cancel_from_the_command_line_names_the_operator(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path, store_pool: asyncpg.Pool
) -> None:
    """issue 8: an operator cancels a request waiting in Slack; the audit log names them."""
    config = write_config(stage, tmp_path)
    env = store_env(pg)
    name = stage.environment.name
    code, _, err = await cli("--config", str(config), "cancel", name, env=env)
    assert code == 1 and f"No rollback of {name} is waiting: nothing to cancel." in err

    outcome = await request_rollback(
        stage.services, NoGroups(), environment=name, backup=None, requested_by="U0ALICE"
    )
    code, out, err = await cli("--config", str(config), "cancel", name, env=env)
    assert code == 0, err
    assert f"Cancelled run {outcome.run.id} of {name} (requested by U0ALICE" in out
    store = stage.services.store
    assert (await store.get(outcome.run.id)).status.value == "cancelled"
    (event,) = [e for e in await store.events(outcome.run.id) if e.kind == "cancelled"]
    assert event.actor is not None and event.actor.endswith("(command line)")
