"""The environments file: per-environment timeouts (issue 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.environments_file import load_environments
from services.environments import Timeouts
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
