"""Code rollback on pygit2 (issue 9): plan the revert commits, push them, know what runs.

The bot keeps its own bare clone of each environment's remote (`GitTarget.workdir`) and
works in it one operation at a time (a file lock, so replicas take turns). Everything
blocking runs in a worker thread; credentials come from the process environment
(`credentials_from_environment`) and never appear in messages, logs or summaries.

    credentials = credentials_from_environment(environment.git)
    plan = await plan_code_rollback(environment.git, credentials, commit, http=session)
    ...                                   # show plan, store plan.summary(), approve
    result = await execute_code_rollback(
        environment.git, credentials, plan, run_id=run.id, requester=user
    )
    if environment.git.version_url and environment.git.version_wait_seconds:
        await wait_for_version(environment.git, session, result.new_tip, None, on_progress)

Every failure is a `services.errors.GitError` (InvalidCommit, UnknownCommit, NotOnBranch,
NothingToRevert, BranchMoved, RevertConflict, GitRemoteError, GitAuthFailed,
DeployedCommitUnknown, VersionNotReported, which is also a DeadlineExceeded);
`credentials_from_environment` raises `ConfigError` when a named variable is not set.
"""

from services.git.credentials import GitCredentials, credentials_from_environment
from services.git.deployed import (
    ProgressCallback,
    VersionProgress,
    deployed_commit,
    deployed_commit_reader,
    reported_version,
    same_commit,
    wait_for_version,
)
from services.git.execute import CodeResult, execute_code_rollback
from services.git.plan import (
    CodePlan,
    CommitInfo,
    plan_code_rollback,
    revert_message,
    run_marker,
)
from services.git.remote_url import display_url, scrub, url_problems
from services.git.target import describe_target

__all__ = [
    "CodePlan",
    "CodeResult",
    "CommitInfo",
    "GitCredentials",
    "ProgressCallback",
    "VersionProgress",
    "credentials_from_environment",
    "deployed_commit",
    "deployed_commit_reader",
    "describe_target",
    "display_url",
    "execute_code_rollback",
    "plan_code_rollback",
    "reported_version",
    "revert_message",
    "run_marker",
    "same_commit",
    "scrub",
    "url_problems",
    "wait_for_version",
]
