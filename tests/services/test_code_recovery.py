"""A code rollback whose bot process died (issue 9): recovery knows whether the revert was
pushed, from the journal or from the remote branch itself, and Resume never pushes twice."""

from __future__ import annotations

from pathlib import Path

from sandbox.throwaway_postgres import ThrowawayPostgres
from services.code_rollback import CodeRollbackPlan, plan_code
from services.events import Step
from services.git import credentials_from_environment, execute_code_rollback
from services.recovery import recover_run
from services.run_store import RunRecord, RunStatus, RunStore
from tests.bot.test_cli import write_config
from tests.git_repos import BOB, Upstream, VersionEndpoint
from tests.services.conftest import Stage
from tests.services.test_recovery import at_step, choose, kill_during, recover


def two_commits(upstream: Upstream) -> tuple[str, str]:
    first = upstream.commit({"app.py": "v = 1\n"}, "Version 1")
    return first, upstream.commit({"app.py": "v = 2\n"}, "Version 2", BOB)


async def test_killed_while_waiting_for_the_version_then_recovered_and_resumed(
    stage: Stage,
    pg: ThrowawayPostgres,
    upstream: Upstream,
    version_endpoint: VersionEndpoint,
    tmp_path: Path,
) -> None:
    first, bad = two_commits(upstream)
    version_endpoint.report(bad)  # the deployment never comes while the bot lives
    section = f"[environments.{stage.environment.name}.git]"
    git = (
        f'{section}\nurl = "{upstream.url}"\nworkdir = "{tmp_path / "clone"}"\n'
        f'version_url = "{version_endpoint.url}"\nversion_field = "build.commit"\n'
        "version_poll_seconds = 0.2\nversion_wait_seconds = 60\n"
    )
    config = write_config(stage, tmp_path, more=git)
    argv = ["-m", "bot.cli", "--config", str(config), "rollback", "--yes", "--code="]

    killed = await kill_during(stage, pg, config, at_step(Step.DEPLOY.value), argv=argv)

    assert killed.journal["code_push"] == "done"
    shown = await recover(stage, pg, config)
    run = await stage.services.store.get(killed.id)
    assert run.status is RunStatus.INTERRUPTED
    pushed = upstream.tip()
    assert f"the revert had been pushed ({pushed[:7]})" in run.result["recovery"]["actions"]
    assert f"run {run.id} of {stage.environment.name} was interrupted" in shown

    version_endpoint.report(pushed)
    await choose(stage, pg, config, "resume")

    assert (await stage.services.store.get(run.id)).status is RunStatus.SUCCEEDED
    assert upstream.tip() == pushed  # found, not pushed twice
    assert [str(c.id) for c in upstream.history()[1:]] == [bad, first]


async def pushing_run(store: RunStore, plan: CodeRollbackPlan) -> RunRecord:
    """A code run whose process was pushing when it died (its journal says no more)."""
    run = await store.create_run(
        environment=plan.environment.name,
        kind="code",
        requested_by="U0ALICE",
        status=RunStatus.RUNNING,
        plan=plan.summary(),
    )
    await store.record(run.id, "push", code_push="started", code_tip=plan.code.tip)
    return run


async def test_recovery_reads_the_remote_when_the_process_died_during_the_push(
    stage: Stage, upstream: Upstream, tmp_path: Path
) -> None:
    two_commits(upstream)
    target = upstream.target(tmp_path / "clone")
    services = stage.with_environment(git=target).services
    plan = await plan_code(services, stage.environment.name, None)
    store = services.store
    run = await pushing_run(store, plan)
    landed = await execute_code_rollback(
        target, credentials_from_environment(target), plan.code, run_id=run.id, requester="U0ALICE"
    )  # ... and the process died before it journalled "done"

    recovery = await recover_run(services, await store.get(run.id))

    assert recovery.actions[-1] == (
        f"the revert had been pushed: {landed.new_tip[:7]} on main names this run"
    )
    journal = (await store.get(run.id)).journal
    assert (journal["code_push"], journal["code_new_tip"]) == ("done", landed.new_tip)
    await store.update(run.id, status=RunStatus.FAILED)  # frees the environment

    other = await pushing_run(store, plan)
    recovery = await recover_run(services, await store.get(other.id))
    assert recovery.actions[-1] == "the push had not landed: main has no commit of this run"
    await store.update(other.id, status=RunStatus.FAILED)
