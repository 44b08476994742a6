"""A code rollback's approved plan meets a branch that moved before the push (issue 9)."""

from __future__ import annotations

from pathlib import Path

from services.code_rollback import plan_code, rollback_code
from services.events import ignore
from services.run_store import RunStatus
from tests.git_repos import BOB, Upstream
from tests.services.conftest import Stage


async def test_a_branch_moved_after_approval_is_refused_and_the_plan_must_be_rebuilt(
    stage: Stage, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({"app.py": "v = 1\n"}, "Version 1")
    upstream.commit({"app.py": "v = 2\n"}, "Version 2", BOB)
    services = stage.with_environment(git=upstream.target(tmp_path / "clone")).services
    plan = await plan_code(services, stage.environment.name, None)  # shown and approved
    hotfix = upstream.commit({"hotfix.py": "ok\n"}, "Hotfix", BOB)  # then someone pushes

    result = await rollback_code(services, plan, requested_by="U0ALICE", listener=ignore)

    assert not result.ok and upstream.tip() == hotfix  # nothing pushed, nothing forced
    assert result.environment_state.startswith(
        f"code NOT rolled back: Branch main moved since the plan was made (planned on "
        f"{plan.code.short_tip}, now {hotfix[:7]}): nothing was pushed."
    )
    assert "request the code rollback again to rebuild it" in result.environment_state
    run = await services.store.get(result.run_id)
    assert run.status is RunStatus.FAILED and run.journal["code_push"] == "refused"
