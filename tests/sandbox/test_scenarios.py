"""Game days: each of the runbook's scenarios passes against the sandbox (issue 11)."""

from __future__ import annotations

from pathlib import Path

import aiodocker
import asyncpg
import pytest

from bot.cli import main
from sandbox.scenarios import SCENARIOS, STORE, Ground, play
from sandbox.throwaway_postgres import ThrowawayPostgres


@pytest.fixture
async def ground(
    pg: ThrowawayPostgres, docker: aiodocker.Docker, demo_image: str, tmp_path: Path
) -> Ground:
    """The session's cluster (with the run store the demo uses) and Docker engine."""
    connection = await asyncpg.connect(pg.superuser_dsn())
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", STORE)
    finally:
        await connection.close()
    if not exists:
        await pg.create_database(STORE)
    return Ground(pg, docker, demo_image, tmp_path, rows=300)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_passes(ground: Ground, name: str) -> None:
    outcome = await play(ground, name)
    report = "\n".join(outcome.lines())
    assert outcome.passed, report
    assert len(outcome.checks) >= 4, report


def test_an_unknown_scenario_is_refused_with_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "meteor-strike"]) == 2
    out = capsys.readouterr().out
    assert "no scenario 'meteor-strike'" in out and "approver-never-answers" in out


def test_web_and_scenario_do_not_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--web", "--scenario", "all"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
