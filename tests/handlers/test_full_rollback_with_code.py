"""`/rollback full ENV [backup]` through the Slack sandbox (issue 9): the database back to the
backup, then the code back to the commit recorded with it, in one run; and a code half that
fails after the database half, with Retry code rollback and Undo database rollback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.ids import ActionId
from sandbox.demo_environment import DatabaseSnapshot, database_snapshot
from sandbox.git_http import GitHttpServer
from sandbox.slack import Message, render_message
from services.backups import Backup
from services.environments import GitTarget, MigrationsKind
from services.provenance import BackupKind, Captured, seal
from services.run_store import RunStatus
from services.schema_version import SchemaVersion
from tests.git_repos import BOB as BOB_DEV
from tests.git_repos import GIT_TOKEN, Upstream
from tests.handlers.conftest import ALICE, BOB, ERIN, INCIDENTS, Bot, MakeBot
from tests.services.conftest import change_after_backup

TOKEN_VARIABLE = "RB_TEST_FULL_GIT_TOKEN"


async def record_commit(backup: Backup, sha: str, schema: str | None = None) -> None:
    """The backup's provenance sidecar, written as the bot writes it (services/provenance)."""
    version = SchemaVersion(schema, "alembic_version", MigrationsKind.ALEMBIC) if schema else None
    captured = Captured("production", "shop", sha, version, {}, ())
    await seal(backup, captured, kind=BackupKind.PRE_DEPLOYMENT, created_by="deploy@ci")


async def history_since_backup(upstream: Upstream, backup: Backup) -> tuple[str, str]:
    """The commit deployed when the backup was taken (recorded with it), then a release."""
    at_backup = upstream.commit({"app.py": "schema = 1\n"}, "Schema 1")
    await record_commit(backup, at_backup)
    release = upstream.commit({"app.py": "schema = 2\n", "m.sql": "alter\n"}, "Schema 2", BOB_DEV)
    return at_backup, release


async def approve_and_finish(bot: Bot, plan_message_text: str) -> tuple[str, RunStatus]:
    (run,) = await bot.runs()
    plan = bot.workspace.latest_message(INCIDENTS.id)
    assert plan is not None and plan_message_text in "\n".join(render_message(plan))
    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)
    await bot.workspace.wait_for(lambda: bool(run.id) and "awaiting" not in plan.text)
    return run.id, final.status


async def test_full_rollback_brings_data_and_code_back_to_the_backup(
    make_bot: MakeBot, upstream: Upstream, tmp_path: Path
) -> None:
    watch = {"monitor_minutes": 0.04, "monitor_interval_seconds": 0.5}
    bot = await make_bot(git=upstream.target(tmp_path / "bot-clone"), environment=watch)
    stage = bot.stage
    at_backup, release = await history_since_backup(upstream, stage.backup)
    data_at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)

    plan = await bot.command(ALICE, f"full {bot.environment}")
    shown = "\n".join(render_message(plan))
    assert f"Full rollback of {bot.environment}: awaiting approval" in shown
    assert f"the code goes back to {at_backup[:7]}, deployed when {stage.backup.name}" in shown
    assert f"`{release[:7]}` Schema 2 — Bob Builder" in shown
    assert "Health is checked once, after the code half" in shown

    run_id, status = await approve_and_finish(bot, "Containers that will stop (2)")

    assert status is RunStatus.SUCCEEDED
    assert await database_snapshot(stage.dsn) == data_at_backup
    assert upstream.tree(upstream.tip()) == upstream.tree(at_backup)
    assert run_id in upstream.history()[0].message
    await bot.workspace.wait_for(lambda: "done" in plan.text)
    shown = "\n".join(render_message(plan))
    steps = ["Stop containers", "Restore database", "Revert the commits and push", "Health"]
    assert all(f"✓ {step}" in shown for step in steps), shown
    assert (
        shown.index("Restore database")
        < shown.index("Revert the commits")
        < (shown.index("✓ Health checks"))
    )

    # The runbook's "After Rollback": one run, one watch, healthy to its end.
    def thread() -> str:
        messages = bot.workspace.thread(INCIDENTS.id, plan.ts)
        return "\n".join(line for m in messages for line in render_message(m))

    await bot.workspace.wait_for(lambda: "Monitoring 2.4 s: healthy throughout" in thread(), 15)
    assert "☑ Monitoring active — the bot" in "\n".join(render_message(plan))
    await bot.tasks.aclose()


@dataclass
class FailedCodeHalf:
    bot: Bot
    plan: Message  # the run's message
    run_id: str
    at_backup: str  # the commit recorded with the backup
    release: str  # the branch tip: nothing was pushed
    hook: Path  # the remote's pre-receive hook that refused the push
    before: DatabaseSnapshot  # the data before the rollback
    backup: DatabaseSnapshot  # the data in the backup


async def fail_code_half(
    make_bot: MakeBot, upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> FailedCodeHalf:
    """A full rollback whose push the remote refuses (a pre-receive hook, over HTTP)."""
    target = GitTarget(
        url=git_http.url("remote.git"), workdir=tmp_path / "bot-clone", token_env=TOKEN_VARIABLE
    )
    bot = await make_bot(git=target)
    at_backup, release = await history_since_backup(upstream, bot.stage.backup)
    backup = await database_snapshot(bot.stage.dsn)
    await change_after_backup(bot.stage.dsn)
    before = await database_snapshot(bot.stage.dsn)
    hook = upstream.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    plan = await bot.command(ALICE, f"full {bot.environment}")
    run_id, status = await approve_and_finish(bot, "Schema 2")
    assert status is RunStatus.FAILED
    await bot.workspace.wait_for(lambda: "Retry code rollback" in str(plan.blocks))
    return FailedCodeHalf(bot, plan, run_id, at_backup, release, hook, before, backup)


@pytest.fixture
def git_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, GIT_TOKEN)


@pytest.mark.usefixtures("git_token")
async def test_a_code_half_refused_by_the_remote_offers_retry_and_undo(
    make_bot: MakeBot, upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    failed = await fail_code_half(make_bot, upstream, git_http, tmp_path)
    bot, plan, stage = failed.bot, failed.plan, failed.bot.stage

    assert await database_snapshot(stage.dsn) == failed.backup  # the database half stays
    assert upstream.tip() == failed.release  # nothing pushed
    shown = "\n".join(render_message(plan))
    assert f"*Database half:* done: {bot.environment} runs on {stage.backup.name}" in shown
    assert "*Code half:* NOT rolled back: Could not push to" in shown
    assert "pre-receive hook declined" in shown and GIT_TOKEN not in str(bot.workspace.calls)
    assert "[ Retry code rollback ] [ Undo database rollback ]" in shown

    failed.hook.unlink()
    await bot.slack.click(BOB.id, plan, ActionId.RETRY_CODE)

    reply = await bot.ephemeral(BOB, 2)
    assert "code rollback retry starts now" in reply.text
    await bot.workspace.wait_for(
        lambda: "✓ *Code rollback retried*" in str(bot.workspace.thread(INCIDENTS.id, plan.ts)),
        timeout=30,
    )
    assert upstream.tree(upstream.tip()) == upstream.tree(failed.at_backup)
    await bot.workspace.wait_for(lambda: "Retry code rollback" not in str(plan.blocks))
    assert "retried by run" in "\n".join(render_message(plan))
    runs = await bot.runs()
    assert [r.kind for r in runs] == ["code", "full"] and runs[0].plan["retry_of"] == failed.run_id
    assert f"run {runs[0].id}" in upstream.history()[0].message


@pytest.mark.usefixtures("git_token")
async def test_undo_database_rollback_after_a_failed_code_half_puts_the_data_back(
    make_bot: MakeBot, upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    failed = await fail_code_half(make_bot, upstream, git_http, tmp_path)
    bot, plan = failed.bot, failed.plan

    await bot.slack.click(ERIN.id, plan, ActionId.UNDO_DATABASE)

    await bot.workspace.wait_for(
        lambda: "✓ *Database undone*" in str(bot.workspace.thread(INCIDENTS.id, plan.ts)),
        timeout=60,
    )
    assert await database_snapshot(bot.stage.dsn) == failed.before
    assert upstream.tip() == failed.release  # the code stays as it is
    await bot.workspace.wait_for(lambda: "Undo database rollback" not in str(plan.blocks))
    assert "Undone* by run" in "\n".join(render_message(plan))
