"""Issue 9: the command line after a rollback does not block for the monitoring window; it
says until when the environment is watched and by whom, and `status` shows the window."""

from __future__ import annotations

from pathlib import Path

from sandbox.throwaway_postgres import ThrowawayPostgres
from services.watch_store import WatchStore
from tests.bot.test_cli import cli, store_env, write_config
from tests.services.conftest import Stage


async def test_rollback_leaves_the_window_to_serve_and_status_shows_it(
    stage: Stage, pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    env = stage.environment.name
    config = write_config(stage, tmp_path, keys="monitor_minutes = 5")

    code, out, err = await cli("--config", str(config), "rollback", env, "--yes", env=store_env(pg))

    assert code == 0, err
    (run,) = await stage.services.store.recent_runs(env, 1)
    window = await WatchStore(stage.services.store.pool).get(run.id)
    assert window is not None and window.owner is None  # any bot process may take it
    until = f"{window.until:%H:%M} UTC"
    assert f"Monitoring: watching {env} until {until} (health every 30 s)" in out
    assert f"`rollback-bot watch {env}`" in out and f"`rollback-bot status {env}`" in out
    code, status, err = await cli("--config", str(config), "status", env, env=store_env(pg))
    assert code == 0, err
    assert f"No rollback of {env} in progress." in status
    assert f"Monitoring {env} after run {run.id} until {until}: healthy so far (0 checks)" in status
    assert "nobody is watching it now" in status
