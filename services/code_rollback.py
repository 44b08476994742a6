"""Code rollback: the runbook's `git revert HEAD && git push origin main`, done by the bot.

A read-only plan (fetch, the commits to revert, the reverts simulated), one approval bound
to the branch tip and the commits, then the steps: revert and push (fast-forward only: a
branch that moved since the plan is refused and nothing is pushed), optionally wait until
the version endpoint reports the revert, then the health checks. The git work is
services/git; this module makes it a run (journal, steps, result) like a database rollback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.bundle import Services
from services.environments import Environment, GitTarget
from services.errors import (
    BranchMoved,
    CodeNotConfigured,
    CodeWouldConflict,
    RevertConflict,
    RollbackError,
    RunConflict,
)
from services.events import Listener, Step
from services.git import (
    CodePlan,
    CodeResult,
    GitCredentials,
    VersionProgress,
    credentials_from_environment,
    display_url,
    execute_code_rollback,
    plan_code_rollback,
    run_marker,
    wait_for_version,
)
from services.git.working_copy import open_working_copy
from services.health import HealthReport
from services.run_store import RunKind, RunRecord, RunStatus
from services.workflow import (
    RollbackResult,
    StepRecorder,
    describe_error,
    finish_reported,
    health_step,
    owned_run,
    target_for,
)

log = logging.getLogger(__name__)

# Journal facts of the push (recovery reads them: services/recovery.py).
PUSH_STARTED, PUSH_DONE, PUSH_REFUSED = "started", "done", "refused"


def git_target(environment: Environment) -> GitTarget:
    """The environment's code (remote, branch); a clear refusal where none is configured."""
    if environment.git is None:
        raise CodeNotConfigured(environment.name)
    return environment.git


def waits_for_version(target: GitTarget) -> bool:
    return bool(target.version_url) and target.version_wait_seconds > 0


def code_hash(environment: str, code: CodePlan) -> str:
    """What an approval of a code rollback is bound to: remote, branch, the tip the plan was
    built on, the commits to revert and the tree they give (CodePlan.fingerprint)."""
    material = json.dumps([environment, "code", code.fingerprint]).encode()
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True)
class CodeRollbackPlan:
    """What a code rollback will push, built without changing anything."""

    environment: Environment
    code: CodePlan
    planned_at: datetime

    @property
    def hash(self) -> str:
        return code_hash(self.environment.name, self.code)

    @property
    def target(self) -> GitTarget:
        return git_target(self.environment)

    def code_summary(self) -> dict[str, Any]:
        """The code half as the run store and the messages keep it (no credentials)."""
        target = self.target
        return {
            **self.code.summary(),
            "waits_for_version": waits_for_version(target),
            "version_url": display_url(target.version_url) if target.version_url else None,
            "version_wait_seconds": target.version_wait_seconds,
            "planned_at": self.planned_at.isoformat(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "kind": RunKind.CODE.value,
            "environment": self.environment.name,
            "code": self.code_summary(),
            "requested_commit": self.code.requested,
            "plan_hash": self.hash,
            "planned_at": self.planned_at.isoformat(),
        }

    def columns(self) -> dict[str, str | None]:
        """The run's backup and strategy columns: a code rollback has neither."""
        return {"backup_name": None, "backup_sha256": None, "strategy": None}


def describe_code_change(before: dict[str, Any], after: CodePlan) -> str:
    """Why a code plan is no longer the one approved, in one sentence."""
    reasons = []
    tip = str(before.get("tip") or "")
    if tip != after.tip:
        reasons.append(f"branch {after.branch} moved from {tip[:7] or '?'} to {after.short_tip}")
    shas = [str(c.get("sha")) for c in before.get("reverts") or []]
    if shas != [c.sha for c in after.reverts]:
        now = ", ".join(c.short_sha for c in after.reverts[:5]) or "none"
        reasons.append(f"the commits to revert are now {now}")
    return "; ".join(reasons) or "the code plan changed"


async def plan_code(
    services: Services,
    environment_name: str,
    commit: str | None,
    *,
    own_run_id: str | None = None,
    database_offer: str | None = None,
) -> CodeRollbackPlan:
    """Fetch and plan (read-only). A plan whose reverts conflict is refused here, naming the
    files and the database-only rollback (`database_offer`, default the environment)."""
    environment = services.environment(environment_name)
    target = git_target(environment)
    active = await services.store.active_run(environment.name)
    if active is not None and active.id != own_run_id:
        raise RunConflict(environment.name, active.id, active.requested_by)
    credentials = credentials_from_environment(target)
    code = await plan_code_rollback(target, credentials, commit, http=services.http)
    if code.conflicts:
        conflicting = next((c for c in code.reverts if c.sha == code.conflict_commit), None)
        raise CodeWouldConflict(
            environment.name,
            (code.conflict_commit or "?")[:7],
            conflicting.subject if conflicting else "",
            code.conflicts,
            database_offer or environment.name,
        )
    return CodeRollbackPlan(environment, code, datetime.now(UTC))


# ---------------------------------------------------------------- the steps


def _commits(count: int) -> str:
    return f"{count} revert commit" + ("" if count == 1 else "s")


async def push_code(
    services: Services,
    environment: Environment,
    code: CodePlan,
    recorder: StepRecorder,
    *,
    requested_by: str,
) -> CodeResult:
    """Revert and push (journalled before and after: recovery knows whether it landed),
    then wait for the version endpoint if one is configured. Raises GitError (nothing
    pushed, or VersionNotReported after the push) or DeadlineExceeded."""
    target = git_target(environment)
    credentials = credentials_from_environment(target)
    async with recorder.step(Step.PUSH) as record:
        await recorder.journal(Step.PUSH, code_push=PUSH_STARTED, code_tip=code.tip)
        try:
            pushed = await execute_code_rollback(
                target, credentials, code, run_id=recorder.run_id, requester=requested_by
            )
        except (BranchMoved, RevertConflict):
            await recorder.journal(Step.PUSH, code_push=PUSH_REFUSED)  # nothing was pushed
            raise
        await recorder.journal(
            Step.PUSH,
            code_push=PUSH_DONE,
            code_new_tip=pushed.new_tip,
            code_pushed=list(pushed.pushed),
        )
        record.message = (
            f"{_commits(len(pushed.pushed))} on {code.branch}: "
            f"{pushed.previous_tip[:7]}..{pushed.new_tip[:7]}"
            + (" (pushed by an earlier attempt of this run)" if pushed.already_pushed else "")
        )
    if waits_for_version(target):
        async with recorder.step(Step.DEPLOY) as record:

            async def show(seen: VersionProgress) -> None:
                said = seen.reported or seen.problem or "nothing"
                await recorder.progress(
                    Step.DEPLOY,
                    f"reports {said[:60]}; waiting for {pushed.new_tip[:7]} "
                    f"({seen.remaining_seconds:.0f} s left)",
                )

            seen = await wait_for_version(target, services.http, pushed.new_tip, None, show)
            record.message = (
                f"reports {pushed.new_tip[:7]} after {seen.elapsed_seconds:.0f} s "
                f"({seen.attempts} look(s))"
            )
    return pushed


def pushed_sentence(environment: Environment, code: CodePlan, pushed: CodeResult) -> str:
    reverted = ", ".join(c.short_sha for c in code.reverts[:5])
    more = f" and {len(code.reverts) - 5} more" if len(code.reverts) > 5 else ""
    return (
        f"{code.branch} of {code.remote} is at {pushed.new_tip[:7]}: "
        f"{_commits(len(pushed.pushed))} reverting {reverted}{more} (the code of "
        f"{code.short_target})"
    )


def not_rolled_back(error: BaseException) -> str:
    """Why the code half did not happen, after "code": nothing was pushed, or it failed after."""
    if isinstance(error, BranchMoved):
        return (
            f"NOT rolled back: {error} The approved plan no longer applies: request the code "
            "rollback again to rebuild it"
        )
    if isinstance(error, RevertConflict):
        return f"NOT rolled back: {error} Conflicting files: {', '.join(error.files[:20])}"
    return f"NOT rolled back: {describe_error(error)}"


async def execute_code(
    services: Services,
    plan: CodeRollbackPlan,
    *,
    run_id: str,
    requested_by: str,
    listener: Listener,
    expect: tuple[RunStatus, ...] = (RunStatus.APPROVED, RunStatus.RUNNING),
    report: Callable[[], Awaitable[None]] | None = None,
) -> RollbackResult:
    """The code rollback's steps, owned and reported like a database rollback's: push (with
    the version wait), then health. Nothing is undone by itself: after a push, going back is
    another revert, for people to decide."""
    environment = plan.environment
    async with owned_run(services, run_id, environment.name, expect=expect, report=report):
        recorder = StepRecorder(services, run_id, listener)
        result = RollbackResult(run_id=run_id, ok=False, strategy="")
        health: list[HealthReport] = []
        try:
            pushed = await push_code(
                services, environment, plan.code, recorder, requested_by=requested_by
            )
        except Exception as error:
            if not isinstance(error, RollbackError | OSError):
                log.error("unexpected failure in run %s", run_id, exc_info=error)
            result.error = describe_error(error)
            result.environment_state = (
                f"code {not_rolled_back(error)}; {environment.name} was not touched"
            )
            result.code = {"pushed": False, "error": result.error}
        else:
            result.code = {"pushed": True, **pushed.summary()}
            done = pushed_sentence(environment, plan.code, pushed)
            try:
                await health_step(
                    services,
                    environment,
                    target_for(services, environment),
                    recorder,
                    seen=health.append,
                )
                result.ok = True
                result.environment_state = f"{done}; health checks pass"
            except Exception as error:
                result.error = describe_error(error)
                result.environment_state = (
                    f"{done}; but {result.error} (the revert stays pushed: revert it in git to "
                    "go back)"
                )
        result.steps = recorder.steps
        result.health = health[-1] if health else None
        await finish_reported(services, run_id, result)
        return result


async def rollback_code(
    services: Services, plan: CodeRollbackPlan, *, requested_by: str, listener: Listener
) -> RollbackResult:
    """The command line's code rollback: record the run (confirmed: approved) and execute it."""
    run = await services.store.create_run(
        environment=plan.environment.name,
        kind=RunKind.CODE.value,
        requested_by=requested_by,
        status=RunStatus.APPROVED,
        plan=plan.summary(),
    )
    return await execute_code(
        services, plan, run_id=run.id, requested_by=requested_by, listener=listener
    )


# ---------------------------------------------------------------- after the bot process died


def _run_commit_on_branch(
    target: GitTarget, credentials: GitCredentials, run_id: str, planned_tip: str
) -> str | None:
    """The newest revert commit naming `run_id` on the remote branch, above the tip the plan
    was built on (others may have pushed after it); None if the run pushed nothing."""
    marker = run_marker(run_id)
    with open_working_copy(target, credentials) as copy:
        commit = copy.fetch()
        for _ in range(target.max_revert_commits + 1000):  # bounded: a long-lived branch
            if str(commit.id) == planned_tip or not commit.parents:
                return None
            if marker in commit.message:
                return str(commit.id)
            commit = commit.parents[0]
    return None


async def recover_push(services: Services, run: RunRecord) -> str:
    """Whether the run's revert reached the remote, from its journal and, when its process
    died during the push, from the remote branch itself; journalled, said in one sentence."""
    journal = run.journal
    state = journal.get("code_push")
    if state is None:
        return "the code half had not started: nothing was pushed"
    if state == PUSH_REFUSED:
        return "the push had been refused: nothing was pushed"
    if state == PUSH_DONE:
        return f"the revert had been pushed ({str(journal.get('code_new_tip'))[:7]})"
    environment = services.environment(run.environment)
    target = git_target(environment)
    found = await asyncio.to_thread(
        _run_commit_on_branch,
        target,
        credentials_from_environment(target),
        run.id,
        str(journal.get("code_tip")),
    )
    if found is None:
        await services.store.record(run.id, Step.PUSH.value, code_push=PUSH_REFUSED)
        return f"the push had not landed: {target.branch} has no commit of this run"
    await services.store.record(run.id, Step.PUSH.value, code_push=PUSH_DONE, code_new_tip=found)
    return f"the revert had been pushed: {found[:7]} on {target.branch} names this run"


def code_plan_of(run: RunRecord, environment: Environment) -> CodeRollbackPlan | None:
    """The approved code plan as the run recorded it."""
    code = run.plan.get("code")
    if not isinstance(code, dict):
        return None
    return CodeRollbackPlan(environment, CodePlan.from_summary(code), run.requested_at)


async def resume_code(services: Services, run: RunRecord, *, listener: Listener) -> RollbackResult:
    """Resume of an interrupted code run: the approved plan again (a push that landed is
    found, not made twice; a branch moved since is refused), then the version wait, health."""
    plan = code_plan_of(run, services.environment(run.environment))
    if plan is None:
        raise RollbackError(f"Run {run.id} recorded no code plan.")
    if not await services.store.transition(
        run.id, to=RunStatus.APPROVED, expect=(RunStatus.INTERRUPTED,)
    ):
        raise RollbackError(f"Run {run.id} changed meanwhile; nothing was done.")
    return await execute_code(
        services,
        plan,
        run_id=run.id,
        requested_by=run.requested_by,
        listener=listener,
        expect=(RunStatus.APPROVED,),
    )
