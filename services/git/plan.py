"""The code rollback's plan: which commits to revert, the messages to push, and the result
simulated in memory (tree and conflicts) before anyone approves it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pygit2

from services import names
from services.environments import DeployedSource, GitTarget
from services.errors import NothingToRevert, NotOnBranch
from services.git.credentials import GitCredentials
from services.git.deployed import find_deployed, reported_version
from services.git.working_copy import WorkingCopy, open_working_copy

MAX_REQUESTER_CHARS = 200
# How far down the first parents an error message looks to say why a commit is refused.
FIRST_PARENT_SEARCH = 10_000


@dataclass(frozen=True)
class CommitInfo:
    """One commit of someone else's (texts as written: escape them where shown)."""

    sha: str
    author_name: str
    author_email: str
    subject: str
    authored_at: datetime  # UTC
    parents: tuple[str, ...]

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1

    @classmethod
    def of(cls, commit: pygit2.Commit) -> CommitInfo:
        message = commit.raw_message.decode("utf-8", "replace")
        return cls(
            sha=str(commit.id),
            author_name=commit.author.raw_name.decode("utf-8", "replace"),
            author_email=commit.author.raw_email.decode("utf-8", "replace"),
            subject=message.strip().split("\n", 1)[0].strip(),
            authored_at=datetime.fromtimestamp(commit.author.time, UTC),
            parents=tuple(str(p) for p in commit.parent_ids),
        )

    def summary(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            **data,
            "short_sha": self.short_sha,
            "authored_at": self.authored_at.isoformat(),
            "parents": list(self.parents),
        }

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> CommitInfo:
        given = {f.name: data[f.name] for f in fields(cls)}
        given["authored_at"] = datetime.fromisoformat(data["authored_at"])
        return cls(**{**given, "parents": tuple(data["parents"])})


def revert_body(commit: CommitInfo) -> str:
    """The revert commit's message before the run's line, as `git revert` writes it."""
    reverts = f"This reverts commit {commit.sha}"
    if commit.is_merge:  # reverted against its first parent (mainline 1)
        reverts += f", reversing\nchanges made to {commit.parents[0]}"
    return f'Revert "{commit.subject}"\n\n{reverts}.\n'


def run_marker(run_id: str) -> str:
    """The part of a revert message that names the run (recovery looks for it)."""
    return f"rollback-bot run {names.visible(run_id)}, requested by"


def revert_message(body: str, run_id: str, requester: str) -> str:
    """`body` with the line naming the run and who asked for it."""
    who = names.visible(requester)[:MAX_REQUESTER_CHARS]
    return f"{body}\nRolled back by {run_marker(run_id)} {who}.\n"


@dataclass(frozen=True)
class CodePlan:
    """What a code rollback will push, built on one branch tip; read-only until executed.

    `reverts` are reverted in order (newest first), each against its first parent when it
    is a merge. `target` is the commit whose tree the branch returns to: the commit named,
    or the deployed commit's first parent. `pending` are the commits after the deployed one
    (deployed by tag or endpoint) that stay, and deploy with the revert.
    """

    remote: str  # display URL, no credentials
    branch: str
    tip: str  # the branch tip the plan was built on (full sha)
    target: str
    requested: str | None  # the commit the user named (validated), None: the deployed one
    deployed: str | None  # the deployed commit, when the plan reverts it
    reverts: tuple[CommitInfo, ...]
    messages: tuple[str, ...]  # one per revert, before the run's line (see revert_message)
    pending: tuple[CommitInfo, ...] = ()
    conflicts: tuple[str, ...] = ()  # files whose revert conflicts; then nothing is pushed
    conflict_commit: str | None = None  # the commit whose revert conflicts
    result_tree: str | None = None  # the tree after every revert (None on a conflict)
    tree_matches_target: bool = False

    @property
    def short_tip(self) -> str:
        return self.tip[:7]

    @property
    def short_target(self) -> str:
        return self.target[:7]

    @property
    def fingerprint(self) -> str:
        """Stable over what an approval covers: remote, branch, tip, commits and result."""
        material = [
            self.remote,
            self.branch,
            self.tip,
            self.target,
            [c.sha for c in self.reverts],
            self.result_tree,
            list(self.conflicts),
        ]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()

    def revert_messages(self, run_id: str, requester: str) -> tuple[str, ...]:
        """The full messages of the commits `execute_code_rollback` makes for this run."""
        return tuple(revert_message(body, run_id, requester) for body in self.messages)

    def summary(self) -> dict[str, Any]:
        """Plain data for the run store (no credentials); `from_summary` reads it back."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _COMMIT_LISTS:
            data[name] = [c.summary() for c in data[name]]
        for name in _TEXT_LISTS:
            data[name] = list(data[name])
        return {**data, "fingerprint": self.fingerprint}

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> CodePlan:
        given = {f.name: data[f.name] for f in fields(cls)}
        for name in _COMMIT_LISTS:
            given[name] = tuple(CommitInfo.from_summary(c) for c in given[name])
        for name in _TEXT_LISTS:
            given[name] = tuple(given[name])
        return cls(**given)


_COMMIT_LISTS = ("reverts", "pending")
_TEXT_LISTS = ("messages", "conflicts")


def revert_onto(
    repository: pygit2.Repository, ours: pygit2.Tree, commit: pygit2.Commit
) -> tuple[pygit2.Tree | None, tuple[str, ...]]:
    """`ours` with `commit` reverted (against its first parent): the tree, or the conflicts."""
    index = repository.merge_trees(commit.tree, ours, commit.parents[0].tree)
    if index.conflicts is not None:
        files = {entry.path for sides in index.conflicts for entry in sides if entry is not None}
        return None, tuple(sorted(files))
    return repository[index.write_tree(repository)].peel(pygit2.Tree), ()


def _first_parent_chain(
    tip: pygit2.Commit, stop: pygit2.Commit, limit: int
) -> list[pygit2.Commit] | None:
    """tip, its first parent, … down to (without) `stop`; None if not met within `limit`."""
    chain: list[pygit2.Commit] = []
    current = tip
    while current.id != stop.id:
        if len(chain) == limit or not current.parents:
            return None
        chain.append(current)
        current = current.parents[0]
    return chain


def _deployed_change(
    copy: WorkingCopy, tip: pygit2.Commit, reported: str | None
) -> tuple[pygit2.Commit, list[pygit2.Commit]]:
    """The deployed commit, and the commits after it on the branch (they stay)."""
    repository, branch = copy.repository, copy.target.branch
    deployed = find_deployed(copy, tip, reported)
    short = str(deployed.id)[:7]
    if not deployed.parents:
        raise NothingToRevert(branch, short, "the deployed commit is the first one")
    if deployed.id != tip.id and not repository.descendant_of(tip.id, deployed.id):
        raise NotOnBranch(short, branch, "the deployed commit is not in the branch's history")
    walker = repository.walk(tip.id)
    walker.hide(deployed.id)
    limit = copy.target.max_revert_commits
    return deployed, [c for _, c in zip(range(limit), walker, strict=False)]


def _commits_after(
    copy: WorkingCopy, tip: pygit2.Commit, goal: pygit2.Commit
) -> list[pygit2.Commit]:
    """The branch's own commits after `goal`, newest first: reverting them gives its tree."""
    repository, branch = copy.repository, copy.target.branch
    limit = copy.target.max_revert_commits
    short = str(goal.id)[:7]
    if goal.id == tip.id:
        raise NothingToRevert(branch, short, f"{branch} is at {short} already")
    if not repository.descendant_of(tip.id, goal.id):
        raise NotOnBranch(short, branch, f"it is not in the history of {branch}")
    chain = _first_parent_chain(tip, goal, limit)
    if chain is not None:
        return chain
    if _first_parent_chain(tip, goal, FIRST_PARENT_SEARCH) is not None:
        raise NotOnBranch(
            short, branch, f"it is more than {limit} commits behind the tip (max_revert_commits)"
        )
    raise NotOnBranch(
        short,
        branch,
        f"it came in through a merge; name the merge commit on {branch} or a commit made on it",
    )


def _simulate(
    repository: pygit2.Repository, tip: pygit2.Commit, reverts: list[pygit2.Commit]
) -> tuple[pygit2.Tree | None, tuple[str, ...], str | None]:
    """The tree after every revert, or the first conflict: (None, files, its commit)."""
    ours = tip.tree
    for commit in reverts:
        tree, conflicts = revert_onto(repository, ours, commit)
        if tree is None:
            return None, conflicts, str(commit.id)
        ours = tree
    return ours, (), None


def _plan(copy: WorkingCopy, requested: str | None, reported: str | None) -> CodePlan:
    tip = copy.fetch()
    deployed: pygit2.Commit | None = None
    pending: list[pygit2.Commit] = []
    if requested is None:
        deployed, pending = _deployed_change(copy, tip, reported)
        reverts, goal = [deployed], deployed.parents[0]
    else:
        goal = copy.resolve(requested)
        reverts = _commits_after(copy, tip, goal)
    tree, conflicts, conflict_commit = _simulate(copy.repository, tip, reverts)
    infos = tuple(CommitInfo.of(c) for c in reverts)
    return CodePlan(
        remote=copy.remote_display,
        branch=copy.target.branch,
        tip=str(tip.id),
        target=str(goal.id),
        requested=requested,
        deployed=str(deployed.id) if deployed is not None else None,
        reverts=infos,
        messages=tuple(revert_body(c) for c in infos),
        pending=tuple(CommitInfo.of(c) for c in pending),
        conflicts=conflicts,
        conflict_commit=conflict_commit,
        result_tree=str(tree.id) if tree is not None else None,
        tree_matches_target=tree is not None and tree.id == goal.tree.id,
    )


async def plan_code_rollback(
    target: GitTarget,
    credentials: GitCredentials,
    commit: str | None = None,
    *,
    http: aiohttp.ClientSession | None = None,
) -> CodePlan:
    """Fetch, then plan: with `commit`, revert every commit after it on the branch (first
    parents, newest first) so the tree equals its tree; without, revert the deployed commit.

    `commit` is user input (checked here). `http` is needed when the deployed commit comes
    from the version endpoint and no commit is named."""
    requested = names.check_commitish(commit) if commit is not None else None
    reported = None
    if requested is None and target.deployed is DeployedSource.ENDPOINT:
        if http is None:
            raise TypeError("plan_code_rollback needs `http` to ask the version endpoint")
        reported = await reported_version(target, http)

    def work() -> CodePlan:
        with open_working_copy(target, credentials) as copy:
            return _plan(copy, requested, reported)

    return await asyncio.to_thread(work)
