"""One error tree for the services: each error carries structured fields and a readable str."""

from __future__ import annotations


class RollbackError(Exception):
    """Base of every error a service raises on purpose; its str is shown to users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(RollbackError):
    """The environments file or a setting is wrong; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class UnknownEnvironment(RollbackError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        choices = ", ".join(known) if known else "none configured"
        super().__init__(f"Unknown environment '{name}'. Known environments: {choices}.")


class BackupError(RollbackError):
    """A backup cannot be used: outside the folder, missing, or not a pg_dump archive."""


class NoBackups(BackupError):
    """No backup to take by default; `skipped`: backups there that are never the default."""

    def __init__(self, environment: str, folder: str, *, skipped: int = 0) -> None:
        self.environment = environment
        self.skipped = skipped
        message = f"No backups (*.dump) for '{environment}' in {folder}."
        if skipped:
            message = (
                f"No backup a person or a deployment took for '{environment}' in {folder}: "
                f"{skipped} other(s) (the bot's own dumps, symlinks, future-dated or "
                "unusable names) are never taken by default; name one to use it."
            )
        super().__init__(message)


class ProvenanceError(RollbackError):
    """A backup's provenance sidecar could not be written (the dump itself may be fine)."""


class ContainerError(RollbackError):
    """The Docker engine failed or the environment's containers cannot be handled."""


class EngineUnavailable(ContainerError):
    def __init__(self, detail: str, *, engine: str = "The Docker engine", hint: str = "") -> None:
        self.detail = detail
        super().__init__(f"{engine} does not answer: {detail}" + (f" ({hint})" if hint else ""))


class EndpointUnavailable(EngineUnavailable):
    """A configured docker_endpoint does not answer: only its environments are affected."""

    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        tls = any(word in detail for word in ("SSL", "TLS", "certificate"))
        super().__init__(
            detail,
            engine=f"Docker endpoint {endpoint}",
            hint="TLS refused: check docker_tls_ca, docker_tls_cert and docker_tls_key"
            if tls
            else "",
        )


class NoContainers(ContainerError):
    def __init__(self, what: str) -> None:
        self.what = what  # the environment's workload_description
        super().__init__(f"No containers found for {what}.")


class DatabaseError(RollbackError):
    """The environment's database failed; `detail` carries PostgreSQL's own text."""

    # Shown in Slack and the terminal: PostgreSQL's headline, never pages of its output.
    DETAIL_LIMIT = 500

    def __init__(self, message: str, detail: str = "") -> None:
        if len(detail) > self.DETAIL_LIMIT:
            detail = detail[: self.DETAIL_LIMIT - 1] + "…"
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)


class RestoreFailed(DatabaseError):
    """pg_restore/psql failed; `may_have_committed` is False when PostgreSQL rolled it back."""

    def __init__(self, message: str, detail: str, *, may_have_committed: bool) -> None:
        self.may_have_committed = may_have_committed
        super().__init__(message, detail)


class PreparationFailed(RollbackError):
    """The swap's staging restore failed before anything was stopped; the run ends there."""


class RunOwned(RollbackError):
    """Another live bot process owns the run (it is executing or recovering it)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"Run {run_id} is being handled by another bot process.")


class DeadlineExceeded(RollbackError):
    """A call to a dependency (Docker, PostgreSQL, a pg tool, a health endpoint, Slack) did
    not finish within its configured timeout; it was abandoned (a process is killed)."""

    def __init__(self, what: str, seconds: float, hint: str = "") -> None:
        self.what = what
        self.seconds = seconds
        super().__init__(f"Timed out after {seconds:g} s: {what}" + (f" ({hint})" if hint else ""))


class ToolsIncompatible(RollbackError):
    """No installed PostgreSQL client tools can work with this server and this dump."""


class RunConflict(RollbackError):
    """Another rollback of this environment is active."""

    def __init__(self, environment: str, run_id: str, requested_by: str) -> None:
        self.environment = environment
        self.run_id = run_id
        self.requested_by = requested_by
        super().__init__(
            f"A rollback of '{environment}' is already in progress "
            f"(run {run_id}, requested by {requested_by})."
        )


class RunNotFound(RollbackError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"No rollback run {run_id}.")


class GitError(RollbackError):
    """The code rollback failed (repository, revert or push); nothing in it names a secret."""


class UnknownCommit(GitError):
    """A commit (sha prefix, tag or branch name) not found in the fetched history."""

    def __init__(self, commit: str, remote: str, reason: str = "") -> None:
        self.commit = commit  # validated by names.check_commitish: safe to show
        self.remote = remote  # display URL, no credentials
        self.reason = reason
        super().__init__(
            f"No commit or tag '{commit}' in {remote}" + (f": {reason}." if reason else ".")
        )


class NotOnBranch(GitError):
    """The commit is not one the branch can be brought back to by revert commits."""

    def __init__(self, commit: str, branch: str, reason: str) -> None:
        self.commit = commit  # short sha
        self.branch = branch
        self.reason = reason
        super().__init__(f"Commit {commit} cannot be rolled back to on {branch}: {reason}.")


class NothingToRevert(GitError):
    def __init__(self, branch: str, commit: str, reason: str) -> None:
        self.branch = branch
        self.commit = commit  # short sha
        super().__init__(f"Nothing to revert on {branch}: {reason}.")


class BranchMoved(GitError):
    """The branch tip is not the one the plan was built on: the plan must be made again."""

    def __init__(self, branch: str, planned_tip: str, current_tip: str | None) -> None:
        self.branch = branch
        self.planned_tip = planned_tip
        self.current_tip = current_tip  # None: the branch is gone from the remote
        now = f"now {current_tip[:7]}" if current_tip else "it is gone from the remote"
        super().__init__(
            f"Branch {branch} moved since the plan was made (planned on {planned_tip[:7]}, "
            f"{now}): nothing was pushed. Make the plan again."
        )


class RevertConflict(GitError):
    """Reverting a commit conflicts with what came after it; nothing was pushed."""

    def __init__(self, commit: str, subject: str, files: tuple[str, ...]) -> None:
        self.commit = commit  # full sha of the commit whose revert conflicts
        self.subject = subject
        self.files = files
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        super().__init__(
            f'Reverting {commit[:7]} ("{subject}") conflicts with later changes in '
            f"{shown}: nothing was pushed."
        )


class GitRemoteError(GitError):
    """Fetching from or pushing to the remote failed; `detail` is libgit2's text, scrubbed."""

    DETAIL_LIMIT = 300

    def __init__(self, operation: str, remote: str, detail: str) -> None:
        if len(detail) > self.DETAIL_LIMIT:
            detail = detail[: self.DETAIL_LIMIT - 1] + "…"
        self.operation = operation  # fetch, push
        self.remote = remote  # display URL, no credentials
        self.detail = detail
        super().__init__(f"Could not {operation} {remote}: {detail}")


class GitAuthFailed(GitRemoteError):
    """The remote asked for credentials and refused the configured ones (or none are)."""


class DeployedCommitUnknown(GitError):
    """The configured source (tags, version endpoint) cannot tell the deployed commit."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source  # e.g. "tags deploy/production/*", "version endpoint <url>"
        self.reason = reason
        super().__init__(f"The deployed commit is not known from the {source}: {reason}.")


class PermissionDenied(RollbackError):
    """The person may not do this (request, approve, reject, cancel) under the policy."""

    def __init__(
        self, user: str, action: str, reason: str, *, allowed: tuple[str, ...] = ()
    ) -> None:
        self.user = user
        self.action = action
        self.reason = reason
        self.allowed = allowed  # user IDs (U…) and user group IDs (S…) who may
        super().__init__(f"You may not {action}: {reason}.")


class NotPosted(RollbackError):
    """The run's message could not be posted where it was asked for; the run was cancelled."""

    def __init__(
        self, run_id: str, environment: str, channel: str, reason: str, *, bot: str = ""
    ) -> None:
        self.bot = bot  # the bot's own user ID, to name whom to invite
        self.run_id = run_id
        self.environment = environment
        self.channel = channel
        self.reason = reason  # the chat service's error code, e.g. not_in_channel
        super().__init__(
            f"The rollback plan of {environment} could not be posted in {channel} ({reason}); "
            f"run {run_id} was cancelled so {environment} is not left locked."
        )


class ApprovalError(RollbackError):
    """A click that cannot change the run: decided, expired, finished or repeated."""

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(message)


class NotificationError(RollbackError):
    """A contact could not be told (the chat service refused or did not answer)."""


class InvalidName(RollbackError):
    """A user-given name or command text refused before it touches anything (issue 8).

    `what` says which input ("backup name", "environment name", "command"), `problem` is a
    `services.names.NameProblem` value; the message never repeats the input itself.
    """

    def __init__(self, what: str, problem: str, message: str, *, position: int | None = None):
        self.what = what
        self.problem = problem
        self.position = position  # 1-based character position of the offending character
        super().__init__(message)


class InvalidBackupName(InvalidName, BackupError):
    """A backup name refused for its form (also a `BackupError`: the backup cannot be used)."""


class InvalidCommit(InvalidName, GitError):
    """A commit a user named, refused for its form before it reaches the repository."""


class VersionNotReported(DeadlineExceeded, GitError):
    """The version endpoint did not report the pushed commit before the deadline."""

    def __init__(self, url: str, sha: str, seconds: float, last: str) -> None:
        self.url = url
        self.sha = sha
        self.last = last  # what the endpoint last said (a version, or why it failed)
        super().__init__(f"{url} reporting {sha[:7]}", seconds, f"last: {last}")


class CodeNotConfigured(ConfigError, GitError):
    """A code or full rollback of an environment without a `git` section."""

    def __init__(self, environment: str) -> None:
        self.environment = environment
        super().__init__(
            [
                f"{environment} has no code rollback: its entry in the environments file has "
                f"no [environments.{environment}.git] section (the remote and branch whose "
                "push deploys it). A database rollback needs none."
            ]
        )


class CodeWouldConflict(GitError):
    """The plan's reverts conflict: the request is refused before anything is recorded."""

    def __init__(
        self, environment: str, commit: str, subject: str, files: tuple[str, ...], database: str
    ) -> None:
        self.environment = environment
        self.commit = commit  # short sha
        self.subject = subject
        self.files = files
        self.database = database  # the database-only request to offer, e.g. "production x.dump"
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        super().__init__(
            f'Reverting {commit} ("{subject}") conflicts with later changes in {shown}: the '
            f"code of {environment} cannot be rolled back by revert commits, so nothing was "
            f"started. Revert it by hand, or roll back the database only: "
            f"/rollback {database}"
        )
