"""`rollback-bot rollback ENV --code [COMMIT]` on real git (issue 9): the plan, then the push."""

from __future__ import annotations

from pathlib import Path

from sandbox.throwaway_postgres import ThrowawayPostgres
from tests.bot.test_cli import cli, store_env, write_config
from tests.git_repos import BOB, Upstream
from tests.services.conftest import Stage


async def test_code_rollback_on_the_command_line(
    stage: Stage, pg: ThrowawayPostgres, upstream: Upstream, tmp_path: Path
) -> None:
    first = upstream.commit({"app.py": "v = 1\n"}, "Version 1")
    second = upstream.commit({"app.py": "v = 2\n"}, "Version 2", BOB)
    third = upstream.commit({"app.py": "v = 3\n"}, "Version 3")
    git = f'[environments.{stage.environment.name}.git]\nurl = "{upstream.url}"\n'
    git += f'workdir = "{tmp_path / "bot-clone"}"\n'
    config = write_config(stage, tmp_path, more=git)
    env = store_env(pg)
    name = stage.environment.name

    code, out, err = await cli(
        "--config", str(config), "rollback", name, "--code", "--dry-run", env=env
    )

    assert code == 0, err
    assert f"Code rollback plan for {name}" in out and f"revert        {third[:7]} Version 3" in out
    assert 'pushes        Revert "Version 3"' in out and "Dry run: nothing was changed." in out
    assert upstream.tip() == third

    code, out, err = await cli(
        "--config", str(config), "rollback", name, "--code", first[:7], "--yes", env=env
    )

    assert code == 0, err
    assert f"{second[:7]} Version 2 — Bob Builder" in out and "Rollback SUCCEEDED" in out
    assert "✓ Revert the commits and push" in out and "✓ Health checks" in out
    reverts = [c.message.split("\n")[0] for c in upstream.history()[:2]]
    assert reverts == ['Revert "Version 2"', 'Revert "Version 3"']  # newest first
    assert upstream.tree(upstream.tip()) == upstream.tree(first)

    code, _, err = await cli("--config", str(config), "rollback", name, "x.dump", "--code", env=env)
    assert code == 2 and "a code rollback takes no backup" in err
