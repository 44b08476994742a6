"""Executing a code plan: the revert commits made in the bot's clone, then one fast-forward
push, only if the branch is still where the plan was built."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

import pygit2

from services.environments import GitTarget
from services.errors import BranchMoved, GitError, RevertConflict
from services.git.credentials import GitCredentials
from services.git.plan import CodePlan, revert_onto
from services.git.remote_url import display_url
from services.git.working_copy import WorkingCopy, open_working_copy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeResult:
    remote: str  # display URL
    branch: str
    previous_tip: str
    new_tip: str
    pushed: tuple[str, ...]  # the revert commits, in the order made (the last is new_tip)
    already_pushed: bool = False  # an earlier attempt of the same run had pushed them

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "pushed": list(self.pushed)}


def _pushed_before(
    repository: pygit2.Repository, tip: pygit2.Commit, plan: CodePlan, messages: tuple[str, ...]
) -> tuple[str, ...] | None:
    """This run's reverts, when they are exactly what sits on `plan.tip` (a retried push)."""
    found: list[str] = []
    current = tip
    for message in reversed(messages):
        if current.message != message or len(current.parents) != 1:
            return None
        found.append(str(current.id))
        current = current.parents[0]
    return tuple(reversed(found)) if str(current.id) == plan.tip else None


def _execute(copy: WorkingCopy, plan: CodePlan, messages: tuple[str, ...]) -> CodeResult:
    repository, target = copy.repository, copy.target
    tip = copy.fetch()
    if str(tip.id) != plan.tip:
        earlier = _pushed_before(repository, tip, plan, messages)
        if earlier is None:
            raise BranchMoved(plan.branch, plan.tip, str(tip.id))
        log.info("run's reverts are on %s already: %s", plan.branch, str(tip.id)[:7])
        return CodeResult(plan.remote, plan.branch, plan.tip, str(tip.id), earlier, True)
    bot = pygit2.Signature(target.committer_name, target.committer_email)
    head = tip
    made: list[str] = []
    for info, message in zip(plan.reverts, messages, strict=True):
        commit = repository[info.sha].peel(pygit2.Commit)
        tree, conflicts = revert_onto(repository, head.tree, commit)
        if tree is None:
            raise RevertConflict(info.sha, info.subject, conflicts)
        oid = repository.create_commit(None, bot, bot, message, tree.id, [head.id])
        head = repository[oid].peel(pygit2.Commit)
        made.append(str(oid))
    if plan.result_tree is not None and str(head.tree.id) != plan.result_tree:
        raise GitError(  # the same tip and commits give the same tree: a bug if not
            f"The reverts give tree {str(head.tree.id)[:7]}, not the planned "
            f"{plan.result_tree[:7]}: nothing was pushed."
        )
    copy.push(head.id, tip.id)
    return CodeResult(plan.remote, plan.branch, plan.tip, str(head.id), tuple(made))


async def execute_code_rollback(
    target: GitTarget,
    credentials: GitCredentials,
    plan: CodePlan,
    *,
    run_id: str,
    requester: str,
) -> CodeResult:
    """Fetch; refuse a moved branch (`BranchMoved`) or a conflict (`RevertConflict`) with
    nothing pushed; else make the plan's revert commits (committer: the bot; messages name
    the run and the requester) and push them, fast-forward only. Run twice for the same run,
    it finds its own push and returns it (`already_pushed`)."""
    if (plan.remote, plan.branch) != (display_url(target.url), target.branch):
        raise GitError(
            f"The plan is for {plan.branch} of {plan.remote}; the environment's code is now "
            f"{target.branch} of {display_url(target.url)}: make the plan again."
        )
    if plan.conflicts and plan.conflict_commit:
        subject = next((c.subject for c in plan.reverts if c.sha == plan.conflict_commit), "")
        raise RevertConflict(plan.conflict_commit, subject, plan.conflicts)
    messages = plan.revert_messages(run_id, requester)

    def work() -> CodeResult:
        with open_working_copy(target, credentials) as copy:
            return _execute(copy, plan, messages)

    return await asyncio.to_thread(work)
