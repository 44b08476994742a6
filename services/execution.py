"""An approved plan of any kind, executed: database, code, or full (database, then code)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.approvals import Bound
from services.bound_plan import BoundPlan
from services.bundle import Services
from services.code_rollback import CodeRollbackPlan, execute_code
from services.events import Listener
from services.full_rollback import execute_full
from services.workflow import RollbackPlan, RollbackResult, execute_rollback


def database_plan(plan: Bound) -> RollbackPlan | None:
    """The database part of a plan (what a swap prepares before approval), if it has one."""
    if isinstance(plan, BoundPlan):
        return plan.plan
    if isinstance(plan, CodeRollbackPlan):
        return None
    return plan.database.plan


async def execute_approved(
    services: Services,
    plan: Bound,
    *,
    run_id: str,
    listener: Listener,
    report: Callable[[], Awaitable[None]] | None = None,
) -> RollbackResult:
    """Execute the run's approved plan; the revert commits name the run's requester."""
    if isinstance(plan, BoundPlan):
        return await execute_rollback(
            services, plan.plan, run_id=run_id, listener=listener, report=report
        )
    requested_by = (await services.store.get(run_id)).requested_by
    if isinstance(plan, CodeRollbackPlan):
        return await execute_code(
            services,
            plan,
            run_id=run_id,
            requested_by=requested_by,
            listener=listener,
            report=report,
        )
    return await execute_full(
        services, plan, run_id=run_id, requested_by=requested_by, listener=listener, report=report
    )
