"""Code and full rollback plans meet the world (issue 9): a branch that moved before the
push, a backup paired with code of another schema version."""

from __future__ import annotations

import shutil
from pathlib import Path

from services import approved_copy
from services.approvals import bind_request
from services.backups import resolve_backup
from services.code_rollback import plan_code, rollback_code
from services.events import ignore
from services.full_rollback import FullRollbackPlan
from services.run_store import RunKind, RunStatus
from tests.git_repos import BOB, Upstream
from tests.handlers.test_full_rollback_with_code import record_commit
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


async def test_a_full_plan_warns_when_the_backup_and_the_code_have_other_schemas(
    stage: Stage, upstream: Upstream, tmp_path: Path
) -> None:
    schema_one = upstream.commit({"app.py": "schema = 1\n"}, "Schema 1")
    schema_two = upstream.commit({"app.py": "schema = 2\n"}, "Schema 2", BOB)
    upstream.commit({"app.py": "schema = 2\nbug = True\n"}, "A bug", BOB)
    await record_commit(stage.backup, schema_one, schema="1")
    later = stage.backup.path.with_name("pre-deployment-20241204-120000.dump")
    shutil.copy(stage.backup.path, later)
    await record_commit(await resolve_backup(stage.environment, later.name), schema_two, "2")
    services = stage.with_environment(git=upstream.target(tmp_path / "clone")).services

    plan = await bind_request(
        services,
        kind=RunKind.FULL,
        environment=stage.environment.name,
        backup=stage.backup.name,
        commit=schema_two[:7],  # the data of schema 1 under the code of schema 2
    )

    assert isinstance(plan, FullRollbackPlan) and plan.code is not None
    assert plan.code_note == (
        f"the code goes back to {schema_two[:7]}, as asked; ⚠️ schema mismatch: "
        f"{stage.backup.name} is at schema version 1, the code of {schema_two[:7]} "
        f"({later.name} was taken with it) at 2; the application may fail on this data"
    )
    await approved_copy.discard_copy(services, stage.environment, plan.database.sha256)
