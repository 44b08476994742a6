"""The environments file: per-environment timeouts (issue 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.environments_file import load_environments
from bot.logs import configured_secrets
from bot.settings import Settings
from services.environments import CutoverMode, Timeouts
from services.errors import ConfigError


def test_timeouts_are_read_per_environment_with_defaults(tmp_path: Path) -> None:
    """Issue 7: every wait has a deadline, configurable per environment."""
    (tmp_path / "backups").mkdir()
    config = tmp_path / "rollback.toml"
    config.write_text(
        """
[environments.production]
database_url = "postgresql://app@db/app"
backups_dir = "backups"

[environments.production.timeouts]
docker_seconds = 12
lock_seconds = 2.5

[environments.staging]
database_url = "postgresql://app@db/staging"
backups_dir = "backups"
"""
    )
    environments = load_environments(config)
    assert environments["production"].timeouts == Timeouts(docker_seconds=12, lock_seconds=2.5)
    assert environments["staging"].timeouts == Timeouts()
    assert Timeouts().lock_seconds == 5 and Timeouts().docker_seconds == 30

    config.write_text(
        config.read_text().replace("lock_seconds = 2.5", "lock_seconds = 0\nforever = true")
    )
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f"{config}: environments.production.timeouts.lock_seconds: Input should be greater than 0",
        f"{config}: environments.production.timeouts.forever: unknown key",
    ]


def test_the_git_table_resolves_paths_and_checks_url_branch_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: the remote, where the bot keeps its clone, how the deployed commit is known,
    and credentials named, never written, in the file."""
    (tmp_path / "backups").mkdir()
    monkeypatch.setenv("APP_GIT_TOKEN", "tok-never-in-the-file")
    config = tmp_path / "rollback.toml"
    head = """
[environments.production]
database_url = "postgresql://app@db/app"
backups_dir = "backups"

[environments.production.git]
"""
    staging_table = """
[environments.staging]
database_url = "postgresql://app@db/staging"
backups_dir = "backups"

[environments.staging.git]
"""
    config.write_text(
        head
        + 'url = "repos/app.git"\n'
        + staging_table
        + """url = "https://git.example.com/acme/app.git"
workdir = "state/staging-git"
branch = "release/2024"
token_env = "APP_GIT_TOKEN"
deployed = "tag"
tag_pattern = "deploy/staging/*"
version_url = "https://app.example.com/version"
version_wait_seconds = 120
"""
    )
    environments = load_environments(config)
    production, staging = environments["production"].git, environments["staging"].git
    assert production is not None and staging is not None
    assert production.url == str(tmp_path / "repos/app.git")
    assert production.workdir == tmp_path / "instances/production/git"
    assert (production.branch, production.remote, production.deployed) == (
        "main",
        "origin",
        "branch",
    )
    assert staging.workdir == tmp_path / "state/staging-git"
    assert (staging.branch, staging.deployed, staging.tag_pattern) == (
        "release/2024",
        "tag",
        "deploy/staging/*",
    )
    assert staging.version_wait_seconds == 120 and staging.username == "x-access-token"

    config.write_text(
        head
        + """url = "https://bot:hunter2@git.example.com/app.git"
branch = "main..x"
deployed = "tag"
token_env = "NOT_SET_ANYWHERE"
"""
        + staging_table
        + """url = "http://git.example.com/app.git"
token_env = "APP_GIT_TOKEN"
version_url = "ftp://app/version"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    key = f"{config}: environments.production.git"
    assert caught.value.problems == [
        f"{key}.branch: Value error, The branch name is not a name git accepts (no '..', '~', "
        "'^', ':', '?', '*', '[', '\\', spaces, a leading or trailing '/' or '.', or '.lock' at "
        "the end)."
    ]
    config.write_text(config.read_text().replace('branch = "main..x"\n', ""))
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f'{key}: Value error, deployed = "tag" needs tag_pattern (e.g. "deploy/production/*")'
    ]

    config.write_text(config.read_text().replace('deployed = "tag"\n', ""))
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f"{key}.url: must not contain a user name or token (user@); set username, and name the "
        "variable that holds the token in token_env",
        f"{key}.token_env: variable NOT_SET_ANYWHERE is not set",
        f"{config}: environments.staging.git.url: sends the token in clear over http://; "
        "use https://",
        f"{config}: environments.staging.git.version_url: must be an http:// or https:// URL",
    ]


def test_cutover_mode_defaults_to_stop_and_keep_is_refused_in_place(tmp_path: Path) -> None:
    """Issue 10: `keep` with the in-place strategy would let the application write into a
    database being restored; the file is refused, naming the key and what to use instead."""
    (tmp_path / "backups").mkdir()
    config = tmp_path / "rollback.toml"
    config.write_text(
        """
[environments.production]
database_url = "postgresql://app@db/app"
backups_dir = "backups"
cutover_mode = "pause"

[environments.staging]
database_url = "postgresql://app@db/staging"
backups_dir = "backups"
strategy = "in-place"
cutover_mode = "pause"

[environments.qa]
database_url = "postgresql://app@db/qa"
backups_dir = "backups"
"""
    )
    environments = load_environments(config)
    assert environments["production"].cutover_mode is CutoverMode.PAUSE
    assert environments["staging"].cutover_mode is CutoverMode.PAUSE
    assert environments["qa"].cutover_mode is CutoverMode.STOP

    config.write_text(
        config.read_text()
        .replace(
            'strategy = "in-place"\ncutover_mode = "pause"',
            'strategy = "in-place"\ncutover_mode = "keep"',
        )
        .replace('cutover_mode = "pause"', 'cutover_mode = "freeze"')
    )
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f"{config}: environments.production.cutover_mode: "
        "Input should be 'stop', 'pause' or 'keep'",
    ]
    config.write_text(config.read_text().replace('"freeze"', '"keep"'))
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f'{config}: environments.staging.cutover_mode: keep needs strategy = "swap": in '
        "place, a running application would write while the safety backup is taken and the "
        "database is emptied and restored, and those writes would be lost; use pause (frozen "
        "during the restore) or stop"
    ]


def test_monitoring_and_secrets_are_read_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: how long and how often the bot watches after a rollback; the values the
    application may print that no log excerpt shows."""
    (tmp_path / "backups").mkdir()
    (tmp_path / "app.env").write_text("STRIPE_KEY=sk_live_from_env_file\n")
    monkeypatch.setenv("RB_TEST_API_KEY", "api-key-from-process")
    config = tmp_path / "rollback.toml"
    config.write_text(
        """
[environments.production]
database_url = "postgresql://app@db/app"
backups_dir = "backups"
env_file = "app.env"
monitor_minutes = 15
monitor_interval_seconds = 20
secrets_env = ["RB_TEST_API_KEY", "STRIPE_KEY"]

[[environments.production.health.http]]
name = "web"
url = "http://127.0.0.1:8080/health"
service = "web"

[environments.staging]
database_url = "postgresql://app@db/staging"
backups_dir = "backups"
monitor_minutes = 0
"""
    )
    environments = load_environments(config)
    production, staging = environments["production"], environments["staging"]
    assert (production.monitor_minutes, production.monitor_interval_seconds) == (15, 20)
    assert [s.get_secret_value() for s in production.secrets] == [
        "api-key-from-process",
        "sk_live_from_env_file",
    ]
    assert "api-key-from-process" not in repr(production)
    assert "sk_live_from_env_file" in configured_secrets(Settings(), environments)  # bot's log
    assert production.health.http[0].service == "web"
    assert (staging.monitor_minutes, staging.monitor_interval_seconds) == (0, 30)

    config.write_text(
        config.read_text()
        .replace("monitor_interval_seconds = 20", "monitor_interval_seconds = 901")
        .replace('"STRIPE_KEY"]', '"RB_TEST_UNSET"]')
    )
    with pytest.raises(ConfigError) as caught:
        load_environments(config)
    assert caught.value.problems == [
        f"{config}: environments.production.monitor_interval_seconds: 901 is longer than the "
        "monitoring window (monitor_minutes = 15): no check would run in it",
        f"{config}: environments.production.secrets_env: variable RB_TEST_UNSET is not set",
    ]
