"""`/rollback code ENV [commit]` through the Slack sandbox, on real git: a bare repository as
the remote, the bot's own clone, commits by other people (issue 9)."""

from __future__ import annotations

import time
from pathlib import Path

from handlers.ids import ActionId
from sandbox.slack import render_message
from services.environments import DeployedSource
from services.run_store import RunStatus
from tests.git_repos import ALICE as ALICE_DEV
from tests.git_repos import BOB as BOB_DEV
from tests.git_repos import Upstream
from tests.handlers.conftest import ALICE, BOB, MakeBot


def deployed_history(upstream: Upstream) -> tuple[str, str]:
    """A first commit, then Bob's "Add checkout" on top: the deployed tip."""
    first = upstream.commit({"app.py": "total = 1\n", "README": "shop\n"}, "Start the shop")
    checkout = upstream.commit({"app.py": "total = 2\ncheckout()\n"}, "Add checkout", BOB_DEV)
    return first, checkout


async def test_code_rollback_plan_approval_push_and_report(
    make_bot: MakeBot, upstream: Upstream, tmp_path: Path
) -> None:
    first, checkout = deployed_history(upstream)
    bot = await make_bot(git=upstream.target(tmp_path / "bot-clone"))

    plan = await bot.command(ALICE, f"code {bot.environment}")

    shown = "\n".join(render_message(plan))
    assert f"Code rollback of {bot.environment}: awaiting approval" in shown
    assert f"`{checkout[:7]}` Add checkout — Bob Builder" in shown
    assert 'Revert "Add checkout"' in shown and "Containers that will stop" not in shown
    assert f"`main` (at `{checkout[:7]}`)" in shown and "[ Approve ]" in shown
    (run,) = await bot.runs()
    assert (run.kind, run.plan["code"]["tip"]) == ("code", checkout)

    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
    final = await bot.wait_for_run(run.id, lambda r: r.finished_at is not None)

    assert final.status is RunStatus.SUCCEEDED, final.result
    revert, *rest = upstream.history()
    assert [str(c.id) for c in rest] == [checkout, first]  # exactly one commit was added
    assert revert.message.startswith('Revert "Add checkout"')
    assert f"rollback-bot run {run.id}, requested by {ALICE.id}" in revert.message
    assert upstream.tree(str(revert.id)) == upstream.tree(first)
    await bot.workspace.wait_for(lambda: "done" in plan.text)
    shown = "\n".join(render_message(plan))
    assert "✓ Revert the commits and push" in shown and "✓ Health checks" in shown
    assert f"main of {upstream.url} is at {str(revert.id)[:7]}" in shown


async def test_a_branch_moved_before_approval_is_not_approved_nor_pushed(
    make_bot: MakeBot, upstream: Upstream, tmp_path: Path
) -> None:
    _, checkout = deployed_history(upstream)
    bot = await make_bot(git=upstream.target(tmp_path / "bot-clone"))
    plan = await bot.command(ALICE, f"code {bot.environment}")
    hotfix = upstream.commit({"hotfix.py": "ok\n"}, "Hotfix", ALICE_DEV)

    await bot.slack.click(BOB.id, plan, ActionId.APPROVE)

    reply = await bot.ephemeral(BOB)
    assert f"branch main moved from {checkout[:7]} to {hotfix[:7]}" in reply.text
    assert "approvals given before no longer count" in reply.text
    assert upstream.tip() == hotfix  # nothing pushed
    (run,) = await bot.runs()
    assert run.status is RunStatus.AWAITING_APPROVAL and run.plan["code"]["tip"] == hotfix
    await bot.workspace.wait_for(lambda: "Hotfix" in "\n".join(render_message(plan)))


async def test_a_conflicting_revert_is_refused_with_the_files_and_pushes_nothing(
    make_bot: MakeBot, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({"app.py": "port = 80\n"}, "Start")
    deployed = upstream.commit({"app.py": "port = 8080\n"}, "Port 8080")
    upstream.tag("deploy/1", deployed, when=int(time.time()))
    later = upstream.commit({"app.py": "port = 9090\n"}, "Port 9090", BOB_DEV)
    target = upstream.target(
        tmp_path / "bot-clone", deployed=DeployedSource.TAG, tag_pattern="deploy/*"
    )
    bot = await make_bot(git=target)

    await bot.slack.send_command(ALICE.id, "C0INCIDENTS", "/rollback", f"code {bot.environment}")

    reply = await bot.ephemeral(ALICE)
    assert f"Reverting `{deployed[:7]}` (Port 8080) conflicts" in reply.text
    assert "• `app.py`" in reply.text and f"`/rollback {bot.environment}`" in reply.text
    assert upstream.tip() == later and await bot.runs() == []
